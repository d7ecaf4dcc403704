"""The streaming partition under a real 2-process gloo group.

The test runs this file as its own worker under torch.distributed.run
(``python test_reweighting_ddp.py OUT_DIR``): each rank trains a tiny
HardMiningBrain with ``partition: ema`` on batches that differ by rank,
including batches that only one rank must skip, and saves its ``log Z``.
Both ranks must end with the same ``Z``, the one a single process computes
from every rank's kept entries of the used batches.
"""

import math
import sys
import types

import pytest
import torch

NAN = float("nan")
TEMPERATURE = 2.0
MOMENTUM = 0.5
# Per rank, one epoch of batches of (mixtures x 2 sources) losses. Batch 2 is
# all easy on rank 0 and batch 3 non-finite on rank 1: both ranks skip both.
VALUES = {
    0: [[[1.0, 3.0]], [[2.0, -1.0], [0.0, 0.5]], [[-40.0, -45.0]], [[3.0, 1.0]], [[0.5, 4.0]]],
    1: [[[0.0, 5.0], [1.0, 1.0]], [[1.5, -2.0]], [[2.0, 2.0]], [[NAN, 1.0]], [[-2.0, 6.0]]],
}  # fmt: skip
USED = (0, 1, 4)


def expected_log_z():
    log_z = None
    for b in USED:
        entries = torch.tensor(VALUES[0][b] + VALUES[1][b], dtype=torch.float64)
        log_s = float(
            torch.logsumexp(entries.flatten() / TEMPERATURE, 0)
            - math.log(entries.numel())
        )
        if log_z is None:
            log_z = log_s
        else:
            log_z = float(
                torch.logaddexp(
                    torch.tensor(math.log(MOMENTUM) + log_z, dtype=torch.float64),
                    torch.tensor(math.log1p(-MOMENTUM) + log_s, dtype=torch.float64),
                )
            )
    return log_z


@pytest.mark.slow
def test_ranks_share_one_z_equal_to_one_process_on_all_entries(tmp_path):
    from conftest import torchrun

    torchrun(__file__, tmp_path)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    assert ranks[0]["log_z"] == ranks[1]["log_z"]  # bit for bit
    assert ranks[0]["log_z"] == pytest.approx(expected_log_z(), abs=1e-12)
    assert ranks[0]["batches"] == ranks[1]["batches"] == len(USED)
    stats = ranks[0]["stats"]
    assert stats["skipped_all_easy"] == 1 and stats["skipped_nonfinite"] == 1
    assert stats["skipped_other_rank"] == 2
    assert stats["weights_ranks_agree"] == 1
    assert stats["log_partition"] == ranks[0]["log_z"]


# ------------------------------------------------------------------ worker
def worker(out_dir):
    import speechbrain as sb
    import torch.distributed as dist

    from hardmine.brain import HardMiningBrain
    from hardmine.reweighting import SoftmaxReweighting
    from hardmine.threshold import ThresholdFilter

    class FixedLosses(HardMiningBrain):
        def compute_forward(self, batch, stage):
            w = self.modules.model(torch.ones(1, 4)).sum()  # through DDP
            return 1.0 + w - w.detach()

        def compute_objectives(self, predictions, batch, stage):
            return batch.y * predictions

    sb.utils.distributed.ddp_init_group({"distributed_backend": "gloo"})
    rank = dist.get_rank()
    rw = SoftmaxReweighting(
        "robust",
        temperature=TEMPERATURE,
        over="sources",
        partition="ema",
        partition_momentum=MOMENTUM,
    )
    torch.manual_seed(0)
    brain = FixedLosses(
        modules={"model": torch.nn.Linear(4, 1)},
        opt_class=lambda p: torch.optim.SGD(p, lr=0.1),
        hparams={"reweighting": rw, "threshold_filter": ThresholdFilter(-30.0)},
        run_opts={"device": "cpu", "distributed_backend": "gloo"},
    )
    batches = []
    for b, values in enumerate(VALUES[rank]):
        y = torch.tensor(values)
        ids = [f"r{rank}b{b}e{i}" for i in range(len(values))]
        batches.append(
            types.SimpleNamespace(x=torch.zeros(len(values), 4), y=y, id=ids)
        )
    loader = torch.utils.data.DataLoader(batches, batch_size=None, collate_fn=None)
    brain.fit(range(1, 2), loader)
    result = {
        "log_z": float(rw.partition_state.log_z),
        "batches": int(rw.partition_state.batches),
        "stats": dict(brain.mining_stats),
    }
    torch.save(result, f"{out_dir}/rank{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    worker(sys.argv[1])
