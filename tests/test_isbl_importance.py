"""ISBL importance weights: the recorded draw probabilities, the weights, the Brain."""

import numpy as np
import pytest
import speechbrain as sb
import torch
from conftest import make_batch
from speechbrain.dataio.batch import PaddedBatch
from speechbrain.dataio.dataloader import SaveableDataLoader
from speechbrain.dataio.dataset import DynamicItemDataset

from hardmine.brain import HardMiningBrain
from hardmine.isbl import ISBLSampler
from hardmine.reweighting import SoftmaxReweighting
from hardmine.threshold import ThresholdFilter

LABELS = ["a", "a", "b"] * 20  # pools of 40 and 20


def make_dataset(labels=LABELS):
    data = {f"utt{i:04d}": {"lab": lab} for i, lab in enumerate(labels)}
    dataset = DynamicItemDataset(data)
    dataset.set_output_keys(["id"])
    return dataset


def sampler_with_losses(losses, beta, **kwargs):
    args = {"batch_size": 32, "pool_field": "lab", "seed": 5, "is_beta": beta}
    sampler = ISBLSampler(make_dataset(), **{**args, **kwargs})
    sampler.observe(sampler.ids, losses)
    return sampler


def test_weights_are_the_stated_equation():
    rng = np.random.default_rng(1)
    losses = rng.gamma(2.0, 1.0, len(LABELS))
    sampler = sampler_with_losses(losses, 0.6, pool_mix="uniform", uniform_mix=0.01)
    sampler.set_epoch(1)
    batch = next(iter(sampler))
    ids = [sampler.ids[i] for i in batch]
    table = sampler.table
    pools = table.pool_of[batch]
    sizes = table.pool_sizes[pools]
    within = np.array(
        [table.probabilities(k)[table.members(k) == i][0] for k, i in zip(pools, batch)]
    )
    raw = (sizes * within) ** -0.6
    np.testing.assert_allclose(sampler.batch_weights(ids), raw / raw.max(), rtol=1e-9)
    # The probability actually used: pool share x within-pool probability.
    np.testing.assert_allclose(
        sampler.batch_probabilities(ids), sampler.draw_probabilities()[batch], rtol=1e-9
    )
    assert sampler.stats()["is_beta"] == 0.6
    with pytest.raises(ValueError, match="'nope' is not in the training set"):
        sampler.batch_weights(["nope"])


def test_beta_schedule_constant_or_annealed_to_one():
    sampler = ISBLSampler(make_dataset(), 4, is_beta=0.4)
    assert [sampler.importance_beta(e) for e in (1, 5, 50)] == [0.4, 0.4, 0.4]
    sampler = ISBLSampler(make_dataset(), 4, is_beta=0.4, is_anneal_epochs=4)
    betas = [sampler.importance_beta(e) for e in range(1, 8)]
    np.testing.assert_allclose(betas, [0.4, 0.55, 0.7, 0.85, 1.0, 1.0, 1.0])
    assert ISBLSampler(make_dataset(), 4).importance_beta() is None
    assert ISBLSampler(make_dataset(), 4).batch_weights(["utt0000"]) is None


def weighted_means(beta, losses, batches=3000):
    """Self-normalised weighted batch losses, and the plain importance estimate."""
    sampler = sampler_with_losses(losses, beta, epoch_length=32 * batches)
    table = sampler.table
    sizes = table.pool_sizes[table.pool_of]
    shares = sampler.pool_mix_probs[table.pool_of]
    sampler.set_epoch(1)
    normalised, plain = [], []
    for batch in sampler:
        ids = [sampler.ids[i] for i in batch]
        w = sampler.batch_weights(ids)
        within = sampler.batch_probabilities(ids) / shares[batch]
        normalised.append((w * losses[batch]).sum() / w.sum())
        plain.append(np.mean(losses[batch] / (sizes[batch] * within)))
        sampler.observe(ids, losses[batch])  # the same losses: the table stays
    return np.array(normalised), np.array(plain)


def test_beta_one_recovers_the_uniform_mean_and_beta_zero_does_not():
    losses = np.random.default_rng(0).gamma(3.0, 0.5, len(LABELS))
    target = losses.mean()  # natural pool mix: q is uniform over the set
    normalised, plain = weighted_means(1.0, losses)
    # Unnormalised importance sampling is unbiased: within 4 standard errors.
    assert abs(plain.mean() - target) < 4 * plain.std() / np.sqrt(plain.size)
    # The self-normalised batch loss (what the Brain uses) within 2 %.
    assert normalised.mean() == pytest.approx(target, rel=0.02)
    # Without correction the batch loss estimates E_P[L], far above the mean.
    uncorrected, _ = weighted_means(0.0, losses)
    assert abs(uncorrected.mean() / target - 1) > 0.1


def test_loader_prefetch_and_repeated_ids_get_draw_time_weights():
    # 6 examples, batches of 8: every batch repeats ids. Two workers
    # prefetch 4 batches, so the table changes between a batch's draw and
    # its training step; the weights must be those of the draw.
    dataset = make_dataset(["x"] * 6)
    sampler = ISBLSampler(
        dataset, batch_size=8, seed=3, alpha=1.0, is_beta=1.0, epoch_length=8 * 12
    )
    recorded = []
    original = sampler._record

    def record(drawn, me, world):
        original(drawn, me, world)
        recorded.append(sampler._pending[-1])

    sampler._record = record
    loader = SaveableDataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=PaddedBatch,
        num_workers=2,
        prefetch_factor=2,
    )
    sampler.set_epoch(1)
    trained = 0
    for step, batch in enumerate(loader):
        indices = [sampler._index_of[i] for i in batch.id]
        assert len(set(indices)) < len(indices)
        if step == 0:
            assert len(recorded) > 1  # the loader has drawn ahead
        sampler.observe(batch.id, [float(step + i) for i in indices])
        weights = sampler.batch_weights(batch.id)
        np.testing.assert_array_equal(recorded[step][0], indices)
        np.testing.assert_array_equal(weights, recorded[step][2])
        trained += 1
    assert trained == 12 and len(recorded) == 12
    # Fresh probabilities would have given other weights for the last batch.
    fresh = sampler._weights_of(
        np.array(indices), sampler.table.probability_of(indices)
    )
    assert not np.allclose(fresh[0], weights)


# ------------------------------------------------------------------ Brain
class FixedLosses(HardMiningBrain):
    """Returns the batch's losses times a factor that is exactly 1."""

    def compute_forward(self, batch, stage):
        w = self.modules.model.weight.sum()
        return 1.0 + w - w.detach()

    def compute_objectives(self, predictions, batch, stage):
        return batch.y * predictions


def brain_with_sampler(sampler, hparams):
    torch.manual_seed(0)
    brain = FixedLosses(
        modules={"model": torch.nn.Linear(2, 1)},
        opt_class=lambda p: torch.optim.SGD(p, lr=0.1),
        hparams=hparams,
        run_opts={"device": "cpu"},
    )
    brain.live_sampler = sampler
    brain.on_stage_start(sb.Stage.TRAIN, 1)
    return brain


@pytest.mark.parametrize("policies", ["uniform", "threshold_robust"])
def test_brain_reduction_multiplies_the_weights_in(policies):
    sampler = ISBLSampler(make_dataset(), batch_size=8, seed=2, alpha=1.0, is_beta=1.0)
    rng = np.random.default_rng(4)
    sampler.observe(sampler.ids, rng.gamma(2.0, 1.0, len(LABELS)))
    sampler.set_epoch(1)
    drawn = next(iter(sampler))
    ids = [sampler.ids[i] for i in drawn]
    losses = torch.tensor(rng.gamma(2.0, 1.0, 8), dtype=torch.float32)
    losses[3] = 0.05  # below the threshold when it is on
    hparams = {}
    if policies == "threshold_robust":
        hparams = {
            "threshold_filter": ThresholdFilter(threshold=0.1),
            "reweighting": SoftmaxReweighting("robust", temperature=2.0),
        }
    brain = brain_with_sampler(sampler, hparams)
    batch = make_batch(torch.zeros(8, 1), losses, ids=ids)
    out = brain.compute_forward(batch, sb.Stage.TRAIN)
    loss = brain.compute_objectives(out, batch, sb.Stage.TRAIN)
    w = torch.tensor(sampler.batch_weights(ids), dtype=torch.float64)
    L = losses.double()
    if policies == "uniform":
        want = (w * L).sum() / w.sum()
    else:
        keep = L > 0.1
        p = torch.softmax(L[keep] / 2.0, dim=0)
        want = (w[keep] * p * L[keep]).sum() / (w[keep] * p).sum()
    loss = float(loss.detach())
    assert loss == pytest.approx(float(want), rel=1e-6)
    assert not np.allclose(w.numpy(), 1.0)  # the weights do change the loss
    assert loss != pytest.approx(float(L.mean()), rel=1e-3)


def test_brain_without_is_beta_keeps_the_plain_mean():
    sampler = ISBLSampler(make_dataset(), batch_size=8, seed=2)
    sampler.set_epoch(1)
    ids = [sampler.ids[i] for i in next(iter(sampler))]
    losses = torch.arange(1.0, 9.0)
    brain = brain_with_sampler(sampler, {})
    batch = make_batch(torch.zeros(8, 1), losses, ids=ids)
    loss = brain.compute_objectives(
        brain.compute_forward(batch, sb.Stage.TRAIN), batch, sb.Stage.TRAIN
    )
    assert torch.equal(loss.detach(), losses.mean())


def test_power_sampler_isbl_leaf_gives_weights_too():
    from hardmine.catpow import CategoryDatasetPowerSampler

    data = {f"u{i:03d}": {"lab": "ab"[i % 3 == 0], "duration": 1.0} for i in range(60)}
    dataset = DynamicItemDataset(data)
    options = {"batch_bins": 8.0, "category_field": "lab", "seed": 1, "is_beta": 1.0}
    sampler = CategoryDatasetPowerSampler(dataset, leaf="isbl", alpha=1.0, **options)
    sampler.observe(sampler.ids, np.random.default_rng(0).gamma(2.0, 1.0, 60))
    sampler.set_epoch(1)
    batch = next(iter(sampler))
    ids = [sampler.ids[i] for i in batch]
    table = sampler.loss_table
    groups = table.pool_of[batch]
    within = table.probability_of(batch)
    raw = 1.0 / (table.pool_sizes[groups] * within)
    np.testing.assert_allclose(sampler.batch_weights(ids), raw / raw.max())
    shares = np.array(list(sampler.group_probabilities.values()))
    np.testing.assert_allclose(
        sampler.batch_probabilities(ids), shares[groups] * within
    )
    uniform = CategoryDatasetPowerSampler(dataset, leaf="uniform", **options)
    assert uniform.batch_weights(ids) is None
