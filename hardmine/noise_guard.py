"""Noise guard: examples that stay in the top tail of their pool are capped.

Mislabelled or corrupt clips keep a high loss however long the model trains,
so a loss-power sampler would draw them ever more often. The guard of a
:class:`~hardmine.loss_table.LossPowerTable` (``score_clip_quantile`` ``q``,
``persistent_visits`` ``k``) follows every example's visits:

* :meth:`NoiseGuard.refresh` sets each pool's threshold ``t_k`` to the
  ``q``-quantile of its scored examples' scores (numpy's linear
  interpolation; ``inf`` below 2 scored examples, so nothing is flagged
  before the first refresh);
* a finite visit whose score-to-be is above ``t_k`` extends the example's
  streak, any other finite visit resets it, a non-finite one leaves it;
* an example whose streak reaches ``k`` is *persistently hard*, and its
  score is capped at ``t_k`` (:meth:`NoiseGuard.cap`), also when a refresh
  lowers ``t_k``; a streak broken by a visit below ``t_k`` lifts the flag;
* :attr:`NoiseGuard.ever` keeps every example that has been flagged at any
  point of the run. It does not act on the draws: it is for reports, where a
  mislabelled clip that the model has since memorised (its loss fell below
  ``t_k`` on one visit, which lifted its flag) still shows.

Example
-------
>>> import numpy as np
>>> guard = NoiseGuard(size=4, n_pools=1, quantile=0.5, visits=2)
>>> scores = np.array([1.0, 2.0, 3.0, 4.0])
>>> guard.refresh(scores, np.ones(4, bool), np.zeros(4, int)).tolist()  # none flagged yet
[]
>>> float(guard.threshold[0])
2.5
>>> idx, pools, ok = np.array([3]), np.array([0]), np.array([True])
>>> guard.visit(idx, pools, np.array([9.0]), ok, np.array([9.0])).tolist()  # streak 1
[9.0]
>>> guard.visit(idx, pools, np.array([9.0]), ok, np.array([9.0])).tolist()  # flagged
[2.5]
>>> guard.flagged.tolist()
[False, False, False, True]
>>> _ = guard.visit(idx, pools, np.array([1.0]), ok, np.array([1.0]))  # lifted
>>> guard.flagged.tolist(), guard.ever.tolist()
([False, False, False, False], [False, False, False, True])
"""

import numpy as np

__all__ = ["NoiseGuard"]


class NoiseGuard:
    """Streaks, flags and per-pool thresholds of the noise guard (see the module).

    Arguments
    ---------
    size : int
        Number of examples.
    n_pools : int
        Number of pools.
    quantile : float or None
        ``q`` in (0, 1); None keeps the guard off (its arrays stay empty of
        flags and :meth:`refresh` does nothing).
    visits : int
        ``k``: consecutive visits above the threshold that flag an example.
    """

    def __init__(self, size, n_pools, quantile, visits):
        self.quantile, self.visits = quantile, int(visits)
        self.streak = np.zeros(size, dtype=np.int64)
        self.flagged = np.zeros(size, dtype=bool)
        self.ever = np.zeros(size, dtype=bool)
        self.threshold = np.full(n_pools, np.inf)

    @property
    def active(self):
        return self.quantile is not None

    def visit(self, idx, pools, hard, finite, new_scores):
        """Record visits of the distinct examples ``idx``; their scores, capped.

        ``hard``: each visit's score-to-be before any moving average (what
        the streak compares with ``t_k``); ``new_scores``: the scores about
        to be stored, capped here for flagged examples.
        """
        threshold = self.threshold[pools]
        streak = self.streak[idx]
        streak = np.where(finite, np.where(hard > threshold, streak + 1, 0), streak)
        flagged = np.where(finite, streak >= self.visits, self.flagged[idx])
        self.streak[idx] = streak
        self.flagged[idx] = flagged
        self.ever[idx] |= flagged
        return np.where(finite & flagged, np.minimum(new_scores, threshold), new_scores)

    def cap(self, idx, pools, scores):
        """``scores`` of the examples ``idx``, capped at ``t_k`` where flagged."""
        if not self.active:
            return scores
        return np.where(
            self.flagged[idx], np.minimum(scores, self.threshold[pools]), scores
        )

    def refresh(self, scores, scored, pool_of, members=None):
        """New thresholds from the scored examples' ``scores``; no-op when off.

        ``members``: the example indices of every pool (else found from
        ``pool_of``).

        Returns
        -------
        numpy.ndarray or None
            The examples whose score is over their new cap (flagged, scored),
            for the table to lower to :attr:`threshold` of their pool.
        """
        if not self.active:
            return None
        if members is None:
            members = [np.flatnonzero(pool_of == k) for k in range(len(self.threshold))]
        for pool, inside in enumerate(members):
            values = scores[inside[scored[inside]]]
            self.threshold[pool] = (
                float(np.quantile(values, self.quantile))
                if values.shape[0] >= 2
                else np.inf
            )
        return np.flatnonzero(
            self.flagged & scored & (scores > self.threshold[pool_of])
        )

    def state(self):
        return {
            "streak": self.streak.copy(),
            "persistently_hard": self.flagged.copy(),
            "ever_persistently_hard": self.ever.copy(),
            "clip_threshold": self.threshold.copy(),
        }

    def load(self, state):
        """Restore :meth:`state`; entries missing from older states mean none."""
        streak = state.get("streak")
        self.streak[:] = 0 if streak is None else np.asarray(streak).reshape(-1)
        flagged = state.get("persistently_hard")
        self.flagged[:] = (
            False if flagged is None else np.asarray(flagged, dtype=bool).reshape(-1)
        )
        ever = state.get("ever_persistently_hard")
        # Saved before the record was kept: the flags of then are all it knows.
        self.ever[:] = (
            self.flagged if ever is None else np.asarray(ever, dtype=bool).reshape(-1)
        )
        threshold = state.get("clip_threshold")
        self.threshold[:] = (
            np.inf
            if threshold is None
            else np.asarray(threshold, dtype=np.float64).reshape(-1)
        )

    def fingerprint(self, digest):
        """Feed the guard's state to a hashlib ``digest``."""
        for array in (self.streak, self.flagged, self.ever, self.threshold):
            digest.update(np.ascontiguousarray(array).tobytes())
