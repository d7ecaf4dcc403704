"""ISBL concentration control: the sharpness a = 1/T tuned so the KL holds a capacity."""

import math

import numpy as np
import pytest
from speechbrain.dataio.dataset import DynamicItemDataset

from hardmine.catpow import CategoryDatasetPowerSampler
from hardmine.isbl import ISBLSampler
from hardmine.loss_table import LossPowerTable

LABELS = ["a"] * 1400 + ["b"] * 600


def make_dataset(labels=LABELS, duration=False):
    data = {}
    for i, lab in enumerate(labels):
        data[f"u{i:05d}"] = {"lab": lab, **({"duration": 1.0} if duration else {})}
    return DynamicItemDataset(data)


def kl_by_definition(table, shares):
    """sum_k share_k * sum_i p_i log(p_i * N_k), from the exact probabilities."""
    total = 0.0
    for k, share in enumerate(shares):
        p = table.probabilities(k)
        total += share * float(np.sum(p * np.log(p * p.size)))
    return total


class DriftingStream:
    """Lognormal losses whose spread grows: per-example decay rates differ.

    ``L_i = b_i * exp(-r_i * step) * noise`` with ``b ~ lognormal(0, 1)``,
    ``r ~ U(0, 4e-3)`` and lognormal(0, 0.3) noise per visit, so at a fixed
    power the KL of the draws from uniform keeps growing.
    """

    def __init__(self, n, seed=0):
        self.rng = np.random.default_rng(seed)
        self.base = self.rng.lognormal(0.0, 1.0, n)
        self.rate = self.rng.uniform(0.0, 4e-3, n)
        self.step = 0

    def epoch(self, sampler, epoch, measured):
        """One epoch; ``measured`` gets the KL after every batch."""
        sampler.set_epoch(epoch)
        for shard in sampler:
            self.step += 1
            idx = np.array(shard)
            noise = self.rng.lognormal(0.0, 0.3, idx.size)
            losses = self.base[idx] * np.exp(-self.rate[idx] * self.step) * noise
            sampler.observe([sampler.ids[i] for i in idx], losses)
            if sampler._leaf.controller is not None:
                measured.append(sampler._leaf.last_kl)  # the KL of the last refresh
            else:
                measured.append(sampler.loss_table.kl_to_uniform(sampler._leaf.shares))


def test_kl_settles_within_ten_percent_of_the_capacity():
    capacity = 0.3
    sampler = ISBLSampler(
        make_dataset(), 32, pool_field="lab", seed=1, capacity=capacity, alpha=0.75
    )
    assert sampler._leaf.refresh_every == 8  # max(8, ceil(2000 / 2048))
    stream, measured = DriftingStream(len(LABELS)), []
    for epoch in range(1, 21):  # 63 batches, about 8 controller steps each
        stream.epoch(sampler, epoch, measured)
    late = np.array(measured[-5 * 63 :])  # the refreshes of the last 5 epochs
    assert np.all(np.abs(late / capacity - 1) < 0.10)
    assert late.mean() == pytest.approx(capacity, rel=0.03)
    # The reported KL is the KL of the draws, by definition.
    stats = sampler.stats()
    assert stats["capacity_kl"] == measured[-1]
    exact = kl_by_definition(sampler.table, sampler.pool_mix_probs)
    assert sampler.table.kl_to_uniform(sampler.pool_mix_probs) == pytest.approx(exact)
    assert stats["sharpness"] == sampler.table.alpha != 0.75


def test_without_the_controller_the_same_stream_drifts_away():
    capacity = 0.3
    fixed = ISBLSampler(make_dataset(), 32, pool_field="lab", seed=1, alpha=0.75)
    stream, measured = DriftingStream(len(LABELS)), []
    for epoch in range(1, 16):
        stream.epoch(fixed, epoch, measured)
    # With alpha fixed, the growing spread of the losses drives the KL far
    # from where the controller holds it.
    assert abs(np.mean(measured[-63:]) / capacity - 1) > 0.25


def test_sharpness_moves_the_right_way_and_only_on_the_cadence():
    n = 400
    sampler = ISBLSampler(
        make_dataset(["x"] * n), 16, seed=2, capacity=0.05, refresh_every=3, alpha=1.0
    )
    rng = np.random.default_rng(0)
    alphas = []
    for _ in range(6):
        idx = rng.integers(n, size=16)
        sampler.observe([sampler.ids[i] for i in idx], rng.lognormal(0, 1.5, 16))
        alphas.append(sampler.table.alpha)
    # Unchanged between refreshes; the KL is above 0.05 nats, so T grows
    # and the sharpness a = 1/T falls.
    assert alphas[0] == alphas[1] == 1.0
    assert alphas[2] < 1.0 and alphas[2] == alphas[3] == alphas[4]
    assert alphas[5] < alphas[4]
    assert sampler._leaf.controller.beta == pytest.approx(1 / alphas[5], rel=1e-6)
    default = ISBLSampler(make_dataset(["x"] * 50_000), 16, capacity=0.5)
    assert default._leaf.refresh_every == math.ceil(50_000 / 2048)


def test_capacity_step_is_no_collective(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("the sampler's capacity step must not communicate")

    monkeypatch.setattr("hardmine.distributed.sum_over_ranks", forbidden)
    monkeypatch.setattr("hardmine.capacity.distributed.sum_over_ranks", forbidden)
    sampler = ISBLSampler(make_dataset(["x"] * 50), 8, capacity=0.1, refresh_every=1)
    sampler.observe(sampler.ids[:8], np.arange(8.0))
    assert not math.isnan(sampler.stats()["capacity_kl"])


def test_table_kl_is_the_share_weighted_definition():
    rng = np.random.default_rng(6)
    pool_of = rng.integers(3, size=300)
    table = LossPowerTable(pool_of, alpha=1.3, unseen_score="max", uniform_mix=0.01)
    table.observe_indices(rng.choice(300, 200, replace=False), rng.gamma(1.0, 1.0, 200))
    shares = np.array([0.5, 0.3, 0.2])
    assert table.kl_to_uniform(shares) == pytest.approx(
        kl_by_definition(table, shares), rel=1e-12
    )


def test_power_sampler_isbl_leaf_holds_the_capacity_too():
    capacity = 0.2
    sampler = CategoryDatasetPowerSampler(
        make_dataset(duration=True),
        batch_bins=32.0,
        category_field="lab",
        category_upsampling_factor=0.5,
        dataset_scaling_factor=1.0,
        leaf="isbl",
        capacity=capacity,
        seed=3,
    )
    shares = np.array(list(sampler.group_probabilities.values()))
    np.testing.assert_allclose(sampler._leaf.shares, shares)
    stream, measured = DriftingStream(len(LABELS)), []
    for epoch in range(1, 13):
        stream.epoch(sampler, epoch, measured)
    late = np.array(measured[-3 * 60 :])
    assert np.all(np.abs(late / capacity - 1) < 0.10)
    assert sampler.loss_table.kl_to_uniform(shares) == pytest.approx(
        kl_by_definition(sampler.loss_table, shares)
    )
