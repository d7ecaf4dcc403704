"""Per-example hardness scores and loss-power draws within pools.

Every example ``i`` belongs to one pool ``C_k`` and carries a hardness score
``L_i``. Within its pool it is drawn with probability

    P(i | C_k) = (L_i ** alpha + eps) / sum_{j in C_k} (L_j ** alpha + eps)

Scores start at 1.0 (uniform draws) and are replaced by the example's loss
each time it is observed, after an optional hardness transform and an
optional exponential moving average. One :class:`~hardmine.sumtree.SumTree`
per pool holds the weights ``L ** alpha + eps``, so an update of B examples
and a draw of B examples each cost O(B log N); a pool of up to
:data:`~hardmine.sumtree.FLAT_MAX` examples uses a
:class:`~hardmine.sumtree.FlatSum` instead (O(B) updates, O(N) draws, faster
at that size).

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

Options beyond the equation (each off by default, leaving the draws above
unchanged, draw for draw):

* **Exploration of unseen examples** (``unseen_score``). An example is
  *unseen* until its first loss (finite or not). With ``"max"`` (what
  prioritised replay gives new items) or ``"mean"``, an unseen example scores
  the largest, or the mean, score of the *scored* examples of its pool (seen,
  not quarantined), 1.0 while the pool has none, instead of the fixed 1.0
  (``"initial"``). Unseen examples are kept out of the pool's sum tree; the
  pool holds an unseen mass ``n_unseen * (s_u ** alpha + eps)`` next to it, a
  draw lands in it with probability ``mass / (tree total + mass)`` and then
  picks one of the pool's unseen examples uniformly. :mod:`hardmine.unseen`
  keeps the unseen lists and ``s_u``: nothing costs O(N) per batch.
* **Uniform mix** (``uniform_mix`` ``lambda`` in [0, 1)): a draw from pool
  ``C_k`` follows ``(1 - lambda) * P(i | C_k) + lambda / |C_k|``.
* **Staleness** (``score_decay`` ``d`` in [0, 1]): :meth:`LossPowerTable.decay_stale`,
  called when a new epoch starts, moves the score of every scored example not
  observed during the epoch being left a fraction ``d`` of the way to the
  mean score of its pool's scored examples (means taken before the move):
  ``L <- L + d * (mean_k - L)``. O(N) once per epoch.
* **Noise guard** (``score_clip_quantile`` ``q`` in (0, 1) with
  ``persistent_visits`` ``k``, :mod:`hardmine.noise_guard`): an example whose
  score-to-be stays above its pool's ``q``-quantile (refreshed by
  :meth:`LossPowerTable.refresh_guard`) for ``k`` visits in a row is
  *persistently hard* (:attr:`LossPowerTable.persistently_hard`) and its
  score is capped at that quantile. Mislabelled or corrupt examples keep a
  high loss however long the model trains; capped, they stop drawing ever
  more of the batches.

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

Unseen examples scoring the pool's largest score, with a uniform mix:

>>> table = LossPowerTable(np.zeros(4, dtype=int), alpha=1.0, eps=1e-6,
...                        unseen_score="max", uniform_mix=0.2)
>>> table.observe_indices(np.array([0, 1]), np.array([3.0, 1.0]))
>>> w = np.array([3.0, 1.0, 3.0, 3.0]) + 1e-6  # 2 and 3 score max = 3
>>> bool(np.allclose(table.probabilities(0), 0.8 * w / w.sum() + 0.2 / 4))
True
"""

import hashlib
import math

import numpy as np

from hardmine.noise_guard import NoiseGuard
from hardmine.sumtree import read_only, weight_tree
from hardmine.unseen import UnseenExamples
from hardmine.validation import ConfigError, check_choice, check_int, check_number

__all__ = [
    "LossPowerTable",
    "TRANSFORMS",
    "UNSEEN_SCORES",
    "MAX_WEIGHT",
    "check_options",
    "check_table_options",
]

#: Hardness transforms applied to a raw loss before it becomes a score.
TRANSFORMS = ("identity", "db_to_power", "exp")

#: What an example scores before its first loss (``unseen_score``).
UNSEEN_SCORES = ("initial", "max", "mean")

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


def check_table_options(
    unseen_score="initial",
    uniform_mix=0.0,
    score_decay=0.0,
    score_clip_quantile=None,
    persistent_visits=3,
):
    """Check the exploration, staleness and noise options (see the module).

    Returns
    -------
    dict
        The five options, checked (``uniform_mix`` and ``score_decay`` as floats).

    Raises
    ------
    ConfigError
        Naming the first field with a bad value.

    Example
    -------
    >>> check_table_options("max", 0.001, 0, None, 3)["uniform_mix"]
    0.001
    >>> check_table_options(uniform_mix=1)
    Traceback (most recent call last):
    ...
    hardmine.validation.ConfigError: uniform_mix: must be < 1 (1 ignores the losses), got 1.0
    """
    unseen_score = check_choice("unseen_score", unseen_score, UNSEEN_SCORES)
    uniform_mix = check_number("uniform_mix", uniform_mix, minimum=0.0)
    if uniform_mix >= 1.0:
        raise ConfigError(
            "uniform_mix", f"must be < 1 (1 ignores the losses), got {uniform_mix}"
        )
    score_decay = check_number("score_decay", score_decay, minimum=0.0, maximum=1.0)
    if score_clip_quantile is not None:
        score_clip_quantile = check_number(
            "score_clip_quantile",
            score_clip_quantile,
            minimum=0.0,
            maximum=1.0,
            strict=True,
        )
    persistent_visits = check_int("persistent_visits", persistent_visits, minimum=1)
    return {
        "unseen_score": unseen_score,
        "uniform_mix": uniform_mix,
        "score_decay": score_decay,
        "score_clip_quantile": score_clip_quantile,
        "persistent_visits": persistent_visits,
    }


class LossPowerTable:
    """Hardness scores with loss-power sampling inside each pool.

    Arguments
    ---------
    pool_of : array_like of int
        Pool index of every example (values ``0 .. K-1``, each pool non-empty).
    alpha : float
        Power applied to the score (>= 0). 0 gives uniform draws within a pool,
        1 draws in proportion to the score. :meth:`set_alpha` changes it later
        (the ISBL sampler's capacity controller does).
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
    unseen_score : str
        ``"initial"`` (1.0), ``"max"`` or ``"mean"`` of the pool's scored
        examples: the score of an example before its first loss.
    uniform_mix : float
        ``lambda`` in [0, 1): share of every pool's draws made uniformly.
    score_decay : float
        ``d`` in [0, 1] of :meth:`decay_stale` (0 = off).
    score_clip_quantile : float or None
        ``q`` in (0, 1) of the noise guard (None = off).
    persistent_visits : int
        ``k``: consecutive visits above the threshold that flag an example.

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
        *,
        unseen_score="initial",
        uniform_mix=0.0,
        score_decay=0.0,
        score_clip_quantile=None,
        persistent_visits=3,
    ):
        options = check_options(alpha, eps, transform, momentum)
        self.alpha, self.eps = options["alpha"], options["eps"]
        self.transform, self.momentum = options["transform"], options["momentum"]
        extra = check_table_options(
            unseen_score,
            uniform_mix,
            score_decay,
            score_clip_quantile,
            persistent_visits,
        )
        self.unseen_score = extra["unseen_score"]
        self.uniform_mix = extra["uniform_mix"]
        self.score_decay = extra["score_decay"]
        self.score_clip_quantile = extra["score_clip_quantile"]
        self.persistent_visits = extra["persistent_visits"]
        self._explore = self.unseen_score != "initial"

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
        #: Per-pool powers (:meth:`set_pool_alpha`); None: ``alpha`` everywhere.
        self._pool_alpha = None
        #: Reference loss per example (:meth:`set_reference`), or None.
        self._reference = None
        for members in self._members:
            self._local[members] = np.arange(members.shape[0])

        if ids is not None:
            ids = list(ids)
            if len(ids) != self.size:
                raise ValueError(f"ids has {len(ids)} names for {self.size} examples")
        self.ids = ids

        self._scores = np.ones(self.size, dtype=np.float64)
        # The latest finite score of each example as observed: no moving
        # average, no noise-guard cap (for reports; the draws use _scores).
        self._latest = np.ones(self.size, dtype=np.float64)
        self._quarantined = np.zeros(self.size, dtype=bool)
        self._seen = np.zeros(self.size, dtype=bool)  # has had a finite loss
        self._n_quarantined = 0
        self.n_observations = 0
        #: Epoch stamped on observations (set by the sampler at each epoch).
        self.epoch = 0
        self._last_observed = np.full(self.size, -1, dtype=np.int64)
        self._guard = NoiseGuard(
            self.size, self.n_pools, self.score_clip_quantile, self.persistent_visits
        )
        start = 1.0 + self.eps  # the weight of the initial score 1.0, any power
        if self._explore:
            start = 0.0  # every example is unseen: its mass is the pool's unseen mass
        self._trees = [weight_tree(m.shape[0], init=start) for m in self._members]
        #: Unseen examples and their score (exploration), or None.
        self._unseen = (
            UnseenExamples(self.pool_sizes, self.unseen_score)
            if self._explore
            else None
        )

    # ------------------------------------------------------------------ views
    @property
    def scores(self):
        """Latest hardness score ``L`` of every example (read-only view)."""
        return read_only(self._scores)

    def digest(self):
        """A short fingerprint of the table's state.

        Ranks of a distributed run compare digests to prove their tables agree.
        It covers the scores, quarantine and seen flags, the power in force,
        the epochs of the last observations and the noise guard's flags.
        """
        h = hashlib.sha1(np.ascontiguousarray(self._scores).tobytes())
        h.update(np.ascontiguousarray(self._quarantined).tobytes())
        h.update(np.ascontiguousarray(self._seen).tobytes())
        h.update(np.float64(self.alpha).tobytes())
        if self._pool_alpha is not None:
            h.update(self._pool_alpha.tobytes())
        h.update(np.ascontiguousarray(self._last_observed).tobytes())
        self._guard.fingerprint(h)
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
    def seen(self):
        """Boolean mask of the examples that have had a finite loss (read-only)."""
        return read_only(self._seen)

    @property
    def unseen(self):
        """Boolean mask of the examples never observed (no loss, finite or not)."""
        return ~self._seen & ~self._quarantined

    @property
    def latest_scores(self):
        """Each example's latest finite score as observed (read-only).

        Equal to :attr:`scores` unless ``momentum`` averages them or the
        noise guard caps them; 1.0 before the first finite loss.
        """
        return read_only(self._latest)

    @property
    def last_observed(self):
        """:attr:`epoch` of each example's latest observation, -1 if none (read-only)."""
        return read_only(self._last_observed)

    @property
    def persistently_hard(self):
        """Boolean mask of the noise guard's persistently hard examples (read-only)."""
        return read_only(self._guard.flagged)

    @property
    def ever_persistently_hard(self):
        """Boolean mask of the examples flagged at any point of the run (read-only)."""
        return read_only(self._guard.ever)

    @property
    def clip_thresholds(self):
        """The noise guard's threshold ``t_k`` of each pool (``inf`` = none yet)."""
        return read_only(self._guard.threshold)

    @property
    def pool_sizes(self):
        """Number of examples in each pool."""
        return np.array([m.shape[0] for m in self._members], dtype=np.int64)

    def members(self, pool):
        """Example indices of ``pool``, in increasing order."""
        return self._members[pool]

    def pool_weight(self, pool):
        """Sum of the weights ``L ** alpha + eps`` over ``pool`` (unseen mass included)."""
        total = self._trees[pool].total()
        if self._explore:
            total += self._unseen_mass(pool)
        return total

    def unseen_weight(self, pool):
        """Weight ``s_u ** alpha + eps`` of an unseen example of ``pool``.

        ``s_u`` is the option ``unseen_score``: 1.0 with ``"initial"`` or while
        the pool has no scored example, else the largest or mean score of the
        pool's scored (seen, not quarantined) examples.
        """
        score = self._unseen.score(pool) if self._explore else 1.0
        try:
            powered = score ** self._power(pool)
        except OverflowError:
            powered = math.inf
        return min(powered, MAX_WEIGHT) + self.eps

    def _unseen_mass(self, pool):
        return float(self._unseen.count[pool]) * self.unseen_weight(pool)

    def probabilities(self, pool):
        """Exact draw probability of each member of ``pool`` within the pool.

        Returns
        -------
        numpy.ndarray
            Aligned with :meth:`members`; sums to 1.
        """
        weights = np.array(self._trees[pool].values)
        if self._explore:
            weights[self._unseen.mask(pool)] = self.unseen_weight(pool)
        probs = weights / weights.sum()
        if self.uniform_mix:
            probs = (1.0 - self.uniform_mix) * probs + self.uniform_mix / probs.shape[0]
        return probs

    def probability_of(self, indices):
        """Within-pool draw probability of each of ``indices``, in O(B).

        The probability :meth:`draw` gives the example when its pool is
        drawn, i.e. the entries of :meth:`probabilities` for these examples
        (up to rounding: the pool total comes from the sum tree).
        """
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        out = np.empty(indices.shape[0], dtype=np.float64)
        pools = self.pool_of[indices]
        for pool in np.unique(pools):
            sel = np.flatnonzero(pools == pool)
            local = self._local[indices[sel]]
            tree = self._trees[pool]
            values = np.asarray(tree.values)[local]
            total = tree.total()
            if self._explore:
                w_u = self.unseen_weight(pool)
                values = np.where(self._unseen.is_unseen(pool, local), w_u, values)
                total += float(self._unseen.count[pool]) * w_u
            probs = values / total
            if self.uniform_mix:
                size = self._members[pool].shape[0]
                probs = (1.0 - self.uniform_mix) * probs + self.uniform_mix / size
            out[sel] = probs
        return out

    def kl_to_uniform(self, shares=None):
        """KL divergence of the draw distribution from uniform, within pools.

        ``sum_k share_k * KL(P(. | C_k) || uniform over C_k)`` in nats, the
        pools weighed by their draw shares (default: their sizes). O(N).
        """
        if shares is None:
            shares = self.pool_sizes.astype(np.float64)
        shares = np.asarray(shares, dtype=np.float64)
        total = 0.0
        for pool, share in enumerate(shares):
            if share <= 0:
                continue
            probs = self.probabilities(pool)  # all > 0: every weight is >= eps
            # numpy's own pairwise sum, not BLAS (np.dot): the same on every
            # rank whatever its thread count.
            kl = float(np.sum(probs * np.log(probs))) + math.log(probs.shape[0])
            total += share * max(kl, 0.0)
        return total / float(shares[shares > 0].sum())

    def _name(self, index):
        return repr(self.ids[index]) if self.ids is not None else f"#{index}"

    # ---------------------------------------------------------------- updates
    def _power(self, pool):
        """The power of ``pool`` (an index or an array of them)."""
        return self.alpha if self._pool_alpha is None else self._pool_alpha[pool]

    def _weights(self, scores, quarantined, power):
        with np.errstate(over="ignore"):
            powered = np.power(scores, power)
        powered = np.minimum(powered, MAX_WEIGHT)
        return np.where(quarantined, 0.0, powered) + self.eps

    def _all_weights(self):
        """``_weights`` of every example, in place where it can (O(N))."""
        with np.errstate(over="ignore"):
            weights = np.power(self._scores, self._power(self.pool_of))
        np.minimum(weights, MAX_WEIGHT, out=weights)
        if self._n_quarantined:
            weights[self._quarantined] = 0.0
        weights += self.eps
        return weights

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
        if self._reference is not None:
            losses = losses - self._reference[indices]
            if self.transform == "identity":
                losses = np.maximum(losses, 0.0)  # NaN stays NaN
        hard = np.zeros_like(losses)
        hard[finite] = self._hardness(losses[finite])

        if self.momentum is None and self.score_clip_quantile is None:
            # Only the last observation of each index counts; they are applied
            # in batch order (the order in which unseen examples leave).
            _, from_end = np.unique(indices[::-1], return_index=True)
            last = np.sort(indices.shape[0] - 1 - from_end)
            self._apply(indices[last], hard[last], finite[last])
        else:
            # k-th occurrence of each index goes to round k, so repeated
            # indices are applied in batch order, each round vectorised.
            order = np.argsort(indices, kind="stable")
            sorted_idx = indices[order]
            new = np.ones(sorted_idx.shape[0], dtype=bool)
            new[1:] = sorted_idx[1:] != sorted_idx[:-1]
            starts = np.flatnonzero(new)
            group_len = np.diff(np.append(starts, sorted_idx.shape[0]))
            rank_sorted = np.arange(sorted_idx.shape[0]) - np.repeat(starts, group_len)
            occurrence = np.empty_like(rank_sorted)
            occurrence[order] = rank_sorted
            for k in range(int(group_len.max())):
                sel = occurrence == k
                self._apply(indices[sel], hard[sel], finite[sel])
        self.n_observations += int(indices.shape[0])

    def _apply(self, idx, hard, finite):
        """Apply observations for distinct indices ``idx``."""
        was_quarantined = self._quarantined[idx]
        if self._explore:
            was_scored = self._seen[idx] & ~was_quarantined
        new_scores = hard.copy()
        if self.momentum is not None:
            mix = finite & ~was_quarantined & self._seen[idx]
            m = self.momentum
            blended = m * self._scores[idx] + (1.0 - m) * hard
            new_scores = np.where(mix, np.minimum(blended, _MAX_SCORE), hard)
        pools = self.pool_of[idx]
        if self._guard.active:
            new_scores = self._guard.visit(idx, pools, hard, finite, new_scores)
        new_scores[~finite] = 0.0
        self._scores[idx] = new_scores
        self._latest[idx[finite]] = hard[finite]
        self._quarantined[idx] = ~finite
        self._seen[idx] |= finite
        self._last_observed[idx] = self.epoch
        self._n_quarantined += int(np.count_nonzero(~finite)) - int(
            np.count_nonzero(was_quarantined)
        )
        weights = self._weights(new_scores, ~finite, self._power(pools))
        if self.n_pools == 1:
            self._trees[0].update(self._local[idx], weights, check=False)
        else:
            for pool in np.unique(pools):
                sel = pools == pool
                self._trees[pool].update(
                    self._local[idx[sel]], weights[sel], check=False
                )
        if self._explore:
            scored = np.where(finite, new_scores, 0.0)
            change = finite.astype(np.int64) - was_scored
            if self.n_pools == 1:
                self._unseen.observed(0, self._local[idx], scored, change)
            else:
                for pool in np.unique(pools):
                    sel = pools == pool
                    local = self._local[idx[sel]]
                    self._unseen.observed(pool, local, scored[sel], change[sel])

    def _rescore(self, idx, scores):
        """Set the scores of distinct scored (seen, not quarantined) examples."""
        if idx.size == 0:
            return
        self._scores[idx] = scores
        if 8 * idx.size > self.size:  # many: rebuilding is cheaper
            self._rebuild()
            if self._explore:
                scored = self._seen & ~self._quarantined
                values = np.where(scored, self._scores, 0.0)
                for pool, members in enumerate(self._members):
                    self._unseen.set_all_scores(pool, values[members])
            return
        pools = self.pool_of[idx]
        weights = self._weights(
            scores, np.zeros(idx.shape[0], dtype=bool), self._power(pools)
        )
        for pool in np.unique(pools):
            sel = pools == pool
            local = self._local[idx[sel]]
            self._trees[pool].update(local, weights[sel])
            if self._explore:
                self._unseen.set_scores(pool, local, scores[sel])

    def _rebuild(self):
        """Rebuild the weight trees from the scores in O(N)."""
        weights = self._all_weights()
        if self._explore:
            weights[self.unseen] = 0.0
        if self.n_pools == 1:  # its members are 0 .. N-1 in order
            self._trees[0].set_all(weights, check=False)
            return
        for pool, members in enumerate(self._members):
            self._trees[pool].set_all(weights[members], check=False)

    def _rebuild_explore(self, order=None):
        """Rebuild the unseen lists and the scored examples' trees in O(N)."""
        unseen, scored = self.unseen, self._seen & ~self._quarantined
        self._unseen.rebuild(
            [unseen[m] for m in self._members],
            [scored[m] for m in self._members],
            [self._scores[m] for m in self._members],
            order,
        )

    def set_alpha(self, alpha):
        """Change the power ``alpha`` and re-weight every example (O(N))."""
        alpha = float(alpha)
        if not (math.isfinite(alpha) and alpha >= 0):
            raise ValueError(f"alpha must be finite and >= 0, got {alpha}")
        if self._pool_alpha is not None:
            raise ValueError("alpha is set per pool (set_pool_alpha): one power is not")
        if alpha != self.alpha:
            self.alpha = alpha
            self._rebuild()

    def set_pool_alpha(self, powers):
        """Give each pool its own power (``powers[k]`` for pool ``k``), O(N).

        Hard-negative mining, for instance: 0 (uniform draws) in the targets'
        pool, 1 in the negatives'. None returns to ``alpha`` everywhere.

        Example
        -------
        >>> table = LossPowerTable(np.array([0, 0, 1, 1]), alpha=1.0, eps=1e-6)
        >>> table.observe_indices(np.arange(4), np.array([1.0, 3.0, 1.0, 3.0]))
        >>> table.set_pool_alpha([0.0, 1.0])
        >>> table.probabilities(0).round(3).tolist(), table.probabilities(1).round(3).tolist()
        ([0.5, 0.5], [0.25, 0.75])
        """
        if powers is not None:
            powers = np.asarray(powers, dtype=np.float64).reshape(-1)
            if powers.shape != (self.n_pools,):
                raise ValueError(
                    f"need one power per pool ({self.n_pools}), got {powers.shape[0]}"
                )
            if not (np.all(np.isfinite(powers)) and np.all(powers >= 0)):
                raise ValueError(
                    f"powers must be finite and >= 0, got {powers.tolist()}"
                )
        self._pool_alpha = powers
        self._rebuild()

    def set_reference(self, losses):
        """Score by the loss in excess of a reference loss per example.

        From then on an observed loss ``l_i`` becomes ``l_i - r_i`` before the
        transform (clipped at 0 with ``"identity"``): with ``r_i`` the loss of
        a model that never trained on example ``i``, what is left is the part
        of the loss that training can still remove (Mindermann et al.'s
        reducible holdout loss). Mislabelled and unlearnable examples, for
        which the reference is high too, stop attracting the draws. Scores
        already held are kept; None switches it off.

        Example
        -------
        >>> table = LossPowerTable(np.zeros(2, dtype=int), alpha=1.0, eps=1e-6)
        >>> table.set_reference([0.5, 3.0])
        >>> table.observe_indices(np.array([0, 1]), np.array([2.0, 2.5]))
        >>> table.scores.tolist()
        [1.5, 0.0]
        """
        if losses is not None:
            losses = np.asarray(losses, dtype=np.float64).reshape(-1)
            if losses.shape != (self.size,):
                raise ValueError(
                    f"need one reference loss per example ({self.size}), "
                    f"got {losses.shape[0]}"
                )
            if not np.all(np.isfinite(losses)):
                bad = int(np.flatnonzero(~np.isfinite(losses))[0])
                raise ValueError(
                    f"reference loss of example {self._name(bad)} is {losses[bad]}"
                )
        self._reference = losses

    def decay_stale(self, epoch_left):
        """Staleness: pull the scores not refreshed in ``epoch_left`` to their pool mean.

        Every scored example (seen, not quarantined) whose latest observation
        is older than ``epoch_left`` gets ``L <- L + d * (mean_k - L)``, with
        ``mean_k`` the mean score of the scored examples of its pool before
        the update and ``d`` = ``score_decay``. O(N).

        Returns
        -------
        int
            Number of examples moved (0 when ``score_decay`` is 0).

        Example
        -------
        >>> import numpy as np
        >>> table = LossPowerTable(np.zeros(3, dtype=int), score_decay=0.5)
        >>> table.observe_indices([0, 1], [4.0, 2.0])  # epoch 0
        >>> table.epoch = 1
        >>> table.observe_indices([1], [2.0])
        >>> table.decay_stale(1), table.scores.tolist()  # mean 3: 4 -> 3.5
        (1, [3.5, 2.0, 1.0])
        """
        if not self.score_decay:
            return 0
        scored = self._seen & ~self._quarantined
        stale = np.flatnonzero(scored & (self._last_observed < epoch_left))
        if stale.size == 0:
            return 0
        sums = np.bincount(
            self.pool_of,
            weights=np.where(scored, self._scores, 0.0),
            minlength=self.n_pools,
        )
        counts = np.bincount(self.pool_of[scored], minlength=self.n_pools)
        means = sums / np.maximum(counts, 1)
        old = self._scores[stale]
        new = old + self.score_decay * (means[self.pool_of[stale]] - old)
        self._rescore(stale, self._guard.cap(stale, self.pool_of[stale], new))
        return int(stale.size)

    def refresh_guard(self):
        """Noise guard: new thresholds ``t_k``, and flagged scores capped at them.

        ``t_k`` is the ``score_clip_quantile`` quantile of the scores of the
        scored examples of pool ``k`` (``inf`` with fewer than 2). O(N); a
        no-op when the guard is off.
        """
        if not self._guard.active:
            return
        scored = self._seen & ~self._quarantined
        over = self._guard.refresh(self._scores, scored, self.pool_of, self._members)
        if over is not None:
            self._rescore(over, self._guard.threshold[self.pool_of[over]])

    # ------------------------------------------------------------------ draws
    def draw(self, pool_ids, rng):
        """Draw one example (with replacement) from each requested pool.

        Arguments
        ---------
        pool_ids : array_like of int
            Pool index per draw.
        rng : numpy.random.Generator
            Source of randomness; pools are served in increasing order, one
            uniform number per draw, so the result is a deterministic function
            of the generator state.

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
        if self.n_pools == 1:  # the same numbers as the loop below
            return self._draw_pool(0, rng.random(pool_ids.shape[0]))
        for pool in np.unique(pool_ids):
            where = np.flatnonzero(pool_ids == pool)
            out[where] = self._draw_pool(pool, rng.random(where.shape[0]))
        return out

    def _draw_pool(self, pool, u):
        """Members of ``pool`` for the uniform numbers ``u``."""
        members = self._members[pool]
        if not self.uniform_mix:
            return members[self._draw_local(pool, u)]
        lam = self.uniform_mix
        mixed = u < lam
        local = np.empty(u.shape[0], dtype=np.int64)
        size = members.shape[0]
        local[mixed] = np.minimum((u[mixed] / lam * size).astype(np.int64), size - 1)
        rest = ~mixed
        local[rest] = self._draw_local(
            pool, np.minimum((u[rest] - lam) / (1.0 - lam), _BELOW_ONE)
        )
        return members[local]

    def _draw_local(self, pool, u):
        """Loss-power draws (local indices) of ``pool`` for the numbers ``u``."""
        tree = self._trees[pool]
        if not self._explore:
            return tree.sample(u)
        in_tree = tree.total()
        n_unseen = int(self._unseen.count[pool])
        if n_unseen == 0:
            return tree.sample(u)
        mass = n_unseen * self.unseen_weight(pool)
        target = u * (in_tree + mass)
        seen = target < in_tree
        local = np.empty(u.shape[0], dtype=np.int64)
        if seen.any():
            local[seen] = tree.sample(np.minimum(target[seen] / in_tree, _BELOW_ONE))
        rest = ~seen
        if rest.any():
            # Uniform among the pool's unseen examples.
            share = np.clip((target[rest] - in_tree) / mass, 0.0, _BELOW_ONE)
            local[rest] = self._unseen.slot(pool, share)
        return local

    # ------------------------------------------------------------ persistence
    def state_dict(self):
        """Scores, flags and the options' per-example state (numpy arrays and numbers)."""
        return {
            "scores": self._scores.copy(),
            "quarantined": self._quarantined.copy(),
            "seen": self._seen.copy(),
            "last_observed": self._last_observed.copy(),
            "latest": self._latest.copy(),
            **self._guard.state(),
            "unseen_order": self._unseen.order() if self._explore else None,
            "n_observations": self.n_observations,
            "size": self.size,
            "pool_checksum": _pool_checksum(self.pool_of),
        }

    def load_state_dict(self, state):
        """Restore :meth:`state_dict` output and rebuild the trees.

        The current ``alpha``, ``eps``, ``transform`` and ``momentum`` apply to
        the restored scores, so these may be changed between runs. Entries
        missing from older states take their best guess: ``seen`` from the
        scores, the last observation in the current :attr:`epoch` for seen
        examples, the scores as the latest scores, no streaks, no flags, no
        thresholds.
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
        last = state.get("last_observed")
        if last is None:
            last = np.where(self._seen | quarantined, self.epoch, -1)
        self._last_observed[:] = np.asarray(last, dtype=np.int64).reshape(self.size)
        latest = state.get("latest")  # older states: the scores are the best guess
        latest = scores if latest is None else np.asarray(latest, dtype=np.float64)
        self._latest[:] = latest.reshape(self.size)
        self._guard.load(state)
        self._n_quarantined = int(np.count_nonzero(quarantined))
        self.n_observations = int(state["n_observations"])
        self._rebuild()
        if self._explore:
            order = state.get("unseen_order")
            if order is not None:
                order = np.asarray(order, dtype=np.int64).reshape(-1)
                if order.shape != (self.size,):
                    order = None
            self._rebuild_explore(order)


#: The largest float below 1, the top of a uniform number.
_BELOW_ONE = np.nextafter(1.0, 0.0)
