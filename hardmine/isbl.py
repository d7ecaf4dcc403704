"""ISBL: a live batch sampler that draws hard examples more often.

Within pool ``C_k`` example ``x_i`` is drawn with probability

    P(x_i | C_k, t) = (L_i ** alpha + eps) / sum_{j in C_k} (L_j ** alpha + eps)

where ``L_i`` is the loss of ``x_i`` at its most recent forward pass (1.0
before the first one). The pool itself is drawn from a fixed pool mix.
Scores live in a :class:`~hardmine.loss_table.LossPowerTable`, so updating and
drawing a batch costs O(B log N) whatever the dataset size.

Options (constructor arguments and fields of ``hparams/isbl.yaml``; every one
off by default, and off the draws are exactly those of the equation above,
draw for draw for the same seed):

* ``capacity`` (nats) with ``capacity_lr``: the sharpness ``a`` that replaces
  ``alpha`` is the inverse of a temperature tuned by dual ascent so that the
  KL divergence of the draw distribution from uniform within each pool,
  averaged over the pools by their draw shares, stays at ``capacity``
  (:mod:`hardmine.sampler_base`); updated every ``refresh_every`` batches.
* ``unseen_score`` (``initial`` | ``max`` | ``mean``) and ``uniform_mix``
  ``lambda``: an example not yet observed scores the largest or the mean
  score of its pool's observed examples instead of 1.0, and a share
  ``lambda`` of each pool's draws is uniform, ``P = (1 - lambda) * P_ISBL +
  lambda / |C_k|`` (:mod:`hardmine.loss_table`). ``stats()`` reports the
  epoch's coverage (``coverage_epoch``).
* ``is_beta`` with ``is_anneal_epochs``: importance weights
  ``w_i = (N_k * P(i | C_k)) ** -beta`` of the batch in training,
  :meth:`~hardmine.sampler_base.BatchSamplerBase.batch_weights`;
  :class:`~hardmine.brain.HardMiningBrain` multiplies them into its loss
  reduction.
* ``score_decay`` ``d``: at each new epoch, the score of every observed example
  not observed in the epoch that ended moves a fraction ``d`` of the way to
  its pool's mean score.
* ``reference`` (a CSV of ``ID, loss``): scores are the loss in excess of
  each example's reference loss, the loss of a model that never trained on it
  (reducible holdout loss, as in RHO-LOSS).
* ``pool_alpha`` ``{pool: a_k}``: pool ``k`` draws with its own power ``a_k``
  instead of ``alpha`` (hard-negative mining: 0 for the keywords, 1 for the
  negatives).
* ``score_clip_quantile`` ``q`` with ``persistent_visits`` ``k``: an example whose
  loss is above its pool's ``q``-quantile of scores on ``k`` consecutive
  visits is flagged (:attr:`ISBLSampler.persistently_hard`) and its score is
  capped at that quantile.

Example
-------
>>> import numpy as np
>>> from speechbrain.dataio.dataset import DynamicItemDataset
>>> data = {f"utt{i}": {"word": "yes" if i < 2 else "no"} for i in range(4)}
>>> dataset = DynamicItemDataset(data)
>>> sampler = ISBLSampler(dataset, batch_size=2, pool_field="word", seed=0)
>>> len(sampler), sampler.pool_names
(2, ['no', 'yes'])
>>> sampler.set_epoch(1)
>>> batches = list(sampler)
>>> [len(b) for b in batches]
[2, 2]
>>> sampler.observe(["utt0", "utt3"], np.array([9.0, 0.0]))
>>> round(float(sampler.draw_probabilities()[0]), 3)
0.419

The options, all on:

>>> sampler = ISBLSampler(
...     dataset, batch_size=2, seed=0, capacity=0.2, refresh_every=1,
...     unseen_score="max", uniform_mix=0.001, is_beta=0.5, is_anneal_epochs=4,
...     score_decay=0.1, score_clip_quantile=0.9, persistent_visits=2)
>>> sampler.set_epoch(1)
>>> batch = next(iter(sampler))
>>> ids = [sampler.ids[i] for i in batch]
>>> sampler.observe(ids, [2.0, 1.0])
>>> weights = sampler.batch_weights(ids)
>>> weights.shape, float(weights.max())
((2,), 1.0)
>>> sorted(k for k in sampler.stats() if k in {"sharpness", "is_beta", "n_unseen"})
['is_beta', 'n_unseen', 'sharpness']
"""

import csv
import math
import numbers
import os
from collections.abc import Mapping

import numpy as np

from hardmine.sampler_base import BatchSamplerBase
from hardmine.validation import ConfigError, check_int, check_number

__all__ = ["ISBLSampler"]


class ISBLSampler(BatchSamplerBase):
    """Batch sampler drawing examples by loss power within pools (ISBL).

    Give it to a DataLoader as ``batch_sampler``; it yields lists of dataset
    indices. Draws are with replacement, so an epoch is a number of draws,
    not a pass over the data.

    **Pools.** ``pool_field`` names a column of the dataset's CSV. With
    ``pools=None`` each distinct value of the column is a pool; ``pools`` maps a
    pool name to the list of column values it gathers, e.g. ``{"targets":
    ["yes", "no"], "negatives": ["_unknown_", "_silence_"]}``. Without
    ``pool_field`` the whole dataset is one pool.

    **Pool mix.** Each draw first picks a pool, independently:
    ``"natural"`` (default) in proportion to the pool sizes, so the pools keep
    their share of the data and only the choice inside a pool is
    loss-driven; ``"uniform"`` gives every pool the same share; a number
    ``beta`` gives pool ``k`` the share ``size_k ** beta / sum(size ** beta)``
    (1 = natural, 0 = uniform, in between softens the imbalance); a mapping
    ``{pool: weight}`` (weights >= 0, normalised) fixes the shares. A weight
    may also be ``"natural"`` (the pool's size) or ``"equal"`` (the pools
    marked so share their total size evenly), and the key ``"*"`` gives the
    weight of every pool not named: with one pool per class, ``{"*": "equal",
    "_unknown_": "natural", "_silence_": "natural"}`` draws every keyword
    equally often while keywords and negatives keep their share of the data.
    An empty mapping means ``"natural"``: it is the form a YAML default must
    take for hyperpyyaml to accept a mapping override of it.

    **Live draws.** Each batch is drawn when the DataLoader asks for it, from
    the losses known at that moment. The DataLoader asks ahead: with
    ``num_workers = W`` and ``prefetch_factor = F`` up to ``W * F`` batches are
    drawn before the batch in training, so a draw may miss the losses of
    the last ``W * F`` batches at most (none with ``num_workers = 0``).

    **Distributed training.** The sampler does its own sharding
    (``handles_distributed = True``; never wrap it in SpeechBrain's
    DistributedSamplerWrapper, which would freeze the draws once per epoch).
    Every rank draws the same global batch of ``batch_size * world_size``
    examples from the same random stream and keeps the slots
    ``[rank::world_size]``. :meth:`observe` gathers the losses of all ranks
    and applies them in rank order, so all ranks keep identical tables.

    **Randomness and resuming.** Batch ``b`` of epoch ``e`` is drawn from a
    generator seeded with ``(seed, e, b)``, so the random stream is fully
    described by seed, epoch and position. A checkpoint stores the table, the
    draw counts and those three numbers. SpeechBrain's data loader resumes
    by pulling and discarding as many batches as were trained on; after a
    mid-epoch load at position ``P`` the sampler answers these ``P`` pulls with
    cheap placeholder batches and then continues live from batch ``P``. With
    ``num_workers = 0`` and the same losses, a resumed run yields exactly the
    batches of an uninterrupted one. (With workers, the torch loader fetches
    its first ``W * F`` batches before SpeechBrain fast-forwards, so those
    are placeholders: valid indices, not loss-driven.) The position is the
    number of :meth:`observe` calls in the epoch, i.e. batches trained on,
    or the number of batches handed out when :meth:`observe` is not used.

    Feedback, sharding, resuming and checkpoints are those of
    :class:`~hardmine.sampler_base.BatchSamplerBase`; the draws inside a pool
    are its :class:`~hardmine.sampler_leaves.ISBLLeaf`'s.

    Arguments
    ---------
    dataset : speechbrain.dataio.dataset.DynamicItemDataset
        Training set. Sampler index ``i`` is ``dataset.data_ids[i]``; pool
        columns are read from ``dataset.data``.
    batch_size : int
        Examples per batch on each rank.
    pool_field : str, optional
        CSV column defining the pools.
    pools : dict, optional
        Pool name -> list of column values.
    pool_mix : str, float or dict
        How often each pool is drawn (see above).
    reference : str, optional
        CSV file (``ID``, ``loss``) of a reference loss per training example:
        scores become the loss in excess of it (see
        :meth:`~hardmine.loss_table.LossPowerTable.set_reference`; the KWS
        recipe writes one with ``isbl_reference_epochs``).
    pool_alpha : dict, optional
        Pool name -> its own loss power, replacing ``alpha`` there (pools not
        named keep ``alpha``). Hard-negative mining for keyword spotting is
        ``{"targets": 0.0, "negatives": 1.0}``: keywords drawn uniformly,
        negatives by loss. Not with ``capacity``.
    epoch_length : int, optional
        Draws per epoch over all ranks (default: dataset size).
    seed : int
        Seed of the random stream (>= 0).
    **options
        Keyword arguments of :class:`~hardmine.sampler_base.BatchSamplerBase`:

        * ``alpha`` (float, default 0.75): loss power (>= 0);
        * ``eps`` (float, default 1e-6): weight floor (> 0);
        * ``transform`` (str, default ``"identity"``): ``"identity"``,
          ``"db_to_power"`` or ``"exp"``, how a loss becomes a score (see
          :class:`~hardmine.loss_table.LossPowerTable`);
        * ``momentum`` (float, optional): moving-average factor for the
          scores; None keeps the latest loss;
        * ``capacity`` (float, optional, nats; > 0 and below the KL the pools
          can reach), ``capacity_lr`` (float, default 0.05): concentration
          control;
        * ``refresh_every`` (int, optional): batches between the O(N)
          refreshes of the capacity and the noise guard; None =
          ``max(8, ceil(N / 2048))``;
        * ``unseen_score`` (str, default ``"initial"``), ``uniform_mix``
          (float in [0, 1), default 0): exploration;
        * ``is_beta`` (float in [0, 1], optional), ``is_anneal_epochs`` (int,
          default 0 = constant): importance weights;
        * ``score_decay`` (float in [0, 1], default 0): staleness;
        * ``score_clip_quantile`` (float in (0, 1), optional),
          ``persistent_visits`` (int >= 1, default 3): the noise guard;
        * ``rank``, ``world_size`` (int, optional): the distributed position,
          torch.distributed's by default.

    Example
    -------
    >>> from speechbrain.dataio.dataset import DynamicItemDataset
    >>> data = {f"u{i}": {"lab": ["a", "b", "c"][i % 3]} for i in range(30)}
    >>> sampler = ISBLSampler(
    ...     DynamicItemDataset(data), batch_size=4, pool_field="lab",
    ...     pools={"ab": ["a", "b"], "c": ["c"]}, pool_mix="uniform",
    ... )
    >>> sampler.pool_names, sampler.pool_mix_probs.tolist(), len(sampler)
    (['ab', 'c'], [0.5, 0.5], 8)
    >>> natural = ISBLSampler(
    ...     DynamicItemDataset(data), batch_size=4, pool_field="lab", pool_mix={}
    ... )
    >>> natural.pool_mix_probs.round(3).tolist()
    [0.333, 0.333, 0.333]
    >>> labels = ["a"] * 6 + ["b"] * 2 + ["neg"] * 12
    >>> skewed = {f"u{i}": {"lab": lab} for i, lab in enumerate(labels)}
    >>> balanced = ISBLSampler(
    ...     DynamicItemDataset(skewed), batch_size=4, pool_field="lab",
    ...     pool_mix={"*": "equal", "neg": "natural"},
    ... )
    >>> balanced.pool_names, balanced.pool_mix_probs.round(3).tolist()
    (['a', 'b', 'neg'], [0.2, 0.2, 0.6])
    >>> batch = next(iter(sampler))
    >>> sampler.observe([sampler.ids[i] for i in batch], [2.0, 0.5, 1.0, 3.0])
    >>> sampler.stats()["n_quarantined"]
    0
    """

    def __init__(
        self,
        dataset,
        batch_size,
        pool_field=None,
        pools=None,
        pool_mix="natural",
        *,
        pool_alpha=None,
        reference=None,
        epoch_length=None,
        seed=1234,
        **options,
    ):
        if not hasattr(dataset, "data_ids"):
            raise TypeError(
                "ISBLSampler needs a SpeechBrain DynamicItemDataset "
                f"(with data_ids), got {type(dataset).__name__}"
            )
        self.batch_size = check_int("batch_size", batch_size, minimum=1)
        super().__init__(
            dataset.data_ids,
            placeholder_size=self.batch_size,
            seed=seed,
            leaf="isbl",
            **options,
        )
        if epoch_length is None:
            epoch_length = len(self.ids)
        self.epoch_length = check_int("epoch_length", epoch_length, minimum=1)

        pool_of, self.pool_names = self._resolve_pools(dataset, pool_field, pools)
        self.pool_field = pool_field
        self._leaf = self._make_leaf(pool_of)
        self.table = self._leaf.table
        self.pool_mix_probs = self._resolve_mix(pool_mix, self.table.pool_sizes)
        self._leaf.set_shares(self.pool_mix_probs)
        self._mix_cdf = np.cumsum(self.pool_mix_probs)
        last_used = int(np.flatnonzero(self.pool_mix_probs > 0)[-1])
        self._mix_cdf[last_used:] = 1.0
        self.pool_alpha = self._resolve_pool_alpha(pool_alpha)
        if self.pool_alpha is not None:
            self.table.set_pool_alpha(self.pool_alpha)
        self.reference = None if reference is None else os.fspath(reference)
        if self.reference is not None:
            self.table.set_reference(read_reference(self.reference, self.ids))

    # ----------------------------------------------------------- config
    def _resolve_pools(self, dataset, pool_field, pools):
        if pools is not None and not pools:
            pools = None  # an empty mapping, the YAML default, means "not given"
        if pool_field is None:
            if pools is not None:
                raise ConfigError("pools", "given without pool_field")
            return np.zeros(len(self.ids), dtype=np.int64), ["all"]
        if not isinstance(pool_field, str) or not pool_field:
            raise ConfigError(
                "pool_field", f"must be a column name, got {pool_field!r}"
            )
        data = getattr(dataset, "data", None)
        if data is None:
            raise ConfigError("pool_field", "the dataset has no CSV fields to read")
        values = []
        for name in self.ids:
            row = data[name]
            if pool_field not in row:
                columns = ", ".join(sorted(map(str, row)))
                raise ConfigError(
                    "pool_field",
                    f"column {pool_field!r} missing for example {name!r} "
                    f"(columns: {columns})",
                )
            values.append(str(row[pool_field]))

        if pools is None:
            names = sorted(set(values))
            lookup = {value: k for k, value in enumerate(names)}
            return np.array([lookup[v] for v in values], dtype=np.int64), names

        if not isinstance(pools, Mapping) or not pools:
            raise ConfigError(
                "pools", f"must map pool names to value lists, got {pools!r}"
            )
        names = [str(name) for name in pools]
        lookup = {}
        for k, (name, members) in enumerate(pools.items()):
            if isinstance(members, (str, numbers.Number)):
                members = [members]
            if not isinstance(members, (list, tuple)) or not members:
                raise ConfigError(
                    "pools", f"pool {name!r} must list column values, got {members!r}"
                )
            for value in members:
                value = str(value)
                if value in lookup:
                    raise ConfigError(
                        "pools",
                        f"value {value!r} is in both pool {names[lookup[value]]!r} "
                        f"and pool {name!r}",
                    )
                lookup[value] = k
        pool_of = np.empty(len(values), dtype=np.int64)
        for i, value in enumerate(values):
            if value not in lookup:
                raise ConfigError(
                    "pools",
                    f"value {value!r} of column {pool_field!r} (example "
                    f"{self.ids[i]!r}) is in no pool",
                )
            pool_of[i] = lookup[value]
        counts = np.bincount(pool_of, minlength=len(names))
        for k, name in enumerate(names):
            if counts[k] == 0:
                raise ConfigError("pools", f"pool {name!r} has no examples")
        return pool_of, names

    def _by_pool_name(self, field, mapping):
        """``mapping`` with string keys, each one of the pools' names."""
        unknown = [k for k in mapping if str(k) not in self.pool_names]
        if unknown:
            raise ConfigError(
                field,
                f"unknown pool {unknown[0]!r} (pools: {', '.join(self.pool_names)})",
            )
        return {str(k): v for k, v in mapping.items()}

    def _resolve_pool_alpha(self, pool_alpha):
        if pool_alpha is None or (isinstance(pool_alpha, Mapping) and not pool_alpha):
            return None  # {} (the YAML default): alpha in every pool
        if not isinstance(pool_alpha, Mapping):
            raise ConfigError(
                "pool_alpha", f"must map pool names to powers, got {pool_alpha!r}"
            )
        if self._leaf.controller is not None:
            raise ConfigError(
                "pool_alpha",
                "cannot be combined with capacity (the controller tunes one "
                "power for every pool)",
            )
        given = self._by_pool_name("pool_alpha", pool_alpha)
        powers = []
        for name in self.pool_names:
            power = check_number(
                f"pool_alpha.{name}", given.get(name, self.table.alpha), minimum=0.0
            )
            if not math.isfinite(power):
                raise ConfigError(f"pool_alpha.{name}", f"must be finite, got {power}")
            powers.append(power)
        return np.array(powers)

    def _resolve_mix(self, pool_mix, sizes):
        sizes = sizes.astype(np.float64)
        if isinstance(pool_mix, Mapping) and not pool_mix:
            pool_mix = "natural"
        if isinstance(pool_mix, str):
            if pool_mix == "natural":
                weights = sizes
            elif pool_mix == "uniform":
                weights = np.ones_like(sizes)
            else:
                raise ConfigError(
                    "pool_mix",
                    "must be 'natural', 'uniform', a number or a mapping "
                    f"pool -> weight, got {pool_mix!r}",
                )
        elif isinstance(pool_mix, Mapping):
            weights = self._mix_weights(pool_mix, sizes)
            if not np.all(np.isfinite(weights)) or weights.sum() <= 0:
                raise ConfigError("pool_mix", "weights must be finite and not all 0")
        elif isinstance(pool_mix, numbers.Real) and not isinstance(pool_mix, bool):
            beta = check_number("pool_mix", pool_mix)
            if not math.isfinite(beta):
                raise ConfigError("pool_mix", f"power must be finite, got {beta}")
            weights = sizes**beta
        else:
            raise ConfigError(
                "pool_mix",
                "must be 'natural', 'uniform', a number or a mapping "
                f"pool -> weight, got {pool_mix!r}",
            )
        return weights / weights.sum()

    def _mix_weights(self, pool_mix, sizes):
        """Pool weights of a ``{pool: weight}`` mix (see the class docstring)."""
        given = dict(pool_mix)
        default = given.pop("*", None)
        given = self._by_pool_name("pool_mix", given)
        weights = np.zeros(len(self.pool_names))
        equal = np.zeros(len(self.pool_names), dtype=bool)
        for k, name in enumerate(self.pool_names):
            value = given.get(name, default)
            if value is None:
                raise ConfigError(
                    "pool_mix",
                    f"no weight for pool {name!r} (name it, or give a default "
                    "under '*')",
                )
            if value == "natural":
                weights[k] = sizes[k]
            elif value == "equal":
                equal[k] = True
            elif isinstance(value, str):
                raise ConfigError(
                    f"pool_mix.{name}",
                    f"must be a weight >= 0, 'natural' or 'equal', got {value!r}",
                )
            else:
                weights[k] = check_number(f"pool_mix.{name}", value, minimum=0.0)
        # The 'equal' pools share their natural total evenly.
        weights[equal] = sizes[equal].mean() if equal.any() else 0.0
        return weights

    # ----------------------------------------------------------- epochs
    def __len__(self):
        """Batches per epoch on each rank."""
        return self._max_batches(self._rank_world()[1])

    def _max_batches(self, world):
        return math.ceil(self.epoch_length / (self.batch_size * world))

    def draw_global_batch(self, batch, world=None):
        """Draw global batch number ``batch`` of the current epoch.

        Pure function of the table, seed, epoch and ``batch``; it updates no
        counters. Returns ``batch_size * world`` example indices.
        """
        world = self._rank_world()[1] if world is None else world
        rng = self._generator(self.epoch, batch)
        n = self.batch_size * world
        if len(self.pool_names) == 1:
            pool_ids = np.zeros(n, dtype=np.int64)
        else:
            pool_ids = np.searchsorted(self._mix_cdf, rng.random(n), side="right")
        return self._leaf.draw(pool_ids, rng)

    def _global_batches(self, batch, cursor, world):
        for number in range(batch, self._max_batches(world)):
            yield self.draw_global_batch(number, world)

    # -------------------------------------------------------- reporting
    def draw_probabilities(self):
        """Probability of each example for one draw, over the whole dataset."""
        probs = np.empty(len(self.ids), dtype=np.float64)
        for k, share in enumerate(self.pool_mix_probs):
            probs[self.table.members(k)] = share * self.table.probabilities(k)
        return probs

    def stats(self):
        """Summary of the current draw distribution, for the training log.

        Returns
        -------
        dict
            ``draw_entropy`` (entropy / log N, 1 = uniform), ``draw_ess`` (effective
            sample size ``1 / sum p^2``), ``draw_ess_frac`` (``draw_ess / N``),
            ``max_prob_ratio`` (largest probability times N), ``coverage``
            (share of examples drawn at least once), ``coverage_epoch`` (share
            drawn at least once in this epoch), ``mean_score`` and
            ``n_quarantined``; with the options on, ``sharpness`` (the power
            in force) and ``capacity_kl`` (the KL at the last refresh),
            ``n_unseen``, ``is_beta`` (beta in force), ``n_decayed`` (scores
            aged at the start of this epoch), ``n_persistently_hard`` and
            ``n_ever_persistently_hard`` (flagged now; flagged at any point).
        """
        probs = self.draw_probabilities()
        size = probs.shape[0]
        nonzero = probs[probs > 0]
        entropy = float(-(nonzero * np.log(nonzero)).sum())
        ess = float(1.0 / np.square(probs).sum())
        return {
            "draw_entropy": entropy / math.log(size) if size > 1 else 1.0,
            "draw_ess": ess,
            "draw_ess_frac": ess / size,
            "max_prob_ratio": float(probs.max() * size),
            **super().stats(),
        }

    def hardest(self, k=10):
        """The ``k`` examples with the highest latest score, hardest first.

        The latest score as observed, before a moving average or the noise
        guard's cap (which act on the draws).

        Returns
        -------
        list of dict
            Keys ``id``, ``index``, ``pool``, ``latest_score``, ``score`` (the
            draws' score), ``prob`` (chance per draw), ``draws``,
            ``persistently_hard`` (the noise guard's flag) and
            ``ever_persistently_hard`` (flagged at any point of the run).
        """
        k = max(0, min(int(k), len(self.ids)))
        if k == 0:
            return []
        latest = np.asarray(self.table.latest_scores)
        scores = np.asarray(self.table.scores)
        top = np.argpartition(-latest, k - 1)[:k]
        top = top[np.lexsort((top, -latest[top]))]
        probs = self.draw_probabilities()
        return [
            {
                "id": self.ids[i],
                "index": int(i),
                "pool": self.pool_names[int(self.table.pool_of[i])],
                "latest_score": float(latest[i]),
                "score": float(scores[i]),
                "prob": float(probs[i]),
                "draws": int(self._draw_counts[i]),
                "persistently_hard": bool(self.table.persistently_hard[i]),
                "ever_persistently_hard": bool(self.table.ever_persistently_hard[i]),
            }
            for i in top
        ]


def read_reference(path, ids):
    """Reference losses of ``ids`` from a CSV file with columns ``ID`` and ``loss``.

    Raises
    ------
    ConfigError
        Naming ``reference``: a missing file or column, an example without a
        loss, a loss that is not a finite number.
    """
    if not os.path.isfile(path):
        raise ConfigError("reference", f"{path!r} does not exist")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not {"ID", "loss"} <= set(reader.fieldnames or ()):
            raise ConfigError(
                "reference",
                f"{path} needs the columns ID and loss, has {reader.fieldnames}",
            )
        given = {row["ID"]: row["loss"] for row in reader}
    out = np.empty(len(ids), dtype=np.float64)
    for i, name in enumerate(ids):
        if name not in given:
            raise ConfigError("reference", f"{path} has no loss for example {name!r}")
        try:
            out[i] = float(given[name])
        except ValueError:
            out[i] = math.nan
        if not math.isfinite(out[i]):
            raise ConfigError(
                "reference", f"{path}: example {name!r} has loss {given[name]!r}"
            )
    return out
