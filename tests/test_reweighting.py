"""SoftmaxReweighting over sources and with the streaming (ema) partition."""

import math

import pytest
import torch
from hyperpyyaml import load_hyperpyyaml

from hardmine import fragments
from hardmine.reweighting import (
    SoftmaxReweighting,
    StreamingPartition,
    kl_to_uniform,
)
from hardmine.validation import ConfigError


# ------------------------------------------------------------------ sources
def test_over_sources_softmax_runs_over_every_entry():
    losses = torch.tensor([[-12.0, -3.0], [0.5, 4.0], [9.0, -1.0]])
    rw = SoftmaxReweighting("robust", temperature=2.0, over="sources")
    loss, p = rw.reduce(losses)
    expected = torch.softmax(losses.flatten().double() / 2.0, 0).view(3, 2)
    assert p.shape == (3, 2)
    assert torch.allclose(p.double(), expected, atol=1e-6)
    assert float(loss.detach()) == pytest.approx(
        float((expected * losses).sum()), abs=1e-5
    )
    # Not the softmax over the mixtures' mean losses.
    per_example = torch.softmax(losses.mean(1) / 2.0, 0)
    assert not torch.allclose(p.sum(1), per_example, atol=1e-3)


def test_over_sources_gradient_is_the_detached_weight():
    losses = torch.tensor([[1.0, 2.0], [6.0, 0.0]], requires_grad=True)
    loss, p = SoftmaxReweighting("robust", temperature=1.0, over="sources").reduce(
        losses
    )
    loss.backward()
    assert torch.allclose(losses.grad, p)
    assert p[1, 0] == p.max()


def test_over_sources_uniform_is_the_mean_of_the_example_means():
    losses = torch.tensor([[1.0, 3.0], [2.0, 10.0]])
    loss, p = SoftmaxReweighting(over="sources").reduce(losses)
    assert p is None
    assert float(loss.detach()) == pytest.approx(float(losses.mean(1).mean()))


def test_over_sources_class_bias_gives_every_source_its_example_score():
    rw = SoftmaxReweighting(
        "class_bias", class_field="label", favoured=["a"], gamma=1.5, over="sources"
    )
    losses = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    _, p = rw.reduce(losses, classes=["a", "b"])
    assert float(p[0, 0] / p[1, 1]) == pytest.approx(math.exp(1.5), rel=1e-5)
    assert float(p[0, 0] / p[0, 1]) == pytest.approx(1.0)


def test_over_sources_capacity_measures_all_entries():
    rw = SoftmaxReweighting("robust", capacity=0.5, over="sources")
    # One mixture of two sources: log 2 > 0.5, reachable.
    _, p = rw.reduce(torch.tensor([[0.0, 5.0]]))
    assert rw.update_controller(p) is True
    assert rw.controller.last_kl == pytest.approx(kl_to_uniform(p))


def test_shape_must_match_over():
    with pytest.raises(ValueError, match=r"shape \[B, S\]"):
        SoftmaxReweighting("robust", over="sources").reduce(torch.ones(3))
    with pytest.raises(ValueError, match="over: sources"):
        SoftmaxReweighting("robust").reduce(torch.ones(3, 2))


# ---------------------------------------------------------------- streaming
def stream(n, seed=0, spread=1.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, generator=g, dtype=torch.float64) * spread


def test_ema_batch_size_one_weights_average_one():
    # Batch size 1 (SpeechBrain's SepFormer): a batch softmax is always 1,
    # the streaming weights are exp(F) / Z with Z tracking mean exp(F).
    rw = SoftmaxReweighting("robust", temperature=1.0, partition="ema")
    batch = SoftmaxReweighting("robust", temperature=1.0)
    weights, log_z = [], []
    for value in stream(20000).tolist():
        losses = torch.tensor([value])
        _, p_batch = batch.reduce(losses)
        assert float(p_batch) == 1.0
        _, w = rw.reduce(losses)
        weights.append(float(w[0]))
        assert rw.update_partition()
        log_z.append(float(rw.partition_state.log_z))
    weights = torch.tensor(weights[200:])  # past the first 1/(1-m) batches
    assert float(weights.mean()) == pytest.approx(1.0, abs=0.03)
    assert float(weights.std()) > 0.5  # they do differ (about sqrt(e - 1))
    # Z estimates the mean of exp(F), exp(sigma^2 / 2) for F ~ N(0, 1).
    assert sum(log_z[200:]) / len(log_z[200:]) == pytest.approx(0.5, abs=0.05)


def test_ema_hard_example_weighs_exp_delta_f_more_as_in_the_batch_form():
    temperature = 2.0
    rw = SoftmaxReweighting("robust", temperature=temperature, partition="ema")
    for value in stream(300).tolist():
        rw.reduce(torch.tensor([value]))
        rw.update_partition()
    easy, hard = -3.0, 5.0
    _, w_easy = rw.reduce(torch.tensor([easy]))
    _, w_hard = rw.reduce(torch.tensor([hard]))  # the same Z: no update between
    ratio = float(w_hard[0] / w_easy[0])
    assert ratio == pytest.approx(math.exp((hard - easy) / temperature), rel=1e-5)
    _, p = SoftmaxReweighting("robust", temperature=temperature).reduce(
        torch.tensor([easy, hard])
    )
    assert ratio == pytest.approx(float(p[1] / p[0]), rel=1e-5)


@pytest.mark.parametrize("over", ["examples", "sources"])
@pytest.mark.parametrize("mode", ["robust", "curriculum"])
def test_ema_with_z_at_the_batch_mean_is_exactly_the_batch_form(mode, over):
    kw = {"temperature": 1.5}
    if mode == "curriculum":
        kw.update(schedule="linear", rate=1.0)
    shape = (5,) if over == "examples" else (5, 2)
    losses = torch.randn(shape, generator=torch.Generator().manual_seed(3)) * 4
    losses.requires_grad_(True)
    rw = SoftmaxReweighting(mode, over=over, partition="ema", **kw)
    batch = SoftmaxReweighting(mode, over=over, **kw)
    expected, p = batch.reduce(losses)
    scores = rw.scores(losses.detach().double())
    rw.partition_state.update(
        float(torch.logsumexp(scores.flatten(), 0)) - math.log(losses.numel())
    )
    loss, w = rw.reduce(losses)
    assert rw.streamed
    assert float(loss.detach()) == pytest.approx(
        float(expected.detach()), rel=1e-6, abs=1e-6
    )
    assert torch.allclose(w, p, rtol=1e-5, atol=1e-7)
    # The same gradient: each entry's detached weight.
    (grad,) = torch.autograd.grad(loss, losses)
    assert torch.allclose(grad, p, rtol=1e-5, atol=1e-7)


def test_ema_first_batch_is_the_batch_softmax_and_sets_z():
    losses = torch.tensor([1.0, 2.0, 4.0])
    rw = SoftmaxReweighting("robust", temperature=2.0, partition="ema")
    loss, p = rw.reduce(losses)
    expected, q = SoftmaxReweighting("robust", temperature=2.0).reduce(losses)
    assert torch.equal(p, q) and torch.equal(loss, expected)
    assert not rw.streamed
    assert rw.update_partition()
    mean = torch.exp(losses.double() / 2.0).mean()
    assert float(rw.partition_state.log_z) == pytest.approx(float(mean.log()))
    assert not rw.update_partition()  # nothing reduced since


def test_ema_update_is_the_log_domain_moving_average():
    m = 0.9
    rw = SoftmaxReweighting(
        "robust", temperature=1.0, partition="ema", partition_momentum=m
    )
    batches = [
        torch.tensor([0.0, 1.0]),
        torch.tensor([3.0]),
        torch.tensor([-2.0, 0.5, 7.0]),
    ]
    z = None
    for losses in batches:
        rw.reduce(losses)
        rw.update_partition()
        s = float(torch.exp(losses.double()).mean())
        z = s if z is None else m * z + (1 - m) * s
        assert float(rw.partition_state.log_z) == pytest.approx(math.log(z), rel=1e-12)


def test_ema_stays_finite_far_out_of_float_range():
    # exp(F) would overflow float64 (F = 2000); log Z does not.
    rw = SoftmaxReweighting("robust", temperature=0.5, partition="ema")
    for value in (1000.0, 1001.0, 999.0):
        _, w = rw.reduce(torch.tensor([value, value - 1.0]))
        assert torch.isfinite(w).all()
        rw.update_partition()
    assert math.isfinite(float(rw.partition_state.log_z))
    assert float(rw.partition_state.log_z) > 1900


def test_ema_momentum_zero_is_the_last_batch_mean():
    rw = SoftmaxReweighting(
        "robust", temperature=1.0, partition="ema", partition_momentum=0.0
    )
    rw.reduce(torch.tensor([5.0]))
    rw.update_partition()
    rw.reduce(torch.tensor([1.0, 2.0]))
    rw.update_partition()
    expected = math.log((math.e + math.e**2) / 2)
    assert float(rw.partition_state.log_z) == pytest.approx(expected)


def test_ema_importance_weights_enter_the_statistic_and_cancel_in_the_batch_form():
    losses = torch.tensor([0.0, 2.0, 1.0])
    w = torch.tensor([0.5, 2.0, 1.0])
    rw = SoftmaxReweighting("robust", temperature=1.0, partition="ema")
    rw.reduce(losses)
    rw.update_partition(w)
    s = float((w.double() * torch.exp(losses.double())).sum() / w.double().sum())
    assert float(rw.partition_state.log_z) == pytest.approx(math.log(s))
    # With Z at the importance-weighted batch mean, combine gives the batch
    # form's sum w p L / sum w p.
    rw.partition_state.log_z.fill_(math.log(s))
    _, p = rw.reduce(losses)
    mixed = rw.combine(p, w)
    _, q = SoftmaxReweighting("robust", temperature=1.0).reduce(losses)
    reference = w * q / (w * q).sum()
    assert torch.allclose(mixed, reference, rtol=1e-6)


def test_uniform_mode_keeps_no_partition_state_moving():
    rw = SoftmaxReweighting("uniform", partition="ema")
    loss, p = rw.reduce(torch.tensor([1.0, 3.0]))
    assert p is None and float(loss.detach()) == 2.0
    assert not rw.update_partition()
    assert not rw.partition_state.initialised


def test_partition_state_round_trips_through_its_state_dict():
    z = StreamingPartition(0.95)
    z.update(1.25)
    z.update(-0.5)
    other = StreamingPartition(0.95)
    other.load_state_dict(z.state_dict())
    assert other.initialised and int(other.batches) == 2
    assert torch.equal(other.log_z, z.log_z)


# --------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"over": "mixtures"}, "over"),
        ({"over": None}, "over"),
        ({"partition": "running"}, "partition"),
        ({"partition_momentum": 1.0}, "partition_momentum"),
        ({"partition_momentum": -0.1}, "partition_momentum"),
        ({"partition_momentum": "high"}, "partition_momentum"),
        ({"mode": "robust", "capacity": 0.5, "partition": "ema"}, "capacity"),
    ],
)
def test_bad_fields_name_themselves(kwargs, field):
    with pytest.raises(ConfigError) as info:
        SoftmaxReweighting(**kwargs)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")


def test_defaults_are_todays_reweighting():
    rw = SoftmaxReweighting("robust")
    assert rw.over == "examples" and rw.partition == "batch"
    assert rw.partition_state is None and not rw.streaming
    assert repr(rw) == repr(SoftmaxReweighting("robust", over="examples"))


def test_fragment_fields_reach_the_reweighting(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text(
        f"reweighting: !include:{fragments.path()}/reweight.yaml\n"
        "    mode: robust\n"
        "    over: sources\n"
        "    partition: ema\n"
        "    partition_momentum: 0.9\n"
    )
    with open(path) as fin:
        rw = load_hyperpyyaml(fin)["reweighting"]
    assert rw.over == "sources" and rw.partition == "ema"
    assert rw.partition_state.momentum == 0.9
    with open(fragments.path() + "/reweight.yaml") as fin:
        text = fin.read()
    for line in ("over: examples", "partition: batch", "partition_momentum: 0.99"):
        assert f"\n{line}\n" in text
