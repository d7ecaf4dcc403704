"""ISBL exploration: unseen examples scoring the pool's max or mean, uniform mix."""

import numpy as np
import pytest
from scipy.stats import chisquare
from speechbrain.dataio.dataset import DynamicItemDataset

from hardmine.isbl import ISBLSampler
from hardmine.loss_table import LossPowerTable
from hardmine.sumtree import MaxTree

ALPHA, EPS = 0.75, 1e-6
UNSEEN = ("initial", "mean", "max")


def weight(scores, alpha=ALPHA, eps=EPS):
    return np.power(np.asarray(scores, dtype=np.float64), alpha) + eps


def chi2_pvalue(counts, probs, min_expected=5.0):
    """Chi-square p-value of the counts against probs, pooling small cells."""
    counts = np.asarray(counts, dtype=np.float64)
    expected = np.asarray(probs, dtype=np.float64) * counts.sum()
    small = expected < min_expected
    obs = np.append(counts[~small], counts[small].sum())
    exp = np.append(expected[~small], expected[small].sum())
    if exp[-1] == 0:
        obs, exp = obs[:-1], exp[:-1]
    return chisquare(obs, exp).pvalue


def make_dataset(labels):
    data = {f"utt{i:04d}": {"lab": lab} for i, lab in enumerate(labels)}
    dataset = DynamicItemDataset(data)
    dataset.set_output_keys(["id"])
    return dataset


# ------------------------------------------------------------- max tree
@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 1001])
def test_max_tree_tracks_the_largest_leaf(size):
    rng = np.random.default_rng(size)
    tree = MaxTree(size, init=0.0)
    mirror = np.zeros(size)
    for _ in range(80):
        idx = rng.integers(size, size=int(rng.integers(1, 12)))
        values = rng.random(idx.size) * 10 * (rng.random(idx.size) > 0.3)
        tree.update(idx, values)
        for i, v in zip(idx, values, strict=True):  # the last of a repeat wins
            mirror[i] = v
        assert tree.total() == mirror.max()
    tree.set_all(np.arange(size, dtype=float))
    assert tree.total() == size - 1
    with pytest.raises(TypeError):
        tree.sample(np.array([0.5]))


# --------------------------------------------------------- unseen score
def expected_probs(table, pool, scores, scored, unseen, mode, lam=0.0):
    """The stated equation for one pool, from plain arrays."""
    members = table.members(pool)
    s = scores[members].copy()
    have = scored[members]
    if mode == "initial" or not have.any():
        s_u = 1.0
    elif mode == "max":
        s_u = s[have].max()
    else:
        s_u = s[have].mean()
    s[unseen[members]] = s_u
    w = weight(s)
    w[table.quarantined[members]] = EPS
    p = w / w.sum()
    return (1 - lam) * p + lam / members.size


@pytest.mark.parametrize("mode", ["max", "mean"])
def test_unseen_examples_score_the_pool_max_or_mean(mode):
    rng = np.random.default_rng(3)
    pool_of = rng.integers(3, size=90)
    table = LossPowerTable(pool_of, alpha=ALPHA, eps=EPS, unseen_score=mode)
    # Before any loss every pool is uniform.
    for k in range(3):
        np.testing.assert_allclose(table.probabilities(k), 1 / np.sum(pool_of == k))
    observed = rng.choice(90, 40, replace=False)
    losses = rng.gamma(2.0, 1.0, 40)
    losses[:3] = np.nan  # quarantined: neither scored nor unseen
    table.observe_indices(observed, losses)
    table.observe_indices(observed[3:6], losses[3:6] * 7)  # a score that drops out
    scores = np.asarray(table.scores)
    scored = np.asarray(table.seen) & ~np.asarray(table.quarantined)
    unseen = np.asarray(table.unseen)
    assert unseen.sum() == 50 and scored.sum() == 37
    for k in range(3):
        want = expected_probs(table, k, scores, scored, unseen, mode)
        np.testing.assert_allclose(table.probabilities(k), want, rtol=1e-12)
        members = table.members(k)
        np.testing.assert_allclose(
            table.probability_of(members), want, rtol=1e-9, atol=0
        )
    # The largest score leaves: the max follows it down (O(log N) max tree).
    top = int(np.argmax(np.where(scored & (pool_of == 0), scores, -1)))
    table.observe_indices([top], [0.01])
    scores = np.asarray(table.scores)
    want = expected_probs(table, 0, scores, scored, unseen, mode)
    np.testing.assert_allclose(table.probabilities(0), want, rtol=1e-12)


@pytest.mark.parametrize("mode", ["max", "mean"])
def test_unseen_draws_follow_the_equation(mode):
    rng = np.random.default_rng(8)
    n = 60
    table = LossPowerTable(np.zeros(n, dtype=int), unseen_score=mode)
    seen = rng.choice(n, 25, replace=False)
    losses = rng.gamma(2.0, 1.5, 25)
    table.observe_indices(seen, losses)
    probs = table.probabilities(0)
    draws = table.draw(np.zeros(100_000, dtype=int), np.random.default_rng(1))
    counts = np.bincount(draws, minlength=n)
    assert chi2_pvalue(counts, probs) > 1e-3
    # The draws reject what "initial" (unseen = 1.0) would give.
    scores = np.ones(n)
    scores[seen] = losses
    wrong = weight(scores) / weight(scores).sum()
    assert chi2_pvalue(counts, wrong) < 1e-9


def test_unseen_mass_with_every_example_unseen_or_seen():
    table = LossPowerTable(np.zeros(5, dtype=int), unseen_score="max")
    rng = np.random.default_rng(0)
    assert set(table.draw(np.zeros(500, dtype=int), rng)) == set(range(5))
    table.observe_indices(np.arange(5), [1.0, 2.0, 3.0, 4.0, 0.0])
    assert table.unseen.sum() == 0
    counts = np.bincount(table.draw(np.zeros(40_000, dtype=int), rng), minlength=5)
    probs = weight([1.0, 2.0, 3.0, 4.0, 0.0])
    assert chi2_pvalue(counts, probs / probs.sum()) > 1e-3


# ----------------------------------------------------------- uniform mix
@pytest.mark.parametrize("mode", ["initial", "max"])
def test_uniform_mix_draws_follow_the_mixture(mode):
    labels = ["a"] * 30 + ["b"] * 10
    lam = 0.2
    sampler = ISBLSampler(
        make_dataset(labels),
        batch_size=500,
        pool_field="lab",
        seed=4,
        uniform_mix=lam,
        unseen_score=mode,
    )
    rng = np.random.default_rng(2)
    losses = rng.gamma(1.0, 2.0, 40) ** 2
    observed = np.arange(0, 40, 2) if mode == "max" else np.arange(40)
    sampler.observe([sampler.ids[i] for i in observed], losses[observed])
    table = sampler.table
    scores = np.asarray(table.scores)
    scored = np.asarray(table.seen)
    unseen = np.asarray(table.unseen)
    want = np.zeros(40)
    unmixed = np.zeros(40)
    for k in range(2):
        members = table.members(k)
        share = sampler.pool_mix_probs[k]
        want[members] = share * expected_probs(
            table, k, scores, scored, unseen, mode, lam
        )
        unmixed[members] = share * expected_probs(
            table, k, scores, scored, unseen, mode
        )
    np.testing.assert_allclose(sampler.draw_probabilities(), want, rtol=1e-12)
    sampler.set_epoch(1)
    counts = np.zeros(40)
    for b in range(200):
        np.add.at(counts, sampler.draw_global_batch(b, world=1), 1)
    assert chi2_pvalue(counts, want) > 1e-3
    # The same draws reject the unmixed ISBL distribution.
    assert chi2_pvalue(counts, unmixed) < 1e-9


# -------------------------------------------------------------- coverage
def first_epoch_coverage(unseen_score, n=1200, batch=16, seed=3):
    """Epoch 1 of a 12-class model: every visit's NLL is about 2.5 (log 12)."""
    sampler = ISBLSampler(
        make_dataset([str(i % 12) for i in range(n)]),
        batch_size=batch,
        seed=seed,
        unseen_score=unseen_score,
    )
    rng = np.random.default_rng(0)
    visits = np.zeros(n)
    sampler.set_epoch(1)
    for shard in sampler:
        idx = np.array(shard)
        visits[idx] += 1
        nll = 2.5 * np.exp(-0.3 * visits[idx]) * rng.lognormal(0.0, 0.2, idx.size)
        sampler.observe([sampler.ids[i] for i in idx], nll)
    stats = sampler.stats()
    assert stats["coverage_epoch"] == pytest.approx(np.mean(visits > 0))
    return stats["coverage_epoch"]


def test_unseen_max_covers_more_than_uniform_draws_in_epoch_one():
    n = 1200
    uniform = 1 - (1 - 1 / n) ** n  # 0.632: uniform draws with replacement
    covered = {mode: first_epoch_coverage(mode, n) for mode in UNSEEN}
    assert covered["max"] >= uniform
    assert covered["initial"] < uniform - 0.05  # seen examples (L ~ 2.5 > 1) win
    assert covered["initial"] < covered["mean"] < covered["max"]


def test_coverage_epoch_resets_each_epoch_and_cumulative_does_not():
    sampler = ISBLSampler(make_dataset(["x"] * 50), batch_size=5, seed=1)
    sampler.set_epoch(1)
    list(sampler)
    first = sampler.stats()
    assert first["coverage_epoch"] == first["coverage"] > 0.5
    sampler.set_epoch(2)
    assert sampler.stats()["coverage_epoch"] == 0.0
    assert sampler.stats()["coverage"] == first["coverage"]


def test_unseen_lists_hold_exactly_the_unseen_examples_and_survive_a_reload():
    rng = np.random.default_rng(12)
    pool_of = rng.integers(3, size=300)
    table = LossPowerTable(pool_of, unseen_score="mean")
    for _ in range(40):
        idx = rng.integers(300, size=int(rng.integers(1, 20)))
        losses = rng.gamma(2.0, 1.0, idx.size)
        losses[rng.random(idx.size) < 0.05] = np.nan
        table.observe_indices(idx, losses)
        for k in range(3):
            unseen = table._unseen  # hardmine.unseen.UnseenExamples
            count = int(unseen.count[k])
            head = unseen._list[k][:count]
            unseen_local = np.flatnonzero(np.asarray(table.unseen)[table.members(k)])
            np.testing.assert_array_equal(np.sort(head), unseen_local)
            np.testing.assert_array_equal(unseen._pos[k][head], np.arange(count))
    assert 0 < table.unseen.sum() < 300
    # A reload keeps the lists' order, so the draws go on unchanged.
    other = LossPowerTable(pool_of, unseen_score="mean")
    other.load_state_dict(table.state_dict())
    pools = rng.integers(3, size=2000)
    np.testing.assert_array_equal(
        other.draw(pools, np.random.default_rng(5)),
        table.draw(pools, np.random.default_rng(5)),
    )
