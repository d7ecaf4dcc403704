"""A crash while saving a checkpoint leaves the previous one usable."""

import pytest
import torch
from speechbrain.utils.checkpoints import (
    mark_as_loader,
    mark_as_saver,
    register_checkpoint_hooks,
)

from hardmine.checkpoint import AtomicCheckpointer


@register_checkpoint_hooks
class Counter:
    """A recoverable whose save can be made to crash half-way."""

    def __init__(self):
        self.value = 0
        self.crash = False

    @mark_as_saver
    def _save(self, path):
        with open(path, "w") as f:
            f.write("partial")
            if self.crash:
                raise KeyboardInterrupt("killed while saving")
            f.write(f"\n{self.value}")

    @mark_as_loader
    def _load(self, path, end_of_epoch):
        self.value = int(open(path).read().split("\n")[1])


def test_crash_while_saving_keeps_previous_checkpoint(tmp_path):
    layer = torch.nn.Linear(3, 3)
    counter = Counter()
    ckpt = AtomicCheckpointer(tmp_path, {"layer": layer, "counter": counter})
    counter.value = 7
    ckpt.save_and_keep_only()
    good_weight = layer.weight.detach().clone()

    with torch.no_grad():
        layer.weight.add_(1.0)
    counter.value = 8
    counter.crash = True
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_and_keep_only()
    assert len(list(tmp_path.glob("CKPT*"))) == 2  # the broken one is on disk

    fresh_layer, fresh_counter = torch.nn.Linear(3, 3), Counter()
    fresh = AtomicCheckpointer(
        tmp_path, {"layer": fresh_layer, "counter": fresh_counter}
    )
    fresh.recover_if_possible()
    assert fresh_counter.value == 7
    assert torch.equal(fresh_layer.weight, good_weight)
