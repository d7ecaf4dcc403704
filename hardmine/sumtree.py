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

__all__ = ["MaxTree", "SumTree", "read_only"]


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
        size = int(size)
        if size < 1:
            raise ValueError(f"SumTree size must be >= 1, got {size}")
        init = float(init)
        if not np.isfinite(init) or init < 0:
            raise ValueError(f"SumTree init must be finite and >= 0, got {init}")
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
        values = np.asarray(values, dtype=np.float64)
        if values.shape != (self.size,):
            raise ValueError(
                f"SumTree.set_all expects {self.size} values, got shape {values.shape}"
            )
        if check:
            self._check_values(values)
        self._levels[0][: self.size] = values
        self._build_from(0)

    @staticmethod
    def _check_values(values):
        if values.size and not (np.all(np.isfinite(values)) and values.min() >= 0):
            raise ValueError("SumTree values must be finite and >= 0")

    def update(self, idx, values):
        """Set the leaves ``idx`` to ``values`` and refresh their ancestors.

        Arguments
        ---------
        idx : array_like of int
            Leaf indices in ``[0, size)``. When an index repeats, its last
            value wins.
        values : array_like of float
            New leaf values (finite, >= 0), same length as ``idx``.
        """
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        values = np.asarray(values, dtype=np.float64).reshape(-1)
        if idx.shape != values.shape:
            raise ValueError(
                f"SumTree.update: {idx.shape[0]} indices but {values.shape[0]} values"
            )
        if idx.size == 0:
            return
        if idx.min() < 0 or idx.max() >= self.size:
            raise IndexError(f"SumTree.update: index out of range [0, {self.size})")
        self._check_values(values)
        # Keep the last occurrence of each index so the result does not depend
        # on how numpy orders repeated fancy-index assignments.
        rev_unique, rev_pos = np.unique(idx[::-1], return_index=True)
        idx = rev_unique
        values = values[::-1][rev_pos]
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
