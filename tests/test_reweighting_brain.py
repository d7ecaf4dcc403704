"""HardMiningBrain with the reweighting over sources and the streaming partition."""

import math

import pytest
import speechbrain as sb
import torch
from conftest import make_batch
from speechbrain.utils.checkpoints import Checkpointer

from hardmine.brain import HardMiningBrain
from hardmine.loss_limit import LossLimit
from hardmine.reweighting import SoftmaxReweighting
from hardmine.threshold import ThresholdFilter
from hardmine.validation import ConfigError


class SourceLosses(HardMiningBrain):
    """Returns the batch's ``y`` ([B, S] or [B]) times a factor that is 1 but
    has a gradient, so every usable batch moves the parameters."""

    def compute_forward(self, batch, stage):
        w = self.modules.model.weight.sum()
        return 1.0 + w - w.detach()

    def compute_objectives(self, predictions, batch, stage):
        return batch.y * predictions


class Recorder:
    """A live sampler stand-in: records what it observes, has fixed weights."""

    def __init__(self, weights=None):
        self.seen = []
        self.weights = weights

    def observe(self, ids, losses):
        self.seen.append((list(ids), losses.clone()))

    def batch_weights(self, ids):
        return None if self.weights is None else [self.weights[i] for i in ids]


def build(hparams=None, seed=0, **kwargs):
    torch.manual_seed(seed)
    return SourceLosses(
        modules={"model": torch.nn.Linear(4, 1)},
        opt_class=lambda p: torch.optim.SGD(p, lr=0.01),
        hparams=hparams or {},
        run_opts={"device": "cpu"},
        **kwargs,
    )


def batch_of(losses, **kw):
    losses = torch.as_tensor(losses, dtype=torch.float32)
    return make_batch(torch.zeros(losses.shape[0], 4), losses, **kw)


def train_loss(brain, batch):
    brain.on_stage_start(sb.Stage.TRAIN, 1)
    out = brain.compute_forward(batch, sb.Stage.TRAIN)
    return brain.compute_objectives(out, batch, sb.Stage.TRAIN)


def fit(brain, batches, epochs=1):
    brain.fit(range(1, epochs + 1), batches, train_loader_kwargs={"batch_size": None})


SOURCES = [[-12.0, -3.0], [0.5, 4.0], [9.0, -1.0], [-40.0, -35.0]]


# ------------------------------------------------------------------ sources
def test_over_sources_softmax_runs_over_the_kept_entries():
    rw = SoftmaxReweighting("robust", temperature=2.0, over="sources")
    brain = build({"reweighting": rw, "threshold_filter": ThresholdFilter(-30.0)})
    losses = torch.tensor(SOURCES)
    loss = train_loss(brain, batch_of(losses))
    kept = losses[:3]  # the last mixture is easy on average (-37.5 <= -30)
    p = torch.softmax(kept.flatten().double() / 2.0, 0)
    want = float((p * kept.flatten().double()).sum())
    assert float(loss.detach()) == pytest.approx(want, abs=1e-5)
    assert brain._count["examples_filtered"] == 1
    assert brain._count["examples"] == 4  # examples, not entries
    assert brain._batch_weight == 3


def test_over_sources_threshold_uses_the_mean_over_sources():
    # Source 1 of the first mixture is below the threshold, the mean is not.
    rw = SoftmaxReweighting("robust", temperature=2.0, over="sources")
    brain = build({"reweighting": rw, "threshold_filter": ThresholdFilter(-30.0)})
    losses = torch.tensor([[-50.0, -5.0], [1.0, 2.0]])
    train_loss(brain, batch_of(losses))
    assert brain._count["examples_filtered"] == 0


def test_over_sources_sampler_sees_one_loss_per_example_and_nan_for_bad_audio():
    rw = SoftmaxReweighting("robust", over="sources")
    brain = build({"reweighting": rw})
    brain.live_sampler = Recorder()
    losses = torch.tensor(SOURCES[:3])
    batch = batch_of(losses, problems=["", "clipped", ""])
    loss = train_loss(brain, batch)
    ((ids, seen),) = brain.live_sampler.seen
    assert ids == ["ex0", "ex1", "ex2"]
    assert seen[0] == pytest.approx(-7.5) and seen[2] == pytest.approx(4.0)
    assert math.isnan(seen[1])
    kept = losses[[0, 2]].flatten().double()
    p = torch.softmax(kept / 2.0, 0)
    assert float(loss.detach()) == pytest.approx(float((p * kept).sum()), abs=1e-5)
    assert brain._count["examples_bad_audio"] == 1


def test_over_sources_importance_weights_cover_every_source_of_an_example():
    rw = SoftmaxReweighting("robust", temperature=2.0, over="sources")
    brain = build({"reweighting": rw})
    brain.live_sampler = Recorder({"ex0": 0.5, "ex1": 2.0, "ex2": 1.0})
    losses = torch.tensor(SOURCES[:3])
    loss = train_loss(brain, batch_of(losses))
    L = losses.double()
    p = torch.softmax(L.flatten() / 2.0, 0).view(3, 2)
    w = torch.tensor([0.5, 2.0, 1.0], dtype=torch.float64).unsqueeze(1)
    want = (w * p * L).sum() / (w * p).sum()
    assert float(loss.detach()) == pytest.approx(float(want), rel=1e-5)


def test_over_sources_uniform_equals_the_per_example_mean_path():
    losses = torch.tensor(SOURCES[:3])
    by_source = train_loss(
        build({"reweighting": SoftmaxReweighting(over="sources")}), batch_of(losses)
    )
    by_example = train_loss(build(), batch_of(losses.mean(1)))
    assert float(by_source.detach()) == pytest.approx(float(by_example.detach()))


def test_over_sources_valid_and_test_average_the_means_over_good_examples():
    brain = build({"reweighting": SoftmaxReweighting("robust", over="sources")})
    losses = torch.tensor(SOURCES[:3])
    batch = batch_of(losses, problems=["", "", "missing file"])
    for stage in (sb.Stage.VALID, sb.Stage.TEST):
        brain.on_stage_start(stage, 1)
        out = brain.compute_forward(batch, stage)
        loss = brain.compute_objectives(out, batch, stage)
        assert float(loss.detach()) == pytest.approx(float(losses[:2].mean()))
        assert brain._batch_weight == 2


def test_over_sources_statistics_count_examples_and_their_weights():
    rw = SoftmaxReweighting("robust", temperature=1000.0, over="sources")
    brain = build({"reweighting": rw})
    fit(brain, [batch_of(SOURCES[:3])] * 2)
    stats = brain.mining_stats
    assert stats["examples"] == 6
    # Near-uniform weights over 3 mixtures x 2 sources: 3 examples' worth.
    assert stats["weights_ess"] == pytest.approx(3.0, rel=1e-3)
    # avg_train_loss: the weighted losses, each batch weighing 3 examples.
    assert math.isfinite(brain.avg_train_loss)


def test_over_sources_needs_per_source_losses():
    brain = build({"reweighting": SoftmaxReweighting("robust", over="sources")})
    with pytest.raises(ConfigError) as info:
        train_loss(brain, batch_of([1.0, 2.0]))
    assert info.value.field == "over"
    assert "[B, S]" in str(info.value) and "(2,)" in str(info.value)


def test_per_source_losses_without_over_sources_are_refused():
    brain = build({"reweighting": SoftmaxReweighting("robust")})
    with pytest.raises(ValueError, match="over: sources"):
        train_loss(brain, batch_of(SOURCES))


# ---------------------------------------------------------------- streaming
def test_ema_trains_at_batch_size_one_with_weights_exp_f_over_z():
    rw = SoftmaxReweighting("robust", temperature=2.0, partition="ema")
    brain = build({"reweighting": rw})
    values = [1.0, -3.0, 4.0, 0.5, 2.0]
    losses = []
    z = None
    for value in values:
        loss = train_loss(brain, batch_of([value]))
        # The Brain folds the batch in after its (single-rank) skip vote.
        f = value / 2.0
        want = value if z is None else math.exp(f - math.log(z)) * value
        assert float(loss.detach()) == pytest.approx(want, rel=1e-5)
        z = math.exp(f) if z is None else 0.99 * z + 0.01 * math.exp(f)
        assert float(rw.partition_state.log_z) == pytest.approx(math.log(z))
        losses.append(float(loss.detach()))
    assert len(set(losses)) == len(values)


def test_ema_learns_only_from_used_batches():
    rw = SoftmaxReweighting("robust", temperature=1.0, partition="ema")
    limit = LossLimit(loss_upper_lim=100.0)
    brain = build(
        {
            "reweighting": rw,
            "loss_limit": limit,
            "threshold_filter": ThresholdFilter(-30.0),
        }
    )
    batches = [
        batch_of([1.0, 2.0]),  # used: sets Z
        batch_of([-40.0, -50.0]),  # all easy: skipped before the reweighting
        batch_of([50.0, 60.0]),  # weighted, then over the loss limit: skipped
        batch_of([float("nan"), 1.0]),  # non-finite: skipped
    ]
    fit(brain, batches)
    assert brain.mining_stats["batches_skipped"] == 3
    assert int(rw.partition_state.batches) == 1
    want = math.log((math.e + math.e**2) / 2)
    assert float(rw.partition_state.log_z) == pytest.approx(want)
    assert brain.mining_stats["log_partition"] == pytest.approx(want)


def test_ema_with_over_sources_and_a_sampler_weights():
    rw = SoftmaxReweighting("robust", temperature=2.0, over="sources", partition="ema")
    brain = build({"reweighting": rw})
    brain.live_sampler = Recorder({"ex0": 0.5, "ex1": 2.0, "ex2": 1.0})
    losses = torch.tensor(SOURCES[:3])
    train_loss(brain, batch_of(losses))  # first batch: sets Z
    log_z = float(rw.partition_state.log_z)
    w = torch.tensor([0.5, 2.0, 1.0], dtype=torch.float64).unsqueeze(1)
    L = losses.double()
    s = (w * torch.exp(L / 2.0)).sum() / (w.sum() * 2)
    assert log_z == pytest.approx(float(s.log()), rel=1e-9)
    second = torch.tensor([[1.0, 2.0], [3.0, -4.0], [0.0, 0.0]])
    loss = train_loss(brain, batch_of(second))
    r = torch.exp(second.double() / 2.0 - log_z)
    want = (w * r * second.double()).sum() / (w.sum() * 2)
    assert float(loss.detach()) == pytest.approx(float(want), rel=1e-5)


def test_ema_state_is_checkpointed_and_recovered(tmp_path):
    def brain_with_checkpointer():
        rw = SoftmaxReweighting("robust", temperature=1.0, partition="ema")
        ckpt = Checkpointer(tmp_path / "ckpt")
        brain = build({"reweighting": rw}, checkpointer=ckpt)
        ckpt.add_recoverable("model", brain.modules.model)
        return brain, rw

    brain, rw = brain_with_checkpointer()
    assert brain.checkpointer.recoverables["reweight_partition"] is rw.partition_state
    fit(brain, [batch_of([1.0, 3.0]), batch_of([0.5]), batch_of([2.0, -1.0])])
    brain.checkpointer.save_checkpoint()
    saved = rw.partition_state.log_z.clone()

    other, fresh = brain_with_checkpointer()
    assert not fresh.partition_state.initialised
    other.checkpointer.recover_if_possible()
    assert torch.equal(fresh.partition_state.log_z, saved)
    assert int(fresh.partition_state.batches) == 3


def test_ema_resumes_from_a_checkpoint_saved_without_it(tmp_path):
    ckpt = Checkpointer(tmp_path / "ckpt")
    brain = build({"reweighting": SoftmaxReweighting("robust")}, checkpointer=ckpt)
    ckpt.add_recoverable("model", brain.modules.model)
    assert "reweight_partition" not in ckpt.recoverables  # off: nothing new saved
    ckpt.save_checkpoint()
    rw = SoftmaxReweighting("robust", partition="ema")
    ckpt = Checkpointer(tmp_path / "ckpt")
    other = build({"reweighting": rw}, checkpointer=ckpt)
    ckpt.add_recoverable("model", other.modules.model)
    with pytest.warns(UserWarning, match="reweight_partition"):
        ckpt.recover_if_possible()
    assert not rw.partition_state.initialised


def test_every_option_off_trains_as_before():
    """over: examples, partition: batch are the defaults: bit for bit."""
    batches = [batch_of([1.0, 5.0, 2.0]), batch_of([3.0, 0.5, 7.0])] * 2
    plain = build({"reweighting": SoftmaxReweighting("robust", temperature=2.0)})
    explicit = build(
        {
            "reweighting": SoftmaxReweighting(
                "robust",
                temperature=2.0,
                over="examples",
                partition="batch",
                partition_momentum=0.5,
            )
        }
    )
    fit(plain, batches)
    fit(explicit, batches)
    for p, q in zip(plain.modules.parameters(), explicit.modules.parameters()):
        assert torch.equal(p, q)
    assert plain.mining_stats == explicit.mining_stats
    assert "log_partition" not in plain.mining_stats
