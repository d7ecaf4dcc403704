"""HardMiningBrain under a real 2-process gloo group: skips x accumulation x DDP.

Each test runs tests/ddp_scripts/brain_ddp_worker.py under torch.distributed.run
with a timeout, so a rank that waits for ever in a collective fails the test
instead of hanging the suite.
"""

import sys
import types
from pathlib import Path

import pytest
import torch
from conftest import torchrun

REPO = Path(__file__).resolve().parents[1]
WORKER = REPO / "tests" / "ddp_scripts" / "brain_ddp_worker.py"
sys.path.insert(0, str(WORKER.parent))

import brain_ddp_worker as worker  # noqa: E402


def run_two_ranks(scenario, tmp_path):
    torchrun(WORKER, scenario, tmp_path, timeout=180)
    return [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]


def assert_same_weights(ranks):
    for key, value in ranks[0]["weights"].items():
        assert torch.equal(value, ranks[1]["weights"][key]), key


@pytest.mark.slow
def test_skip_on_last_micro_batch_keeps_ranks_identical_and_equal_to_one_process(
    tmp_path,
):
    ranks = run_two_ranks("accum", tmp_path)
    assert_same_weights(ranks)
    stats = ranks[0]["stats"]
    assert stats["skipped_nonfinite"] == 2  # one rank each, epoch 2
    assert stats["skipped_other_rank"] == 2
    assert stats["weights_ranks_agree"] == 1
    # Two windows per epoch; the third micro-batch pair ends the epoch inside
    # a window and is dropped. No window is entirely skipped.
    assert ranks[0]["optimizer_step"] == ranks[1]["optimizer_step"] == 4

    # One process on the concatenated data: each micro-batch holds both ranks'
    # examples, so its mean loss is the mean of the ranks' means (DDP's average).
    per_rank = [worker.accum_batches(r) for r in (0, 1)]
    joined = [
        types.SimpleNamespace(
            x=torch.cat([a.x, b.x]), y=torch.cat([a.y, b.y]), id=a.id + b.id
        )
        for a, b in zip(*per_rank, strict=True)
    ]
    single = worker.Regressor(
        modules={"model": _seeded_linear()},
        opt_class=lambda p: torch.optim.SGD(p, lr=0.1),
        hparams={},
        run_opts={"device": "cpu", "grad_accumulation_factor": 2},
    )
    single.fit(range(1, 3), joined, train_loader_kwargs={"batch_size": None})
    for key, value in single.modules.model.state_dict().items():
        torch.testing.assert_close(
            ranks[0]["weights"][key], value, rtol=1e-5, atol=1e-6
        )
    assert single.optimizer_step == 4


def _seeded_linear():
    torch.manual_seed(0)
    return torch.nn.Linear(4, 1)


@pytest.mark.slow
def test_skip_on_one_rank_with_the_capacity_controller(tmp_path):
    ranks = run_two_ranks("capacity", tmp_path)
    assert_same_weights(ranks)
    assert ranks[0]["beta"] == ranks[1]["beta"] != 1.0
    assert ranks[0]["last_kl"] == ranks[1]["last_kl"]
    stats = ranks[0]["stats"]
    # Per epoch: rank 0's first and last batches and rank 1's third are all
    # easy; the other rank skips them too.
    assert stats["skipped_all_easy"] == 3
    assert stats["skipped_other_rank"] == 3
    assert stats["batches_skipped"] == 6
    assert stats["weights_ranks_agree"] == 1
    assert ranks[0]["optimizer_step"] == ranks[1]["optimizer_step"] == 2


@pytest.mark.slow
def test_too_many_skips_on_one_rank_stops_every_rank_at_the_same_batch(tmp_path):
    ranks = run_two_ranks("too_many", tmp_path)
    assert "max_consecutive_skips=2" in ranks[0]["error"]
    assert ranks[0]["error"] == ranks[1]["error"]
    # NaN, all easy (not counted), NaN, NaN: the third counted skip stops both.
    assert ranks[0]["stopped_at"] == ranks[1]["stopped_at"] == 4
    assert_same_weights(ranks)


@pytest.mark.slow
def test_agreement_checks_report_a_rank_that_differs(tmp_path):
    ranks = run_two_ranks("disagree", tmp_path)
    for r in ranks:
        assert r["tables_before"] is True and r["weights_before"] is True
        assert r["tables_after"] is False and r["weights_after"] is False
