"""SumTree and FlatSum against a brute-force cumulative-sum reference."""

import numpy as np
import pytest
from scipy.stats import chisquare

from hardmine.sumtree import FLAT_MAX, FlatSum, SumTree, weight_tree

KINDS = pytest.mark.parametrize("kind", [SumTree, FlatSum])


def reference_pick(values, u):
    """Leaf picked by inverse-CDF search on the plain cumulative sum."""
    cdf = np.cumsum(values)
    return np.searchsorted(cdf, u * cdf[-1], side="right")


def random_values(rng, n):
    kind = rng.integers(4, size=n)
    values = rng.random(n) * 10
    values[kind == 0] = 0.0
    values[kind == 1] = rng.random(np.count_nonzero(kind == 1)) * 1e-6
    return values


@KINDS
@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 8, 33, 1000, 1537])
def test_random_updates_match_reference(kind, size):
    rng = np.random.default_rng(size)
    tree = kind(size, init=1.0)
    mirror = np.ones(size)
    for _ in range(60):
        batch = int(rng.integers(1, 20))
        idx = rng.integers(size, size=batch)
        vals = random_values(rng, batch)
        tree.update(idx, vals)
        # Repeated indices: the last value wins.
        for i, v in zip(idx, vals, strict=True):
            mirror[i] = v
        if mirror.sum() == 0:
            mirror[0] = 1.0
            tree.update([0], [1.0])
        np.testing.assert_array_equal(tree.values, mirror)
        assert tree.total() == pytest.approx(mirror.sum(), rel=1e-12, abs=0)
        u = rng.random(200)
        got = tree.sample(u)
        want = reference_pick(mirror, u)
        assert np.all(mirror[got] > 0), "a zero leaf was drawn"
        mismatch = got != want
        if mismatch.any():
            # Only allowed exactly on a CDF boundary, up to rounding.
            cdf = np.cumsum(mirror)
            gap = np.abs(cdf[np.minimum(got, want)][mismatch] - u[mismatch] * cdf[-1])
            assert np.all(gap <= 1e-9 * cdf[-1])


def test_no_drift_after_many_updates():
    rng = np.random.default_rng(7)
    size = 3001
    tree = SumTree(size)
    for _ in range(20000):
        idx = rng.integers(size, size=16)
        tree.update(idx, rng.random(16) * 10.0 ** rng.integers(-8, 9))
    fresh = SumTree(size)
    fresh.set_all(tree.values)
    # Ancestors are recomputed from their children, so the tree is bit-for-bit
    # the one built from scratch on the same leaves.
    assert len(tree._levels) == len(fresh._levels)
    for mine, ref in zip(tree._levels, fresh._levels, strict=True):
        np.testing.assert_array_equal(mine, ref)


@KINDS
def test_sampling_frequencies_chi_square(kind):
    rng = np.random.default_rng(3)
    values = np.array([0.0, 1.0, 2.5, 0.0, 7.0, 0.5, 3.0, 0.0, 1.0, 4.0, 2.0])
    tree = kind(values.size, init=0.0)
    tree.update(np.arange(values.size), values)
    draws = tree.sample(rng.random(200_000))
    counts = np.bincount(draws, minlength=values.size)
    assert np.all(counts[values == 0] == 0)
    live = values > 0
    expected = values[live] / values.sum() * draws.size
    assert chisquare(counts[live], expected).pvalue > 1e-3
    # The same counts are far from a uniform draw: the test has power.
    flat = np.full(live.sum(), draws.size / live.sum())
    assert chisquare(counts[live], flat).pvalue < 1e-12


@KINDS
def test_huge_and_tiny_values(kind):
    tree = kind(4, init=1e-6)
    tree.update([2], [1e300])
    assert tree.total() == pytest.approx(1e300)
    draws = tree.sample(np.linspace(1e-3, 1, 1000, endpoint=False))
    assert set(draws.tolist()) == {2}
    # u at the very top of the range still lands on a leaf with mass.
    assert tree.sample(np.array([np.nextafter(1.0, 0.0)])).tolist() == [2]


@KINDS
def test_zero_leaves_are_never_drawn_at_boundaries(kind):
    tree = kind(6, init=0.0)
    tree.update([1, 4], [1.0, 1.0])
    u = np.array([0.0, 0.5, np.nextafter(0.5, 0), np.nextafter(1.0, 0)])
    assert tree.sample(u).tolist() == [1, 4, 1, 4]


@KINDS
def test_size_one_and_shape(kind):
    tree = kind(1, init=2.0)
    assert tree.total() == 2.0
    assert tree.sample(np.zeros((2, 3))).shape == (2, 3)
    assert np.all(tree.sample(np.random.default_rng(0).random(50)) == 0)


@KINDS
def test_bad_input(kind):
    with pytest.raises(ValueError, match="size"):
        kind(0)
    with pytest.raises(ValueError, match="init"):
        kind(3, init=-1.0)
    tree = kind(3)
    with pytest.raises(ValueError, match="finite"):
        tree.update([0], [np.nan])
    with pytest.raises(ValueError, match="finite"):
        tree.update([0], [-1.0])
    with pytest.raises(IndexError):
        tree.update([3], [1.0])
    with pytest.raises(ValueError, match="indices"):
        tree.update([0, 1], [1.0])
    tree.update([0, 1, 2], [0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="zero"):
        tree.sample([0.5])


def test_flat_and_tree_draw_the_same_leaves():
    # The loss table switches structure by size: the same numbers must give
    # the same draws, so a run does not depend on which one it got.
    rng = np.random.default_rng(11)
    values = random_values(rng, 5000)
    tree, flat = SumTree(values.size, init=0.0), FlatSum(values.size, init=0.0)
    for structure in (tree, flat):
        structure.set_all(values)
    for _ in range(20):
        idx = rng.integers(values.size, size=64)
        new = random_values(rng, 64)
        tree.update(idx, new)
        flat.update(idx, new)
        u = rng.random(512)
        np.testing.assert_array_equal(tree.sample(u), flat.sample(u))
        assert flat.total() == pytest.approx(tree.total(), rel=1e-12)


def test_unchecked_update_writes_as_given():
    for kind in (SumTree, FlatSum):
        tree = kind(4, init=1.0)
        tree.update(np.array([2, 0]), np.array([3.0, 0.0]), check=False)
        assert tree.values.tolist() == [0.0, 1.0, 3.0, 1.0]
        assert tree.total() == 5.0 and tree.sample(np.array([0.5])).tolist() == [2]


def test_weight_tree_picks_by_size():
    assert isinstance(weight_tree(FLAT_MAX), FlatSum)
    assert isinstance(weight_tree(FLAT_MAX + 1), SumTree)
    assert weight_tree(3, init=2.0).total() == 6.0


@pytest.mark.parametrize("size", [1, 1000, FLAT_MAX])
def test_flat_prefix_sum_adds_in_numpy_order(size):
    # FlatSum's prefix sum (torch.cumsum) must equal numpy's sequential one
    # bit for bit: the same u then draws the same leaf whichever is used.
    rng = np.random.default_rng(size)
    values = rng.random(size) ** 4 * 10.0 ** rng.integers(-6, 6, size)
    flat = FlatSum(size)
    flat.set_all(values)
    expected = np.cumsum(values)
    assert flat.total() == float(expected[-1])
    u = rng.random(4096)
    np.testing.assert_array_equal(
        flat.sample(u),
        np.minimum(np.searchsorted(expected, u * expected[-1], "right"), size - 1),
    )
