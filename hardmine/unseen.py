"""Exploration of unseen examples: who is unseen, and what an unseen example scores.

With ``unseen_score`` ``"max"`` or ``"mean"`` a :class:`~hardmine.loss_table.LossPowerTable`
keeps its never-observed examples out of its weight trees and gives each of
them the largest, or the mean, score of the *scored* examples of its pool
(seen, not quarantined). :class:`UnseenExamples` holds what that needs, per
pool, with nothing O(N) per batch:

* an indexable list of the pool's local indices whose first ``count[k]``
  entries are the unseen examples, and the position of every unseen example
  in it (-1 once seen), so that a uniform draw among the unseen is one
  lookup and a batch of first observations leaves by swap-removal in
  O(batch);
* a tree over the scored examples' scores: a :class:`~hardmine.sumtree.MaxTree`
  for ``"max"``, a :class:`~hardmine.sumtree.SumTree` for ``"mean"``, and
  the number of scored examples.

Example
-------
>>> import numpy as np
>>> unseen = UnseenExamples([4], "max")
>>> unseen.score(0)  # no scored example yet
1.0
>>> unseen.observed(0, np.array([1, 3]), np.array([2.0, 5.0]), np.array([1, 1]))
>>> unseen.score(0), int(unseen.count[0]), unseen.mask(0).tolist()
(5.0, 2, [True, False, True, False])
>>> unseen.slot(0, np.array([0.0, 0.99])).tolist()  # uniform among 0 and 2
[0, 2]
"""

import numpy as np

from hardmine.sumtree import MaxTree, SumTree

__all__ = ["UnseenExamples"]


class UnseenExamples:
    """Unseen lists and scored-example trees of every pool (see the module).

    Arguments
    ---------
    pool_sizes : sequence of int
        Number of examples in each pool; every example starts unseen.
    rule : str
        ``"max"`` or ``"mean"``: what an unseen example scores.
    """

    def __init__(self, pool_sizes, rule):
        if rule not in ("max", "mean"):
            raise ValueError(f"rule must be 'max' or 'mean', got {rule!r}")
        self.rule = rule
        tree = MaxTree if rule == "max" else SumTree
        sizes = [int(n) for n in pool_sizes]
        self._list = [np.arange(n) for n in sizes]
        self._pos = [np.arange(n) for n in sizes]
        #: Number of unseen examples per pool.
        self.count = np.array(sizes, dtype=np.int64)
        self._trees = [tree(n, init=0.0) for n in sizes]
        self._n_scored = np.zeros(len(sizes), dtype=np.int64)

    def score(self, pool):
        """The score of an unseen example of ``pool`` (1.0 while none is scored)."""
        n_scored = int(self._n_scored[pool])
        if n_scored == 0:
            return 1.0
        score = self._trees[pool].total()  # the largest score for a MaxTree
        return score / n_scored if self.rule == "mean" else score

    def mask(self, pool):
        """Boolean mask over the pool's local indices: unseen."""
        return self._pos[pool] >= 0

    def is_unseen(self, pool, local):
        """Whether each of the local indices ``local`` is unseen."""
        return self._pos[pool][local] >= 0

    def slot(self, pool, share):
        """The unseen examples (local indices) at fractions ``share`` in [0, 1) of the list."""
        count = int(self.count[pool])
        at = np.minimum((share * count).astype(np.int64), count - 1)
        return self._list[pool][at]

    def observed(self, pool, local, scored, change):
        """First and later observations of the distinct local indices ``local``.

        ``scored``: each example's score if it is now scored, else 0;
        ``change``: +1 for an example that became scored, -1 for one that
        stopped being scored (quarantined), 0 otherwise. Observed examples
        leave the unseen list.
        """
        self._trees[pool].update(local, scored)
        self._n_scored[pool] += int(change.sum())
        leaving = local[self._pos[pool][local] >= 0]
        if leaving.size:
            self._remove(pool, leaving)

    def set_scores(self, pool, local, scores):
        """New scores of scored examples (their count unchanged)."""
        self._trees[pool].update(local, scores)

    def set_all_scores(self, pool, values):
        """Every example's score in the pool's tree at once (0 = not scored)."""
        self._trees[pool].set_all(values)

    def _remove(self, pool, local):
        """Swap-remove the distinct unseen examples ``local`` from the pool's list.

        The unseen examples in the tail that the shorter list no longer
        covers move, in list order, into the vacated positions in front of
        it, in increasing order: O(len(local)), and the same on every rank.
        """
        order, position = self._list[pool], self._pos[pool]
        count = int(self.count[pool])
        new_count = count - local.shape[0]
        vacated = position[local]
        position[local] = -1
        tail = order[new_count:count]
        movers = tail[position[tail] >= 0]
        holes = np.sort(vacated[vacated < new_count])
        order[holes] = movers
        position[movers] = holes
        self.count[pool] = new_count

    def rebuild(self, unseen, scored, scores, order=None):
        """Rebuild every pool's list and tree in O(N).

        Arguments
        ---------
        unseen : list of numpy.ndarray of bool
            Per pool, which local indices are unseen.
        scored : list of numpy.ndarray of bool
            Per pool, which local indices are scored (seen, not quarantined).
        scores : list of numpy.ndarray
            Per pool, each example's score (used where scored).
        order : numpy.ndarray, optional
            A saved :meth:`order`; used where its head holds exactly the
            pool's unseen examples, else a pool's list takes its unseen
            examples in increasing order.
        """
        start = 0
        for pool, mask in enumerate(unseen):
            size = mask.shape[0]
            count = int(np.count_nonzero(mask))
            listed = None if order is None else order[start : start + size]
            start += size
            if listed is None or not np.array_equal(
                np.sort(listed[:count]), np.flatnonzero(mask)
            ):
                listed = np.concatenate([np.flatnonzero(mask), np.flatnonzero(~mask)])
            self._list[pool] = np.asarray(listed, dtype=np.int64).copy()
            position = np.full(size, -1, dtype=np.int64)
            position[self._list[pool][:count]] = np.arange(count)
            self._pos[pool] = position
            self.count[pool] = count
            self._trees[pool].set_all(np.where(scored[pool], scores[pool], 0.0))
            self._n_scored[pool] = int(np.count_nonzero(scored[pool]))

    def order(self):
        """The pools' lists, concatenated (what :meth:`rebuild` takes back)."""
        return np.concatenate(self._list)
