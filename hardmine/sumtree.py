"""A vectorised sum tree: weighted draws and weight updates in O(log N).

The tree is stored level by level. Level 0 holds the leaf values, level
``l + 1`` holds the pairwise sums of level ``l`` (node ``j`` of level ``l + 1``
is the sum of nodes ``2j`` and ``2j + 1`` of level ``l``), and the last level
holds the single total. Every level except the last has even length: an odd
level gets one trailing zero, which is never drawn. Memory is about twice the
number of leaves, whatever the size.

Both operations work on a whole batch at once, with one numpy operation per
level:

* :meth:`SumTree.update` writes new leaf values and recomputes only the
  ancestors of the touched leaves, each as the sum of its two children. Sums
  are never adjusted by differences, so rounding errors cannot accumulate
  over millions of updates.
* :meth:`SumTree.sample` turns uniform numbers ``u`` in ``[0, 1)`` into leaf
  indices by descending from the root, going right when the remaining mass
  ``u * total`` is at least the left child's sum. A leaf is returned with
  probability ``value / total``; a leaf of value zero is never returned.

:class:`MaxTree` keeps the same levels with the maximum of two children
instead of their sum: the largest leaf in O(1), kept up to date in O(log N)
per batch of updates (the loss table's largest score of a pool).

:class:`FlatSum` offers the same interface for small sizes: updates write
the leaves only, and a draw searches a prefix sum rebuilt from them. O(N) per
batch of draws, but a few vectorised passes instead of one numpy call per
level, so it is the faster of the two up to a few ten thousand leaves
(``benchmarks/sampler_bench.py``); :func:`weight_tree` picks between them.

Example
-------
>>> import numpy as np
>>> tree = SumTree(5, init=1.0)
>>> tree.update(np.array([3]), np.array([5.0]))
>>> tree.total()
9.0
>>> tree.sample(np.array([0.0, 0.4, 0.99])).tolist()
[0, 3, 4]
"""

import numpy as np
import torch

__all__ = ["FLAT_MAX", "FlatSum", "MaxTree", "SumTree", "read_only", "weight_tree"]

#: Largest size for which :func:`weight_tree` returns a :class:`FlatSum`.
FLAT_MAX = 1 << 16


def read_only(array):
    """A view of ``array`` that cannot be written through.

    Example
    -------
    >>> import numpy as np
    >>> view = read_only(np.zeros(2))
    >>> view.flags.writeable
    False
    """
    view = array.view()
    view.flags.writeable = False
    return view


def _check_size(size, init, name):
    size = int(size)
    if size < 1:
        raise ValueError(f"{name} size must be >= 1, got {size}")
    init = float(init)
    if not np.isfinite(init) or init < 0:
        raise ValueError(f"{name} init must be finite and >= 0, got {init}")
    return size, init


def _check_values(values):
    if values.size and not (np.all(np.isfinite(values)) and values.min() >= 0):
        raise ValueError("SumTree values must be finite and >= 0")


def _last_wins(idx, values, size):
    """Checked update arguments, one entry per index (its last value)."""
    idx = np.asarray(idx, dtype=np.int64).reshape(-1)
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if idx.shape != values.shape:
        raise ValueError(
            f"SumTree.update: {idx.shape[0]} indices but {values.shape[0]} values"
        )
    if idx.size == 0:
        return idx, values
    if idx.min() < 0 or idx.max() >= size:
        raise IndexError(f"SumTree.update: index out of range [0, {size})")
    _check_values(values)
    # Keep the last occurrence of each index so the result does not depend
    # on how numpy orders repeated fancy-index assignments.
    rev_unique, rev_pos = np.unique(idx[::-1], return_index=True)
    return rev_unique, values[::-1][rev_pos]


def _set_all_values(values, size, check):
    values = np.asarray(values, dtype=np.float64)
    if values.shape != (size,):
        raise ValueError(
            f"SumTree.set_all expects {size} values, got shape {values.shape}"
        )
    if check:
        _check_values(values)
    return values


class SumTree:
    """Sum tree over ``size`` non-negative float64 leaves.

    Arguments
    ---------
    size : int
        Number of leaves (at least 1).
    init : float
        Initial value of every leaf (finite, >= 0).

    Example
    -------
    >>> import numpy as np
    >>> tree = SumTree(3, init=0.0)
    >>> tree.update(np.array([0, 2]), np.array([1.0, 3.0]))
    >>> tree.values.tolist()
    [1.0, 0.0, 3.0]
    >>> rng = np.random.default_rng(0)
    >>> draws = tree.sample(rng.random(4000))
    >>> int((draws == 1).sum()), bool(abs((draws == 2).mean() - 0.75) < 0.03)
    (0, True)
    """

    def __init__(self, size, init=1.0):
        size, init = _check_size(size, init, "SumTree")
        self.size = size
        leaves = np.zeros(size + (size % 2), dtype=np.float64)
        leaves[:size] = init
        self._levels = [leaves]
        self._build_from(0)

    @staticmethod
    def _reduce(pairs):
        """The nodes of a level from the rows (left, right) of the level below."""
        return pairs.sum(axis=1)  # exactly left + right

    _combine = staticmethod(np.add)  # a node from its two children (update)

    def _build_from(self, level):
        """Rebuild every level above ``level`` from its children."""
        del self._levels[level + 1 :]
        current = self._levels[level]
        while current.shape[0] > 1:
            sums = self._reduce(current.reshape(-1, 2))
            if sums.shape[0] > 1 and sums.shape[0] % 2:
                sums = np.append(sums, 0.0)
            self._levels.append(sums)
            current = sums

    @property
    def values(self):
        """Leaf values as a read-only view (length ``size``)."""
        return read_only(self._levels[0][: self.size])

    @property
    def depth(self):
        """Number of levels above the leaves."""
        return len(self._levels) - 1

    def total(self):
        """Sum of all leaves (float)."""
        return float(self._levels[-1][0])

    def set_all(self, values, check=True):
        """Replace every leaf at once and rebuild the tree in O(N).

        Arguments
        ---------
        values : array_like
            ``size`` finite non-negative values.
        check : bool
            Whether to check that they are (callers that know may skip it).
        """
        self._levels[0][: self.size] = _set_all_values(values, self.size, check)
        self._build_from(0)

    def update(self, idx, values, check=True):
        """Set the leaves ``idx`` to ``values`` and refresh their ancestors.

        Arguments
        ---------
        idx : array_like of int
            Leaf indices in ``[0, size)``. When an index repeats, its last
            value wins.
        values : array_like of float
            New leaf values (finite, >= 0), same length as ``idx``.
        check : bool
            False: the caller guarantees int64 arrays of distinct indices in
            range and valid values (nothing is checked or de-duplicated).
        """
        if check:
            idx, values = _last_wins(idx, values, self.size)
        if idx.size == 0:
            return
        self._levels[0][idx] = values
        nodes = idx
        for level in range(1, len(self._levels)):
            # Repeated parents are harmless: each write stores the same sum.
            child = self._levels[level - 1]
            left = child.take(nodes & -2)
            right = child.take(nodes | 1)
            nodes = nodes >> 1
            self._levels[level][nodes] = self._combine(left, right)

    def sample(self, u):
        """Map uniform numbers to leaf indices drawn with probability value/total.

        Arguments
        ---------
        u : array_like of float
            Numbers in ``[0, 1)``; one leaf is returned per number.

        Returns
        -------
        numpy.ndarray of int64
            Leaf indices, same shape as ``u``.
        """
        u = np.asarray(u, dtype=np.float64)
        shape = u.shape
        total = self.total()
        if not total > 0:
            raise ValueError("SumTree.sample: all leaves are zero")
        target = u.reshape(-1) * total
        node = np.zeros(target.shape[0], dtype=np.int64)
        for level in range(len(self._levels) - 2, -1, -1):
            child = self._levels[level]
            node <<= 1
            left = child.take(node)
            # Rounding can leave ``target`` just above the left sum while the
            # right side is empty: staying left keeps us on positive mass.
            go_right = (target >= left) & (child.take(node + 1) > 0)
            np.subtract(target, left, out=target, where=go_right)
            node += go_right
        return node.reshape(shape)


class MaxTree(SumTree):
    """The levels of a :class:`SumTree`, each node the maximum of its children.

    :meth:`total` is the largest leaf; :meth:`update` and :meth:`set_all`
    behave as in :class:`SumTree` (O(log N) per batch, O(N)). Leaves must be
    finite and ``>= 0`` (padding leaves are 0). There is no :meth:`sample`.

    Example
    -------
    >>> import numpy as np
    >>> tree = MaxTree(5, init=0.0)
    >>> tree.update(np.array([1, 3]), np.array([2.0, 7.0]))
    >>> tree.total()
    7.0
    >>> tree.update(np.array([3]), np.array([0.5]))
    >>> tree.total()
    2.0
    """

    @staticmethod
    def _reduce(pairs):
        return pairs.max(axis=1)

    _combine = staticmethod(np.maximum)

    def sample(self, u):
        """Not defined for a max tree."""
        raise TypeError("MaxTree has no sample(); use a SumTree")


class FlatSum:
    """The interface of :class:`SumTree` on a flat array, for small sizes.

    :meth:`update` writes the leaves in O(B); :meth:`total` and :meth:`sample`
    use a prefix sum rebuilt from the leaves after a change (O(N), from
    scratch each time, so rounding never accumulates). A draw is the first
    leaf whose prefix sum exceeds ``u * total``; a zero leaf adds nothing to
    the prefix sum and is never drawn.

    Example
    -------
    >>> import numpy as np
    >>> flat = FlatSum(5, init=1.0)
    >>> flat.update(np.array([3]), np.array([5.0]))
    >>> flat.total()
    9.0
    >>> flat.sample(np.array([0.0, 0.4, 0.99])).tolist()
    [0, 3, 4]
    """

    def __init__(self, size, init=1.0):
        self.size, init = _check_size(size, init, "FlatSum")
        self._leaves = np.full(self.size, init, dtype=np.float64)
        self._prefix = None

    @property
    def values(self):
        """Leaf values as a read-only view."""
        return read_only(self._leaves)

    def _cumulative(self):
        if self._prefix is None:
            # torch's cumsum adds in the same order as numpy's (bit-identical
            # sums) in about a third of the time on CPU.
            self._prefix = torch.cumsum(torch.from_numpy(self._leaves), 0).numpy()
        return self._prefix

    def total(self):
        """Sum of all leaves (float)."""
        return float(self._cumulative()[-1])

    def set_all(self, values, check=True):
        """Replace every leaf at once (see :meth:`SumTree.set_all`)."""
        self._leaves[:] = _set_all_values(values, self.size, check)
        self._prefix = None

    def update(self, idx, values, check=True):
        """Set the leaves ``idx`` to ``values`` (see :meth:`SumTree.update`)."""
        if check:
            idx, values = _last_wins(idx, values, self.size)
        if idx.size:
            self._leaves[idx] = values
            self._prefix = None

    def sample(self, u):
        """Leaf indices drawn with probability value/total (see :meth:`SumTree.sample`)."""
        u = np.asarray(u, dtype=np.float64)
        prefix = self._cumulative()
        total = float(prefix[-1])
        if not total > 0:
            raise ValueError("SumTree.sample: all leaves are zero")
        node = np.searchsorted(prefix, u.reshape(-1) * total, side="right")
        over = node >= self.size  # u * total rounded up to the total
        if over.any():
            node[over] = np.flatnonzero(self._leaves)[-1]
        return node.reshape(u.shape)


def weight_tree(size, init=1.0):
    """A :class:`FlatSum` up to :data:`FLAT_MAX` leaves, else a :class:`SumTree`.

    Example
    -------
    >>> type(weight_tree(10)).__name__, type(weight_tree(FLAT_MAX + 1)).__name__
    ('FlatSum', 'SumTree')
    """
    return (FlatSum if int(size) <= FLAT_MAX else SumTree)(size, init=init)
