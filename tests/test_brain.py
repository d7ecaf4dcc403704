"""HardMiningBrain: the per-example loss pipeline inside SpeechBrain's fit_batch."""

import copy
import json
import math

import numpy as np
import pytest
import speechbrain as sb
import torch
from conftest import make_batch

from hardmine.brain import HardMiningBrain
from hardmine.loss_limit import LossLimit, TooManySkipsError
from hardmine.reweighting import SoftmaxReweighting, kl_to_uniform
from hardmine.threshold import ThresholdFilter
from hardmine.validation import ConfigError


class Regressor(HardMiningBrain):
    """Linear regression with one squared error per example."""

    def compute_forward(self, batch, stage):
        return self.modules.model(batch.x)

    def compute_objectives(self, predictions, batch, stage):
        return ((predictions - batch.y) ** 2).mean(dim=1)


class PlainRegressor(sb.Brain):
    def compute_forward(self, batch, stage):
        return self.modules.model(batch.x)

    def compute_objectives(self, predictions, batch, stage):
        return ((predictions - batch.y) ** 2).mean()


class FixedLosses(HardMiningBrain):
    """Returns the losses given in the batch, times a factor that is exactly 1
    but has a gradient, so every usable batch moves the parameters."""

    def compute_forward(self, batch, stage):
        w = self.modules.model.weight.sum()
        return 1.0 + w - w.detach()

    def compute_objectives(self, predictions, batch, stage):
        return batch.y * predictions


def build(cls=Regressor, hparams=None, seed=0, lr=0.05, **run_opts):
    torch.manual_seed(seed)
    opts = {"device": "cpu", **run_opts}
    return cls(
        modules={"model": torch.nn.Linear(4, 1)},
        opt_class=lambda p: torch.optim.Adam(p, lr=lr),
        hparams=hparams or {},
        run_opts=opts,
    )


def regression_batches(n=6, size=8, seed=1):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(4, 1, generator=g)
    out = []
    for b in range(n):
        x = torch.randn(size, 4, generator=g)
        y = x @ w + 0.1 * torch.randn(size, 1, generator=g)
        out.append(make_batch(x, y, ids=[f"b{b}e{i}" for i in range(size)]))
    return out


def fit(brain, batches, epochs=1):
    brain.fit(range(1, epochs + 1), batches, train_loader_kwargs={"batch_size": None})


def train_loss(brain, batch):
    """The loss HardMiningBrain would backpropagate for ``batch``."""
    brain.on_stage_start(sb.Stage.TRAIN, 1)
    out = brain.compute_forward(batch, sb.Stage.TRAIN)
    return brain.compute_objectives(out, batch, sb.Stage.TRAIN)


def snapshot(brain):
    params = [p.detach().clone() for p in brain.modules.parameters()]
    return params, copy.deepcopy(brain.optimizer.state_dict())


def assert_bitwise_equal(a, b):
    for x, y in zip(a[0], b[0]):
        assert torch.equal(x, y)
    sa, sb_ = a[1]["state"], b[1]["state"]
    assert sa.keys() == sb_.keys()
    for k in sa:
        for name in sa[k]:
            assert torch.equal(
                torch.as_tensor(sa[k][name]), torch.as_tensor(sb_[k][name])
            )


# --------------------------------------------------------------- all off
def test_all_off_equals_plain_brain_after_n_steps():
    batches = regression_batches(n=5)
    mined = build(Regressor, seed=3)
    plain = build(PlainRegressor, seed=3)
    fit(mined, batches, epochs=3)
    fit(plain, batches, epochs=3)
    for p, q in zip(mined.modules.parameters(), plain.modules.parameters()):
        assert torch.equal(p, q)
    assert mined.optimizer_step == plain.optimizer_step == 15


def test_grad_accumulation_and_clipping_still_apply():
    batches = regression_batches(n=6)
    mined = build(Regressor, seed=3, grad_accumulation_factor=3, max_grad_norm=0.01)
    plain = build(
        PlainRegressor, seed=3, grad_accumulation_factor=3, max_grad_norm=0.01
    )
    fit(mined, batches)
    fit(plain, batches)
    assert mined.optimizer_step == plain.optimizer_step == 2
    for p, q in zip(mined.modules.parameters(), plain.modules.parameters()):
        assert torch.equal(p, q)


# ------------------------------------------------------- hook wrapping
class ChildRecipe(FixedLosses):
    """A recipe built on another: its hooks call the parent's through super()."""

    def compute_objectives(self, predictions, batch, stage):
        self.objective_calls += 1
        return super().compute_objectives(predictions, batch, stage)

    def on_stage_end(self, stage, stage_loss, epoch=None):
        self.stage_ends.append(stage)
        return super().on_stage_end(stage, stage_loss, epoch)


def test_a_child_recipe_gets_the_mining_once():
    threshold = ThresholdFilter(-30.0)
    brain = build(ChildRecipe, {"threshold_filter": threshold})
    brain.objective_calls, brain.stage_ends = 0, []
    losses = torch.tensor([-40.0, -5.0, 3.0])
    loss = train_loss(brain, make_batch(torch.zeros(3, 4), losses))
    # Filtered and averaged once (a second pass would see the scalar -1.0).
    assert float(loss.detach()) == pytest.approx(-1.0)
    assert brain._count["examples_filtered"] == 1 and brain._count["batches"] == 1
    assert brain.objective_calls == 1
    raw = brain._recipe_objectives(
        torch.tensor(1.0), make_batch(torch.zeros(3, 4), losses), 0
    )
    assert torch.equal(raw.detach(), losses)  # the recipe's own losses
    brain.on_stage_end(sb.Stage.TRAIN, 1.0, 1)
    assert brain.stage_ends == [sb.Stage.TRAIN]
    assert brain.mining_stats["examples_filtered"] == 1


def test_a_recipe_without_stage_hooks_still_gets_mining_statistics():
    brain = build(FixedLosses, {"threshold_filter": ThresholdFilter(-30.0)})
    fit(brain, [make_batch(torch.zeros(2, 4), torch.tensor([-40.0, 2.0]))])
    assert brain.mining_stats["examples_filtered"] == 1


def test_a_brain_is_freed_without_a_garbage_collection():
    import gc
    import weakref

    gc.disable()
    try:
        brain = build(ChildRecipe)
        brain.objective_calls, brain.stage_ends = 0, []
        fit(brain, [make_batch(torch.zeros(2, 4), torch.tensor([1.0, 2.0]))])
        alive = weakref.ref(brain)
        del brain
        assert alive() is None  # no reference cycle holds it
    finally:
        gc.enable()


# ------------------------------------------------------------- threshold
def test_threshold_drops_exactly_the_easy_examples():
    brain = build(FixedLosses, {"threshold_filter": ThresholdFilter(-30.0)})
    losses = torch.tensor([-40.0, -30.0, -29.9, -5.0, 3.0])
    loss = train_loss(brain, make_batch(torch.zeros(5, 4), losses))
    assert float(loss.detach()) == pytest.approx(float(losses[2:].mean()))
    assert brain._count["examples_filtered"] == 2


def test_all_easy_batch_is_skipped_and_counted():
    brain, before = _skip_case(
        [-40.0, -35.0, -31.0], {"threshold_filter": ThresholdFilter(-30.0)}
    )
    assert_bitwise_equal(before, snapshot(brain))
    assert brain.mining_stats["skipped_all_easy"] == 2
    assert brain.mining_stats["examples_filtered"] == 6


def test_keep_hardest_keeps_the_top_share_of_the_usable_examples():
    # 7 examples, one with broken audio: ceil(0.5 * 6) = 3 of the 6 others stay.
    brain = build(FixedLosses, {"threshold_filter": ThresholdFilter(None, 0.5)})
    losses = torch.tensor([0.2, 5.0, 0.9, 0.4, 9.0, 3.0, 0.1])
    batch = make_batch(torch.zeros(7, 4), losses)
    batch.audio_problem = ["", "", "", "", "clipped", "", ""]
    loss = train_loss(brain, batch)
    assert float(loss.detach()) == pytest.approx((5.0 + 0.9 + 3.0) / 3)
    assert brain._count["examples_filtered"] == 3
    assert brain._batch_weight == 3  # the stage average counts the kept three


def test_keep_hardest_after_the_threshold():
    # The threshold drops 2 of 6; of the 4 left, ceil(0.75 * 4) = 3 stay.
    f = ThresholdFilter(-30.0, keep_hardest=0.75)
    losses = torch.tensor([-40.0, -10.0, -31.0, -20.0, -5.0, -25.0])
    assert f.keep(losses).tolist() == [False, True, False, True, True, False]
    # Equal losses: the earlier example first; a share of 1 keeps them all.
    tied = torch.tensor([1.0, 2.0, 1.0, 1.0])
    assert ThresholdFilter(None, 0.5).keep(tied).tolist() == [True, True, False, False]
    assert ThresholdFilter(None, 1.0).keep(tied).all()


def test_keep_hardest_gradient_is_the_mean_gradient_of_the_kept_examples():
    batch = regression_batches(n=1, size=8)[0]
    brain = build(Regressor, {"threshold_filter": ThresholdFilter(None, 0.25)})
    loss = train_loss(brain, batch)
    loss.backward()
    got = brain.modules.model.weight.grad.clone()
    with torch.no_grad():
        each = ((brain.modules.model(batch.x) - batch.y) ** 2).mean(dim=1)
    top = torch.argsort(each, descending=True)[:2]
    brain.modules.model.weight.grad = None
    ((brain.modules.model(batch.x[top]) - batch.y[top]) ** 2).mean().backward()
    assert torch.allclose(got, brain.modules.model.weight.grad)


# ------------------------------------------------------------ reweighting
@pytest.mark.parametrize("temperature", [0.5, 2.0, 10.0])
def test_robust_weights_equal_softmax_over_temperature(temperature):
    rw = SoftmaxReweighting("robust", temperature=temperature)
    brain = build(FixedLosses, {"reweighting": rw})
    losses = torch.tensor([-12.0, -3.0, 0.5, 4.0, 9.0])
    loss = train_loss(brain, make_batch(torch.zeros(5, 4), losses))
    p = torch.softmax(losses.double() / temperature, dim=0)
    assert float(loss.detach()) == pytest.approx(
        float((p * losses.double()).sum()), abs=1e-5
    )
    _, weights = rw.reduce(losses)
    assert torch.allclose(weights.double(), p, atol=1e-6)


def test_robust_weights_favour_hard_examples_and_are_detached():
    losses = torch.tensor([1.0, 2.0, 6.0], requires_grad=True)
    loss, p = SoftmaxReweighting("robust", temperature=1.0).reduce(losses)
    loss.backward()
    assert p[2] > p[1] > p[0]
    # p is detached: the gradient of sum p_i L_i w.r.t. L_i is p_i.
    assert torch.allclose(losses.grad, p)


def test_curriculum_moves_from_easy_favoured_to_uniform():
    rw = SoftmaxReweighting(
        "curriculum", temperature=0.5, schedule="linear", rate=2.0, unit="epoch"
    )
    losses = torch.tensor([1.0, 2.0, 4.0, 8.0])
    ratios, spreads = [], []
    for epoch in (1, 3, 10, 100):
        _, p = rw.reduce(losses, epoch=epoch)
        assert p[0] == p.max()  # the easiest example leads
        ratios.append(float(p[0] / p[-1]))
        spreads.append(float(p.max() - p.min()))
    assert all(a > b for a, b in zip(ratios, ratios[1:]))
    assert spreads[-1] < 0.02  # close to uniform at the end
    assert ratios[0] > 1e5


def test_curriculum_log_and_inverse_schedules_also_relax():
    for kw in (
        {"schedule": "log", "rate": 5.0},
        {"schedule": "inverse", "rate": 1.0, "temperature_final": 1000.0},
    ):
        rw = SoftmaxReweighting("curriculum", temperature=0.5, unit="step", **kw)
        losses = torch.tensor([1.0, 3.0])
        first = rw.reduce(losses, step=0)[1]
        late = rw.reduce(losses, step=10_000)[1]
        assert first[0] / first[1] > late[0] / late[1] > 1.0
        assert float(late[0] / late[1]) < 1.2


def test_class_bias_favours_named_classes_by_exp_gamma():
    gamma = 1.7
    rw = SoftmaxReweighting(
        "class_bias", class_field="label", favoured=["yes", "go"], gamma=gamma
    )
    brain = build(FixedLosses, {"reweighting": rw})
    classes = ["yes", "no", "go", "up", "yes"]
    losses = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    batch = make_batch(torch.zeros(5, 4), losses, classes=classes)
    loss = train_loss(brain, batch)
    w = torch.tensor([math.exp(gamma), 1, math.exp(gamma), 1, math.exp(gamma)])
    p = w / w.sum()
    assert float(loss.detach()) == pytest.approx(float((p * losses).sum()), rel=1e-6)
    _, weights = rw.reduce(losses, classes)
    assert float(weights[0] / weights[1]) == pytest.approx(math.exp(gamma), rel=1e-6)
    assert float(weights[0] / weights[2]) == pytest.approx(1.0)


def test_class_bias_reads_encoded_label_tensors():
    rw = SoftmaxReweighting("class_bias", class_field="label", favoured=[2], gamma=1.0)
    batch = make_batch(
        torch.zeros(3, 4), torch.ones(3), classes=torch.tensor([[2], [0], [2]])
    )
    assert rw.classes(batch) == ["2", "0", "2"]


# --------------------------------------------------------------- capacity
def _settle(rw, scale, steps, n=16, seed=0):
    """Feed batches of ``n`` losses (spread ``3 * scale``) to a controlled reweighting."""
    torch.manual_seed(seed)
    kls = []
    for _ in range(steps):
        losses = (torch.randn(n) * 3.0 + 5.0) * scale
        _, p = rw.reduce(losses)
        rw.update_controller(p)
        kls.append(rw.controller.last_kl)
    return kls


@pytest.mark.parametrize("mode", ["robust", "curriculum"])
@pytest.mark.parametrize("capacity", [0.1, 0.5, 1.0])
def test_capacity_controller_holds_kl_at_capacity(mode, capacity):
    rw = SoftmaxReweighting(mode, capacity=capacity)
    kls = _settle(rw, scale=1.0, steps=2000)
    settled = float(np.mean(kls[-500:]))
    assert abs(settled - capacity) < 0.1 * capacity
    # The controller did the work: at its starting temperature (1) the same
    # stream is concentrated far beyond each of these targets.
    torch.manual_seed(0)
    sign = 1.0 if mode == "robust" else -1.0
    start = [
        kl_to_uniform(torch.softmax(sign * (torch.randn(16) * 3.0 + 5.0), dim=0))
        for _ in range(200)
    ]
    assert float(np.mean(start)) > 1.5 * capacity
    assert rw.temperature() > 1.2


@pytest.mark.parametrize("scale", [0.01, 100.0])
def test_capacity_controller_settles_whatever_the_loss_scale(scale):
    # The temperature is a scale: it moves by factors, so losses 100 times
    # larger (or smaller) need about as many steps as losses of order 1.
    rw = SoftmaxReweighting("robust", capacity=0.5)
    kls = _settle(rw, scale=scale, steps=600)
    assert abs(float(np.mean(kls[-200:])) - 0.5) < 0.05
    # ... with a temperature in proportion to the losses' scale.
    reference = SoftmaxReweighting("robust", capacity=0.5)
    _settle(reference, scale=1.0, steps=600)
    assert rw.temperature() / scale == pytest.approx(reference.temperature(), rel=0.2)


def test_capacity_out_of_reach_leaves_the_temperature_and_is_reported(caplog):
    # One example per batch: KL is 0 whatever the temperature, so C = 0.5
    # cannot be reached. Beta must not collapse towards a hard max.
    rw = SoftmaxReweighting("robust", capacity=0.5)
    brain = build(FixedLosses, {"reweighting": rw})
    batches = [
        make_batch(torch.zeros(1, 4), torch.tensor([float(i)])) for i in range(30)
    ]
    with caplog.at_level("WARNING"):
        fit(brain, batches)
    assert rw.controller.beta == pytest.approx(1.0)
    assert brain.mining_stats["capacity_unreachable"] == 30
    assert any("out of reach in 30 of 30" in r.getMessage() for r in caplog.records)
    # log 2 > 0.5: a batch of two can reach it and moves beta.
    two = [make_batch(torch.zeros(2, 4), torch.tensor([0.0, 9.0]))] * 3
    fit(brain, two)
    assert rw.controller.beta != pytest.approx(1.0)
    assert brain.mining_stats["capacity_unreachable"] == 0


def test_capacity_controller_does_not_learn_from_skipped_batches():
    rw = SoftmaxReweighting("robust", capacity=0.5)
    limit = LossLimit(loss_upper_lim=100.0)
    brain = build(FixedLosses, {"reweighting": rw, "loss_limit": limit})
    over = make_batch(torch.zeros(4, 4), torch.tensor([1.0, 2.0, 300.0, 400.0]))
    fit(brain, [over] * 3)
    assert brain.mining_stats["skipped_loss_limit"] == 3
    assert rw.controller.beta == pytest.approx(1.0)
    assert math.isnan(rw.controller.last_kl)


def test_capacity_controller_moves_beta_the_right_way():
    from hardmine.capacity import CapacityController

    up, down = CapacityController(0.5), CapacityController(0.5)
    for _ in range(20):
        up.step(1.5)
        down.step(0.0)
    assert up.beta > 1.0 > down.beta > 0.0


def test_capacity_penalty_is_lagrangian_term():
    from hardmine.capacity import CapacityController

    ctrl = CapacityController(0.3, beta_init=2.0)
    kl = torch.tensor(1.0, requires_grad=True)
    penalty = ctrl.penalty(kl)
    penalty.backward()
    assert float(penalty.detach()) == pytest.approx(2.0 * 0.7, rel=1e-5)
    assert float(kl.grad) == pytest.approx(2.0, rel=1e-5)
    assert ctrl.rho.grad is None


# --------------------------------------------------------------- skipping
def _skip_case(losses, hparams=None, problems=None):
    """Train on one usable batch, then twice on a batch that must be skipped.

    Returns the brain and its state right after the usable batch.
    """
    brain = build(FixedLosses, hparams)
    warm = make_batch(torch.zeros(2, 4), torch.tensor([1.0, 2.0]))
    n = len(losses)
    skipped = make_batch(torch.zeros(n, 4), torch.tensor(losses), problems=problems)
    states = []
    brain.on_fit_batch_end = lambda *args: states.append(snapshot(brain))
    fit(brain, [warm, skipped, skipped])
    assert states[0][1]["state"], "the usable batch must create optimizer state"
    initial = build(FixedLosses).modules.parameters()
    assert not all(torch.equal(p, q) for p, q in zip(states[0][0], initial))
    return brain, states[0]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_nonfinite_batch_leaves_parameters_and_optimizer_bitwise_unchanged(value):
    brain, before = _skip_case([1.0, value, 2.0])
    assert_bitwise_equal(before, snapshot(brain))
    assert brain.mining_stats["skipped_nonfinite"] == 2


def test_loss_limit_skips_without_touching_state():
    brain, before = _skip_case(
        [5.0, 2e6], {"loss_limit": LossLimit(loss_upper_lim=999999)}
    )
    assert_bitwise_equal(before, snapshot(brain))
    assert brain.mining_stats["skipped_loss_limit"] == 2
    assert brain.mining_stats["batches_skipped"] == 2


def test_endless_skipping_raises_clear_error():
    brain = build(FixedLosses, {"loss_limit": LossLimit(max_consecutive_skips=3)})
    bad = [make_batch(torch.zeros(2, 4), torch.tensor([1.0, float("nan")]))] * 5
    with pytest.raises(TooManySkipsError, match="max_consecutive_skips=3"):
        fit(brain, bad)


def test_skip_inside_grad_accumulation_still_steps_on_good_batches():
    brain = build(FixedLosses, grad_accumulation_factor=2)
    good = make_batch(torch.zeros(2, 4), torch.tensor([1.0, 2.0]))
    bad = make_batch(torch.zeros(2, 4), torch.tensor([1.0, float("nan")]))
    fit(brain, [good, bad, bad, bad])
    # steps at batches 2 and 4; only the first window had a usable batch.
    assert brain.optimizer_step == 1


def test_skipped_micro_batch_does_not_shrink_the_step():
    # Factor 2 with the second micro-batch skipped steps exactly as factor 1
    # on the first alone: the window's gradient is the mean over usable ones.
    good = make_batch(torch.zeros(2, 4), torch.tensor([1.0, 2.0]))
    bad = make_batch(torch.zeros(2, 4), torch.tensor([1.0, float("nan")]))
    accumulated = build(FixedLosses, grad_accumulation_factor=2)
    alone = build(FixedLosses)
    for brain in (accumulated, alone):  # SGD: the step is in proportion to the gradient
        brain.opt_class = lambda p: torch.optim.SGD(p, lr=0.5)
    fit(accumulated, [good, bad])
    fit(alone, [good])
    assert accumulated.optimizer_step == alone.optimizer_step == 1
    for p, q in zip(accumulated.modules.parameters(), alone.modules.parameters()):
        assert torch.equal(p, q)


@pytest.mark.parametrize("scaler", [True, False])
def test_epoch_ending_inside_a_window_leaves_nothing_for_the_next_step(scaler):
    # Epoch 1 ends with one usable micro-batch of an open window (SpeechBrain
    # drops its gradients); epoch 2's first window is entirely skipped. No
    # step may follow (the GradScaler of an fp16 run raises "No inf checks
    # were recorded" on empty gradients) and none is counted. SpeechBrain
    # runs fp16 on GPUs only; on CPU bf16 autocast with a CPU GradScaler
    # goes through the same steps.
    brain = build(FixedLosses, grad_accumulation_factor=2, precision="bf16")
    if scaler:
        brain.scaler = torch.amp.GradScaler("cpu")
    good = make_batch(torch.zeros(2, 4), torch.tensor([1.0, 2.0]))
    bad = make_batch(torch.zeros(2, 4), torch.tensor([float("nan"), 2.0]))
    brain.fit(range(1, 2), [good, good, good], train_loader_kwargs={"batch_size": None})
    assert brain.optimizer_step == 1
    before = snapshot(brain)
    brain.fit(
        range(2, 3), [bad, bad, good, good], train_loader_kwargs={"batch_size": None}
    )
    assert brain.optimizer_step == 2
    assert not all(torch.equal(p, q) for p, q in zip(before[0], snapshot(brain)[0]))
    assert all(torch.isfinite(p).all() for p in brain.modules.parameters())


def test_nan_loss_of_a_broken_example_never_reaches_the_weights():
    # The recipe flags the example's audio but its loss is NaN anyway: a zero
    # weight times the NaN of its backward pass would still be NaN.
    brain, before = _skip_case(
        [1.0, float("nan"), 2.0], problems=["", "unreadable", ""]
    )
    assert_bitwise_equal(before, snapshot(brain))
    assert brain.mining_stats["skipped_nonfinite"] == 2
    assert all(torch.isfinite(p).all() for p in brain.modules.parameters())


def test_skipped_batches_stay_out_of_the_train_loss_average():
    brain = build(StageLosses)
    batches = [
        make_batch(torch.zeros(2, 4), torch.tensor([1.0, 3.0])),
        make_batch(torch.zeros(2, 4), torch.tensor([1.0, float("nan")])),
    ]
    losses = _stage_losses(brain)
    fit(brain, batches)
    assert losses[sb.Stage.TRAIN] == pytest.approx(2.0)


# -------------------------------------------------------------- bad audio
def test_bad_audio_examples_leave_the_batch_and_are_named_once(caplog):
    brain = build(FixedLosses)
    batch = make_batch(
        torch.zeros(3, 4),
        torch.tensor([1.0, 50.0, 3.0]),
        ids=["a", "b", "c"],
        problems=["", "silent", ""],
    )
    with caplog.at_level("WARNING"):
        loss = train_loss(brain, batch)
        train_loss(brain, batch)
    assert float(loss.detach()) == pytest.approx(2.0)
    assert sum("example b (silent)" in r.getMessage() for r in caplog.records) == 1
    assert brain._count["examples_bad_audio"] == 1  # counters reset per epoch


def test_batch_of_only_bad_audio_is_skipped():
    brain, before = _skip_case([1.0, 2.0], problems=["non-finite", "silent"])
    assert_bitwise_equal(before, snapshot(brain))
    assert brain.mining_stats["skipped_all_bad_audio"] == 2


class StageLosses(FixedLosses):
    """Records the stage loss its on_stage_end receives."""

    def on_stage_end(self, stage, stage_loss, epoch=None):
        self.stage_losses[stage] = stage_loss


def _stage_losses(brain):
    brain.stage_losses = {}
    return brain.stage_losses


def test_train_average_leaves_out_skipped_batches_from_the_start():
    # [skipped, 3.0]: SpeechBrain's average would give 1.5.
    brain = build(StageLosses)
    losses = _stage_losses(brain)
    fit(
        brain,
        [
            make_batch(torch.zeros(2, 4), torch.tensor([float("nan"), 3.0])),
            make_batch(torch.zeros(2, 4), torch.tensor([3.0, 3.0])),
        ],
    )
    assert losses[sb.Stage.TRAIN] == pytest.approx(3.0)
    # [bad, -10, -10] at batch size 1: -10, not -6.67.
    brain = build(StageLosses)
    losses = _stage_losses(brain)
    batches = [
        make_batch(torch.zeros(1, 4), torch.tensor([v]), problems=[p])
        for v, p in [(5.0, "silent"), (-10.0, ""), (-10.0, "")]
    ]
    fit(brain, batches)
    assert losses[sb.Stage.TRAIN] == pytest.approx(-10.0)


def test_stage_averages_weigh_batches_by_their_usable_examples():
    batches = [
        make_batch(
            torch.zeros(4, 4),
            torch.tensor([-10.0, 7.0, 7.0, 7.0]),
            problems=["", "silent", "clipped", "silent"],
        ),
        make_batch(torch.zeros(4, 4), torch.tensor([-2.0] * 4), problems=[""] * 4),
    ]
    brain = build(StageLosses)
    losses = _stage_losses(brain)
    brain.fit(
        range(1, 2),
        batches,
        batches,
        train_loader_kwargs={"batch_size": None},
        valid_loader_kwargs={"batch_size": None},
    )
    brain.evaluate(batches, test_loader_kwargs={"batch_size": None})
    for stage in (sb.Stage.TRAIN, sb.Stage.VALID, sb.Stage.TEST):
        assert losses[stage] == pytest.approx(-3.6), stage


def test_mid_epoch_checkpoint_keeps_the_average_weights(tmp_path):
    brain = build(FixedLosses)
    brain.checkpointer = sb.utils.checkpoints.Checkpointer(tmp_path, {"brain": brain})
    brain.step, brain.avg_train_loss, brain._avg_weight = 3, -2.5, 11
    brain.checkpointer.save_checkpoint()
    other = build(FixedLosses)
    other.checkpointer = sb.utils.checkpoints.Checkpointer(tmp_path, {"brain": other})
    other.checkpointer.recover_if_possible()
    assert (other.step, other.avg_train_loss, other._avg_weight) == (3, -2.5, 11)


def test_evaluation_averages_usable_examples_only():
    brain = build(FixedLosses)
    batch = make_batch(
        torch.zeros(3, 4), torch.tensor([1.0, 50.0, 3.0]), problems=["", "x", ""]
    )
    with torch.no_grad():  # as SpeechBrain evaluates
        out = brain.compute_forward(batch, sb.Stage.VALID)
        loss = brain.compute_objectives(out, batch, sb.Stage.VALID)
    assert float(loss) == pytest.approx(2.0)


# ----------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "make, field",
    [
        (lambda: ThresholdFilter("minus thirty"), "threshold"),
        (lambda: ThresholdFilter(None, keep_hardest=0.0), "keep_hardest"),
        (lambda: ThresholdFilter(None, keep_hardest=1.5), "keep_hardest"),
        (lambda: ThresholdFilter(None, keep_hardest="half"), "keep_hardest"),
        (lambda: LossLimit(loss_upper_lim="big"), "loss_upper_lim"),
        (lambda: LossLimit(max_consecutive_skips=0), "max_consecutive_skips"),
        (lambda: SoftmaxReweighting("hardest"), "reweight_mode"),
        (lambda: SoftmaxReweighting("robust", temperature=0.0), "temperature"),
        (lambda: SoftmaxReweighting("robust", temperature=-1.0), "temperature"),
        (lambda: SoftmaxReweighting("robust", capacity=-0.1), "capacity"),
        (lambda: SoftmaxReweighting("uniform", capacity=0.5), "capacity"),
        (lambda: SoftmaxReweighting("robust", schedule="cosine"), "schedule"),
        (lambda: SoftmaxReweighting("robust", unit="hour"), "unit"),
        (lambda: SoftmaxReweighting("curriculum"), "schedule"),
        (lambda: SoftmaxReweighting("class_bias", favoured=["yes"]), "class_field"),
        (lambda: SoftmaxReweighting("class_bias", class_field="label"), "favoured"),
        (
            lambda: SoftmaxReweighting(
                "class_bias", class_field="l", favoured=["a"], gamma="x"
            ),
            "gamma",
        ),
        (lambda: SoftmaxReweighting("robust", schedule="inverse"), "temperature_final"),
        (
            lambda: SoftmaxReweighting("robust", schedule="linear", rate=-1),
            "temperature_final",
        ),
        (lambda: build(hparams={"threshold_filter": -30}), "threshold_filter"),
        (lambda: build(hparams={"reweighting": "robust"}), "reweighting"),
        (lambda: build(hparams={"mining_sampler": "isbl"}), "mining_sampler"),
    ],
)
def test_bad_settings_fail_naming_the_field(make, field):
    with pytest.raises(ConfigError) as err:
        make()
    assert err.value.field == field
    assert str(err.value).startswith(field + ":")


class ScalarRegressor(Regressor):
    """Wrongly returns the batch mean instead of one loss per example."""

    def compute_objectives(self, predictions, batch, stage):
        return ((predictions - batch.y) ** 2).mean()


def test_scalar_loss_with_per_example_feature_is_an_error():
    brain = build(ScalarRegressor, {"threshold_filter": ThresholdFilter(-30.0)})
    with pytest.raises(ValueError, match="threshold_filter need one loss per example"):
        fit(brain, regression_batches(n=1))


def test_step_limit_from_the_command_line_is_a_number():
    brain = build(Regressor, optimizer_step_limit="3")
    fit(brain, regression_batches(n=5), epochs=2)
    assert brain.optimizer_step == 3
    with pytest.raises(ConfigError, match="optimizer_step_limit"):
        build(Regressor, optimizer_step_limit="three")


def test_scalar_loss_is_accepted_when_every_feature_is_off():
    brain = build(ScalarRegressor)
    fit(brain, regression_batches(n=2))
    assert brain.optimizer_step == 2


def test_missing_class_field_in_batch_names_it():
    rw = SoftmaxReweighting("class_bias", class_field="command", favoured=["yes"])
    brain = build(FixedLosses, {"reweighting": rw})
    with pytest.raises(KeyError, match="class_field"):
        train_loss(brain, make_batch(torch.zeros(2, 4), torch.ones(2)))


# ------------------------------------------------ training with each feature
FEATURES = {
    "threshold": {"threshold_filter": ThresholdFilter(0.001)},
    "keep_hardest": {"threshold_filter": ThresholdFilter(None, keep_hardest=0.5)},
    "loss_limit": {"loss_limit": LossLimit(loss_upper_lim=1e6)},
    "robust": {"reweighting": SoftmaxReweighting("robust", temperature=1.0)},
    "curriculum": {
        "reweighting": SoftmaxReweighting(
            "curriculum", temperature=0.5, schedule="linear"
        )
    },
    "robust_capacity": {"reweighting": SoftmaxReweighting("robust", capacity=0.2)},
    "class_bias": {
        "reweighting": SoftmaxReweighting(
            "class_bias", class_field="label", favoured=["1"]
        )
    },
}


@pytest.mark.parametrize("name", sorted(FEATURES))
def test_small_model_learns_with_each_feature(name, tmp_path):
    batches = regression_batches(n=8)
    for i, b in enumerate(batches):
        b.label = [str((i + j) % 2) for j in range(len(b.id))]
    hparams = {**FEATURES[name], "output_folder": str(tmp_path)}
    brain = build(Regressor, hparams, lr=0.05)

    def mse():
        with torch.no_grad():
            return float(
                sum(((brain.modules.model(b.x) - b.y) ** 2).mean() for b in batches)
            )

    start = mse()
    fit(brain, batches, epochs=8)
    assert mse() < 0.2 * start
    lines = (tmp_path / "mining_stats.jsonl").read_text().splitlines()
    assert len(lines) == 8
    record = json.loads(lines[-1])
    assert record["epoch"] == 8 and record["batches"] == 8
    times = [json.loads(line)["wall_time_s"] for line in lines]
    assert all(b > a for a, b in zip(times, times[1:]))  # cumulative
    if "reweighting" in hparams and hparams["reweighting"].active:
        assert 1.0 <= record["weights_ess"] <= 8.0
    if name == "robust_capacity":
        assert record["beta"] > 0
