"""Worker for tests/test_brain_ddp.py, run under torch.distributed.run (gloo).

``python -m torch.distributed.run --nproc_per_node 2 brain_ddp_worker.py
SCENARIO OUT_DIR`` trains a tiny HardMiningBrain whose batches differ by rank
and writes ``OUT_DIR/rank<r>.pt`` with the final weights, the mining
statistics and whatever the scenario checks. Scenarios:

- ``accum``: gradient accumulation 2, the last micro-batch of a window
  skipped on one rank only (a NaN target), an epoch ending inside a window;
- ``capacity``: robust reweighting with a capacity controller and a
  threshold filter that leaves one rank's batch all easy;
- ``too_many``: one rank skips every batch until ``max_consecutive_skips``
  is exceeded, the other trains normally: both must raise;
- ``disagree``: the per-epoch agreement checks see a loss table and a weight
  that differ on one rank.
"""

import sys
import types

import speechbrain as sb
import torch
import torch.distributed as dist
from speechbrain.dataio.dataset import DynamicItemDataset

from hardmine.brain import HardMiningBrain
from hardmine.distributed import shutdown
from hardmine.isbl import ISBLSampler
from hardmine.loss_limit import LossLimit, TooManySkipsError
from hardmine.reweighting import SoftmaxReweighting
from hardmine.threshold import ThresholdFilter

NAN = float("nan")


class Regressor(HardMiningBrain):
    """One squared error per example."""

    def compute_forward(self, batch, stage):
        return self.modules.model(batch.x)

    def compute_objectives(self, predictions, batch, stage):
        return ((predictions - batch.y) ** 2).mean(dim=1)


class FixedLosses(HardMiningBrain):
    """The batch's ``y`` as losses, with a gradient of ``y`` on the weights."""

    def compute_forward(self, batch, stage):
        w = self.modules.model(torch.ones(1, 4)).sum()  # through DDP's forward
        return 1.0 + w - w.detach()

    def compute_objectives(self, predictions, batch, stage):
        return batch.y * predictions


def batch(x, y, tag):
    ids = [f"{tag}e{i}" for i in range(len(y))]
    return types.SimpleNamespace(x=x, y=y, id=ids)


def accum_batches(rank):
    """Five regression micro-batches of 3 examples; reproducible per rank."""
    g = torch.Generator().manual_seed(100 + rank)
    w = torch.tensor([[1.0], [-2.0], [0.5], [3.0]])
    out = []
    for b in range(5):
        x = torch.randn(3, 4, generator=g)
        y = x @ w + 0.1 * torch.randn(3, 1, generator=g)
        if (rank, b) in ((1, 1), (0, 3)):
            y[0, 0] = NAN  # the last micro-batch of windows 1 and 2
        out.append(batch(x, y, f"r{rank}b{b}"))
    return out


def loader(batches):
    return torch.utils.data.DataLoader(batches, batch_size=None, collate_fn=None)


def build(cls, hparams, **run_opts):
    torch.manual_seed(0)
    return cls(
        modules={"model": torch.nn.Linear(4, 1)},
        opt_class=lambda p: torch.optim.SGD(p, lr=0.1),
        hparams=hparams,
        run_opts={"device": "cpu", "distributed_backend": "gloo", **run_opts},
    )


def fixed(values, tag):
    y = torch.tensor(values)
    return batch(torch.zeros(len(values), 4), y, tag)


def run(scenario, rank):
    result = {}
    if scenario == "accum":
        brain = build(Regressor, {}, grad_accumulation_factor=2)
        brain.fit(range(1, 3), loader(accum_batches(rank)))
    elif scenario == "capacity":
        rw = SoftmaxReweighting("robust", capacity=0.5)
        brain = build(
            FixedLosses, {"reweighting": rw, "threshold_filter": ThresholdFilter(-30)}
        )
        if rank == 0:
            values = [[-50.0, -40.0], [1.0, 4.0, 2.0], [2.0, 3.0, 9.0], [-31.0, -35.0]]
        else:
            values = [[1.0, 5.0, 2.0], [3.0, 1.0, 7.0], [-45.0, -60.0], [4.0, 2.0, 1.0]]
        brain.fit(
            range(1, 3), loader([fixed(v, f"b{i}") for i, v in enumerate(values)])
        )
        result["beta"] = rw.controller.beta
        result["last_kl"] = rw.controller.last_kl
    elif scenario == "too_many":
        limit = LossLimit(max_consecutive_skips=2)
        brain = build(
            FixedLosses, {"loss_limit": limit, "threshold_filter": ThresholdFilter(-30)}
        )
        if rank == 0:  # non-finite, then all easy, then non-finite again
            values = [[1.0, NAN], [-40.0, -50.0], [NAN, 2.0], [NAN, NAN], [1.0, 2.0]]
        else:
            values = [[1.0, 2.0]] * 5
        try:
            brain.fit(
                range(1, 2), loader([fixed(v, f"b{i}") for i, v in enumerate(values)])
            )
        except TooManySkipsError as err:
            result["error"] = str(err)
            result["stopped_at"] = brain.step
    elif scenario == "disagree":
        brain = build(FixedLosses, {})
        brain.fit(range(1, 2), loader([fixed([1.0, 2.0], "b0")]))
        data = {f"u{i}": {"lab": "a"} for i in range(6)}
        brain.live_sampler = ISBLSampler(DynamicItemDataset(data), batch_size=2)
        result["tables_before"] = brain._sampler_ranks_agree()
        result["weights_before"] = brain._weights_ranks_agree()
        if rank == 1:
            brain.live_sampler.table.observe_indices([0], [5.0])  # rank 1 only
            with torch.no_grad():
                brain.modules.model.module.bias.add_(1.0)
        result["tables_after"] = brain._sampler_ranks_agree()
        result["weights_after"] = brain._weights_ranks_agree()
    else:
        raise SystemExit(f"unknown scenario {scenario!r}")
    model = brain.modules.model
    model = getattr(model, "module", model)
    result["weights"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
    result["stats"] = dict(brain.mining_stats)
    result["optimizer_step"] = brain.optimizer_step
    return result


def main(scenario, out_dir):
    sb.utils.distributed.ddp_init_group({"distributed_backend": "gloo"})
    rank = dist.get_rank()
    result = run(scenario, rank)
    torch.save(result, f"{out_dir}/rank{rank}.pt")
    shutdown()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
