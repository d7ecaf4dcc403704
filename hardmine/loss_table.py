"""Per-example hardness scores and loss-power draws within pools.

Every example ``i`` belongs to one pool ``C_k`` and carries a hardness score
``L_i``. Within its pool it is drawn with probability

    P(i | C_k) = (L_i ** alpha + eps) / sum_{j in C_k} (L_j ** alpha + eps)

Scores start at 1.0 (uniform draws) and are replaced by the example's loss
each time it is observed, after an optional hardness transform and an
optional exponential moving average. One :class:`~hardmine.sumtree.SumTree`
per pool holds the weights ``L ** alpha + eps``, so an update of B examples
and a draw of B examples each cost O(B log N).

Broken examples: a non-finite loss (NaN or inf, e.g. from unreadable audio)
puts the example in quarantine. Its score becomes 0 and its weight exactly
``eps``, so it is drawn only as often as a perfectly learned example (with
``alpha = 0`` too, where every other example weighs ``1 + eps``). A later
finite loss releases it: the score becomes that loss as is, without mixing
in the quarantine placeholder through the moving average.

With a moving average (``momentum``), an example's first finite loss likewise
replaces the initial score 1.0 instead of being blended with it: the initial
score stands for "not seen yet", not for a loss, so a −20 dB example scores
0.01 after its first visit, not 0.9·1 + 0.1·0.01.

Example
-------
>>> import numpy as np
>>> table = LossPowerTable(np.array([0, 0, 1, 1]), alpha=1.0, eps=1e-6)
>>> table.observe_indices(np.array([0, 1]), np.array([3.0, 1.0]))
>>> table.probabilities(0).round(3).tolist()
[0.75, 0.25]
>>> rng = np.random.default_rng(0)
>>> picks = table.draw(np.array([1, 1, 0]), rng)
>>> bool(set(picks[:2]) <= {2, 3}) and int(picks[2]) in (0, 1)
True
"""

import hashlib
import math

import numpy as np

from hardmine.sumtree import SumTree, read_only
from hardmine.validation import ConfigError, check_choice, check_number

__all__ = ["LossPowerTable", "TRANSFORMS", "MAX_WEIGHT", "check_options"]

#: Hardness transforms applied to a raw loss before it becomes a score.
TRANSFORMS = ("identity", "db_to_power", "exp")

#: Cap on ``L ** alpha`` so that pool totals stay finite for any loss.
MAX_WEIGHT = 1e300

_MAX_SCORE = np.finfo(np.float64).max


def _pool_checksum(pool_of):
    return hashlib.sha1(np.ascontiguousarray(pool_of, dtype=np.int64)).hexdigest()


def check_options(alpha, eps, transform, momentum):
    """Check the options of a :class:`LossPowerTable` (see there).

    Returns
    -------
    dict
        ``alpha``, ``eps``, ``transform`` and ``momentum``, checked.

    Raises
    ------
    ConfigError
        Naming the first field with a bad value.

    Example
    -------
    >>> check_options(1, 1e-6, "exp", None)
    {'alpha': 1.0, 'eps': 1e-06, 'transform': 'exp', 'momentum': None}
    """
    alpha = check_number("alpha", alpha, minimum=0.0)
    eps = check_number("eps", eps, minimum=0.0, strict=True)
    if not math.isfinite(alpha):
        raise ConfigError("alpha", f"must be finite, got {alpha}")
    if not math.isfinite(eps):
        raise ConfigError("eps", f"must be finite, got {eps}")
    transform = check_choice("transform", transform, TRANSFORMS)
    if momentum is not None:
        momentum = check_number("momentum", momentum, minimum=0.0, maximum=1.0)
        if momentum >= 1.0:
            raise ConfigError("momentum", "must be < 1 (1 would never update)")
    return {"alpha": alpha, "eps": eps, "transform": transform, "momentum": momentum}


class LossPowerTable:
    """Hardness scores with loss-power sampling inside each pool.

    Arguments
    ---------
    pool_of : array_like of int
        Pool index of every example (values ``0 .. K-1``, each pool non-empty).
    alpha : float
        Power applied to the score (>= 0). 0 gives uniform draws within a pool,
        1 draws in proportion to the score.
    eps : float
        Floor added to every weight (> 0), so no example is ever unreachable.
    transform : str
        How a loss becomes a score: ``"identity"`` (the loss must be >= 0),
        ``"db_to_power"`` (``10 ** (loss / 10)``, for losses in decibels such
        as negative SI-SNR) or ``"exp"`` (``exp(loss)``, for log-domain losses).
        Scores saturate at the largest float instead of overflowing.
    momentum : float or None
        None replaces the score by the newest loss. A value ``m`` in
        ``[0, 1)`` keeps a moving average ``L <- m * L + (1 - m) * new``
        from the example's second finite loss on (the first replaces the
        initial score, as after quarantine).
    ids : sequence of str, optional
        Example names, used in error messages.

    Example
    -------
    >>> import numpy as np
    >>> table = LossPowerTable(np.zeros(3, dtype=int), alpha=0.5, eps=1e-6)
    >>> table.observe_indices(np.array([2]), np.array([4.0]))
    >>> w = 2.0 + 1e-6
    >>> bool(abs(table.probabilities(0)[2] - w / (w + 2 * (1 + 1e-6))) < 1e-12)
    True
    >>> table.observe_indices(np.array([1]), np.array([float("nan")]))
    >>> table.n_quarantined, table.scores.tolist()
    (1, [1.0, 0.0, 4.0])
    """

    def __init__(
        self,
        pool_of,
        alpha=0.75,
        eps=1e-6,
        transform="identity",
        momentum=None,
        ids=None,
    ):
        options = check_options(alpha, eps, transform, momentum)
        self.alpha, self.eps = options["alpha"], options["eps"]
        self.transform, self.momentum = options["transform"], options["momentum"]

        pool_of = np.asarray(pool_of)
        if pool_of.ndim != 1 or pool_of.shape[0] == 0:
            raise ValueError("pool_of must be a non-empty 1-D array of pool indices")
        if not np.issubdtype(pool_of.dtype, np.integer):
            raise ValueError(f"pool_of must hold integers, got dtype {pool_of.dtype}")
        if pool_of.min() < 0:
            raise ValueError("pool_of must hold pool indices >= 0")
        self.pool_of = pool_of.astype(np.int64)
        self.size = int(self.pool_of.shape[0])
        counts = np.bincount(self.pool_of)
        empty = np.flatnonzero(counts == 0)
        if empty.size:
            raise ValueError(f"pool {int(empty[0])} has no examples")
        self.n_pools = int(counts.shape[0])
        order = np.argsort(self.pool_of, kind="stable")
        bounds = np.concatenate([[0], np.cumsum(counts)])
        self._members = [order[bounds[k] : bounds[k + 1]] for k in range(self.n_pools)]
        self._local = np.empty(self.size, dtype=np.int64)
        for members in self._members:
            self._local[members] = np.arange(members.shape[0])

        if ids is not None:
            ids = list(ids)
            if len(ids) != self.size:
                raise ValueError(f"ids has {len(ids)} names for {self.size} examples")
        self.ids = ids

        self._scores = np.ones(self.size, dtype=np.float64)
        self._quarantined = np.zeros(self.size, dtype=bool)
        self._seen = np.zeros(self.size, dtype=bool)  # has had a finite loss
        self._n_quarantined = 0
        self.n_observations = 0
        start = self._weights(np.ones(1), np.zeros(1, dtype=bool))[0]
        self._trees = [SumTree(m.shape[0], init=start) for m in self._members]

    # ------------------------------------------------------------------ views
    @property
    def scores(self):
        """Latest hardness score ``L`` of every example (read-only view)."""
        return read_only(self._scores)

    def digest(self):
        """A short fingerprint of the scores and quarantine flags.

        Ranks of a distributed run compare digests to prove their tables agree.
        """
        h = hashlib.sha1(np.ascontiguousarray(self._scores).tobytes())
        h.update(np.ascontiguousarray(self._quarantined).tobytes())
        h.update(np.ascontiguousarray(self._seen).tobytes())
        return h.hexdigest()[:16]

    @property
    def quarantined(self):
        """Boolean mask of the examples currently in quarantine (read-only)."""
        return read_only(self._quarantined)

    @property
    def n_quarantined(self):
        """Number of examples currently in quarantine."""
        return self._n_quarantined

    @property
    def pool_sizes(self):
        """Number of examples in each pool."""
        return np.array([m.shape[0] for m in self._members], dtype=np.int64)

    def members(self, pool):
        """Example indices of ``pool``, in increasing order."""
        return self._members[pool]

    def pool_weight(self, pool):
        """Sum of the weights ``L ** alpha + eps`` over ``pool``."""
        return self._trees[pool].total()

    def probabilities(self, pool):
        """Exact draw probability of each member of ``pool`` within the pool.

        Returns
        -------
        numpy.ndarray
            Aligned with :meth:`members`; sums to 1.
        """
        weights = np.array(self._trees[pool].values)
        return weights / weights.sum()

    def _name(self, index):
        return repr(self.ids[index]) if self.ids is not None else f"#{index}"

    # ---------------------------------------------------------------- updates
    def _weights(self, scores, quarantined):
        with np.errstate(over="ignore"):
            powered = np.power(scores, self.alpha)
        powered = np.minimum(powered, MAX_WEIGHT)
        return np.where(quarantined, 0.0, powered) + self.eps

    def _hardness(self, losses):
        with np.errstate(over="ignore"):
            if self.transform == "db_to_power":
                hard = np.power(10.0, losses / 10.0)
            elif self.transform == "exp":
                hard = np.exp(losses)
            else:
                hard = losses
        return np.minimum(hard, _MAX_SCORE)

    def observe_indices(self, indices, losses):
        """Record new losses for examples given by index.

        Arguments
        ---------
        indices : array_like of int
            Example indices; repeats are applied in order.
        losses : array_like of float
            One loss per index. Non-finite values quarantine the example.

        Raises
        ------
        ConfigError
            (field ``transform``) for a negative loss with ``"identity"``,
            naming the example; nothing is updated in that case.
        """
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        losses = np.asarray(losses, dtype=np.float64).reshape(-1)
        if indices.shape != losses.shape:
            raise ValueError(
                f"observe_indices: {indices.shape[0]} indices but "
                f"{losses.shape[0]} losses"
            )
        if indices.size == 0:
            return
        if indices.min() < 0 or indices.max() >= self.size:
            raise IndexError(f"example index out of range [0, {self.size})")
        finite = np.isfinite(losses)
        if self.transform == "identity":
            bad = np.flatnonzero(finite & (losses < 0))
            if bad.size:
                i = int(bad[0])
                raise ConfigError(
                    "transform",
                    f"example {self._name(int(indices[i]))} has negative loss "
                    f"{losses[i]}; 'identity' needs losses >= 0 "
                    "(use 'db_to_power' or 'exp' for signed losses)",
                )
        hard = np.zeros_like(losses)
        hard[finite] = self._hardness(losses[finite])

        # k-th occurrence of each index goes to round k, so repeated indices
        # are applied in batch order while each round stays vectorised.
        order = np.argsort(indices, kind="stable")
        sorted_idx = indices[order]
        starts = np.flatnonzero(np.r_[True, sorted_idx[1:] != sorted_idx[:-1]])
        group_len = np.diff(np.r_[starts, sorted_idx.shape[0]])
        rank_sorted = np.arange(sorted_idx.shape[0]) - np.repeat(starts, group_len)
        occurrence = np.empty_like(rank_sorted)
        occurrence[order] = rank_sorted
        if self.momentum is None and group_len.max() > 1:
            # Without averaging only the last observation of each index counts.
            last = np.zeros(indices.shape[0], dtype=bool)
            last[order[starts + group_len - 1]] = True
            self._apply(indices[last], hard[last], finite[last])
        else:
            for k in range(int(group_len.max())):
                sel = occurrence == k
                self._apply(indices[sel], hard[sel], finite[sel])
        self.n_observations += int(indices.shape[0])

    def _apply(self, idx, hard, finite):
        """Apply observations for distinct indices ``idx``."""
        was_quarantined = self._quarantined[idx]
        new_scores = hard.copy()
        if self.momentum is not None:
            mix = finite & ~was_quarantined & self._seen[idx]
            m = self.momentum
            blended = m * self._scores[idx] + (1.0 - m) * hard
            new_scores = np.where(mix, np.minimum(blended, _MAX_SCORE), hard)
        new_scores[~finite] = 0.0
        self._scores[idx] = new_scores
        self._quarantined[idx] = ~finite
        self._seen[idx] |= finite
        self._n_quarantined += int(np.count_nonzero(~finite)) - int(
            np.count_nonzero(was_quarantined)
        )
        weights = self._weights(new_scores, ~finite)
        pools = self.pool_of[idx]
        if self.n_pools == 1:
            self._trees[0].update(self._local[idx], weights)
            return
        for pool in np.unique(pools):
            sel = pools == pool
            self._trees[pool].update(self._local[idx[sel]], weights[sel])

    # ------------------------------------------------------------------ draws
    def draw(self, pool_ids, rng):
        """Draw one example (with replacement) from each requested pool.

        Arguments
        ---------
        pool_ids : array_like of int
            Pool index per draw.
        rng : numpy.random.Generator
            Source of randomness; pools are served in increasing order, so the
            result is a deterministic function of the generator state.

        Returns
        -------
        numpy.ndarray of int64
            Example indices, aligned with ``pool_ids``.
        """
        pool_ids = np.asarray(pool_ids, dtype=np.int64).reshape(-1)
        out = np.empty(pool_ids.shape[0], dtype=np.int64)
        if pool_ids.size == 0:
            return out
        if pool_ids.min() < 0 or pool_ids.max() >= self.n_pools:
            raise IndexError(f"pool index out of range [0, {self.n_pools})")
        for pool in np.unique(pool_ids):
            where = np.flatnonzero(pool_ids == pool)
            leaves = self._trees[pool].sample(rng.random(where.shape[0]))
            out[where] = self._members[pool][leaves]
        return out

    # ------------------------------------------------------------ persistence
    def state_dict(self):
        """Scores and quarantine flags (plain numpy arrays and numbers)."""
        return {
            "scores": self._scores.copy(),
            "quarantined": self._quarantined.copy(),
            "seen": self._seen.copy(),
            "n_observations": self.n_observations,
            "size": self.size,
            "pool_checksum": _pool_checksum(self.pool_of),
        }

    def load_state_dict(self, state):
        """Restore :meth:`state_dict` output and rebuild the trees.

        The current ``alpha``, ``eps``, ``transform`` and ``momentum`` apply to
        the restored scores, so these may be changed between runs.
        """
        if int(state["size"]) != self.size:
            raise ValueError(
                f"saved loss table has {int(state['size'])} examples, "
                f"this dataset has {self.size}"
            )
        if str(state["pool_checksum"]) != _pool_checksum(self.pool_of):
            raise ValueError("saved loss table was built with different pools")
        scores = np.asarray(state["scores"], dtype=np.float64)
        quarantined = np.asarray(state["quarantined"], dtype=bool)
        if scores.shape != (self.size,) or quarantined.shape != (self.size,):
            raise ValueError("saved loss table arrays have the wrong length")
        self._scores[:] = scores
        self._quarantined[:] = quarantined
        seen = state.get("seen")
        if seen is None:  # saved before "seen" was kept: the best guess
            seen = (scores != 1.0) | quarantined
        self._seen[:] = np.asarray(seen, dtype=bool).reshape(self.size)
        self._n_quarantined = int(np.count_nonzero(quarantined))
        self.n_observations = int(state["n_observations"])
        weights = self._weights(self._scores, self._quarantined)
        for pool, members in enumerate(self._members):
            self._trees[pool].set_all(weights[members])
