"""SeparationBrain's per-source losses for the reweighting over sources."""

import math
import types

import pytest
import speechbrain as sb
import torch
from speechbrain.lobes.models.conv_tasnet import MaskNet
from speechbrain.lobes.models.dual_path import Decoder, Encoder
from speechbrain.nnet.losses import cal_si_snr, get_si_snr_with_pitwrapper

from hardmine.reweighting import SoftmaxReweighting
from hardmine.tasks.separation import SeparationBrain, pit_source_losses
from hardmine.validation import ConfigError


def si_snr(target, estimate):
    """SI-SNR in dB of one source (1-D tensors), as cal_si_snr defines it."""
    target = target - target.mean()
    estimate = estimate - estimate.mean()
    proj = (estimate @ target) * target / (target @ target + 1e-8)
    noise = estimate - proj
    return 10 * torch.log10((proj @ proj) / (noise @ noise + 1e-8) + 1e-8)


@pytest.mark.parametrize("sources", [2, 3])
@pytest.mark.parametrize("noise", [0.05, 0.5, 3.0])
def test_mean_over_sources_is_the_pit_loss(sources, noise):
    g = torch.Generator().manual_seed(sources * 10 + int(noise * 10))
    targets = torch.randn(4, 800, sources, generator=g)
    perm = torch.randperm(sources, generator=g)
    estimates = targets[..., perm] + noise * torch.randn(4, 800, sources, generator=g)
    losses = pit_source_losses(targets, estimates)
    assert losses.shape == (4, sources)
    reference = get_si_snr_with_pitwrapper(targets, estimates)
    torch.testing.assert_close(losses.mean(dim=1), reference, atol=1e-5, rtol=0)


def test_each_entry_is_its_target_sources_loss_under_the_best_permutation():
    g = torch.Generator().manual_seed(0)
    targets = torch.randn(2, 600, 2, generator=g)
    # Estimate 0 is source 1 (clean), estimate 1 is source 0 (noisy).
    clean = targets[..., 1]
    noisy = targets[..., 0] + 0.7 * torch.randn(2, 600, generator=g)
    estimates = torch.stack([clean, noisy], dim=-1)
    losses = pit_source_losses(targets, estimates)
    for b in range(2):
        want0 = -si_snr(targets[b, :, 0], noisy[b])
        want1 = -si_snr(targets[b, :, 1], clean[b])
        assert float(losses[b, 0]) == pytest.approx(float(want0), abs=1e-3)
        assert float(losses[b, 1]) == pytest.approx(float(want1), abs=1e-3)
    assert bool((losses[:, 1] < losses[:, 0] - 10).all())


def test_gradient_matches_the_pit_loss_and_inputs_stay_untouched():
    g = torch.Generator().manual_seed(5)
    targets = torch.randn(3, 500, 3, generator=g)
    base = targets[..., [1, 2, 0]] + 0.3 * torch.randn(3, 500, 3, generator=g)
    a = base.clone().requires_grad_(True)
    b = base.clone().requires_grad_(True)
    before = a.detach().clone()
    (ga,) = torch.autograd.grad(pit_source_losses(targets, a).mean(dim=1).sum(), a)
    (gb,) = torch.autograd.grad(get_si_snr_with_pitwrapper(targets, b).sum(), b)
    torch.testing.assert_close(ga, gb, atol=1e-5, rtol=1e-3)
    assert torch.equal(a.detach(), before)  # cal_si_snr's in-place mask


def test_pit_permutation_is_speechbrains():
    # cal_si_snr on a matrix of pairs, as PitWrapper does, picks the same
    # pairing the per-source losses use.
    g = torch.Generator().manual_seed(9)
    targets = torch.randn(1, 400, 3, generator=g)
    estimates = targets[..., [2, 0, 1]] + 0.2 * torch.randn(1, 400, 3, generator=g)
    losses = pit_source_losses(targets, estimates)
    direct = cal_si_snr(
        targets[..., [0, 1, 2]].transpose(0, 1),
        estimates[..., [1, 2, 0]].transpose(0, 1).clone(),
    ).squeeze(0)
    torch.testing.assert_close(losses, direct, atol=1e-5, rtol=0)


def tiny_brain(reweighting, loss=get_si_snr_with_pitwrapper):
    torch.manual_seed(0)
    modules = {
        "encoder": Encoder(kernel_size=16, out_channels=8),
        "masknet": MaskNet(8, 8, 8, 3, 1, 1, 2),
        "decoder": Decoder(
            in_channels=8, out_channels=1, kernel_size=16, stride=8, bias=False
        ),
    }
    hparams = {"num_spks": 2, "loss": loss, "reweighting": reweighting}
    return SeparationBrain(modules, hparams=hparams, run_opts={"device": "cpu"})


def sep_batch(n=3, length=805):
    g = torch.Generator().manual_seed(1)
    s1, s2 = torch.randn(n, length, generator=g), torch.randn(n, length, generator=g)
    ones = torch.ones(n)
    return types.SimpleNamespace(
        id=[f"m{i}" for i in range(n)],
        mix_sig=(s1 + s2, ones),
        s1_sig=(s1, ones),
        s2_sig=(s2, ones),
    )


def test_separation_brain_returns_per_source_losses_over_sources():
    batch = sep_batch()
    per_source = tiny_brain(SoftmaxReweighting("robust", over="sources"))
    per_example = tiny_brain(SoftmaxReweighting("robust"))
    out = per_source.compute_forward(batch, sb.Stage.TRAIN)
    losses = per_source._recipe_objectives(out, batch, sb.Stage.TRAIN)
    assert losses.shape == (3, 2)
    reference = per_example._recipe_objectives(out, batch, sb.Stage.TRAIN)
    torch.testing.assert_close(losses.mean(1), reference, atol=1e-5, rtol=0)
    # The stage loss of validation is the mean over sources and mixtures.
    per_source.on_stage_start(sb.Stage.VALID, 1)
    valid = per_source.compute_objectives(out, batch, sb.Stage.VALID)
    assert float(valid.detach()) == pytest.approx(
        float(reference.mean().detach()), abs=1e-5
    )
    # Training: robust softmax over the 3 x 2 entries.
    per_source.on_stage_start(sb.Stage.TRAIN, 1)
    loss = per_source.compute_objectives(out, batch, sb.Stage.TRAIN)
    entries = losses.detach().flatten().double()
    p = torch.softmax(entries / 2.0, 0)
    assert float(loss.detach()) == pytest.approx(float((p * entries).sum()), abs=1e-4)


def test_separation_brain_over_sources_needs_the_pit_si_snr_loss():
    from speechbrain.nnet.losses import get_snr_with_pitwrapper

    with pytest.raises(ConfigError) as info:
        tiny_brain(
            SoftmaxReweighting("robust", over="sources"), loss=get_snr_with_pitwrapper
        )
    assert info.value.field == "over"
    assert "get_snr_with_pitwrapper" in str(info.value)
    # The recipe's own loss, as hyperpyyaml's !name: builds it, is accepted.
    import functools

    tiny_brain(
        SoftmaxReweighting("robust", over="sources"),
        loss=functools.partial(get_si_snr_with_pitwrapper),
    )


def test_separation_brain_trains_at_batch_size_one_over_sources_with_ema():
    rw = SoftmaxReweighting(
        "robust", over="sources", partition="ema", partition_momentum=0.5
    )
    brain = tiny_brain(rw)
    brain.opt_class = lambda params: torch.optim.Adam(params, lr=1e-3)
    batches = []
    for i in range(4):
        b = sep_batch(n=1, length=805)
        b.id = [f"m{i}"]
        batches.append(b)
    before = [p.detach().clone() for p in brain.modules.parameters()]
    brain.fit(range(1, 2), batches, train_loader_kwargs={"batch_size": None})
    assert int(rw.partition_state.batches) == 4
    assert brain.mining_stats["batches_skipped"] == 0
    assert brain.mining_stats["weights_ess"] == pytest.approx(1.0)  # one mixture
    assert math.isfinite(brain.mining_stats["log_partition"])
    after = list(brain.modules.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after))
