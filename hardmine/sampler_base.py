"""The base of the batch samplers: losses in, batches out, checkpoints, DDP.

:class:`~hardmine.isbl.ISBLSampler` and
:class:`~hardmine.catpow.CategoryDatasetPowerSampler` share
:class:`BatchSamplerBase`, which holds what a sampler does around its draws:

* **feedback**: :meth:`BatchSamplerBase.observe` gathers the ``(index,
  loss)`` pairs of all ranks once (:func:`~hardmine.distributed.all_gather_pairs`)
  and hands them, in rank order, to the sampler's *leaf*, so every rank keeps
  the same state and the draws stay a deterministic function of it;
* **sharding**: every rank draws the same global batch and keeps the slots
  ``[rank::world_size]``; rank and world size come from torch.distributed
  unless given;
* **epochs and resuming**: :meth:`~BatchSamplerBase.set_epoch`, the draw
  counts, and the placeholder batches that answer SpeechBrain's fast-forward
  after a mid-epoch load (its ``SaveableDataLoader`` resumes by pulling and
  discarding as many batches as were trained on);
* **checkpoints**: one ``.npz`` file with a JSON ``meta`` entry, the draw
  counts and the leaf's arrays, refused for another training set.

A *leaf* picks the example of each draw inside a group (a pool of ISBL, a
``(dataset, category)`` group of the power sampler). Two leaves share one
interface (``draw``, ``observe``, ``new_epoch``, ``state``/``load_state``,
``stats``): :class:`ISBLLeaf` draws by loss power and learns from the losses
(it is *live*); :class:`RoundRobinLeaf` walks each group's shuffled list and
ignores them (its draws are fixed by seed and epoch, so a resumed epoch is
replayed).

Options of the ISBL leaf beyond the loss power (all off by default; off, the
draws are those of the plain equation, draw for draw). Each is a function of
the gathered losses alone, so every rank computes the same, and each is saved
in the checkpoint:

* ``unseen_score``, ``uniform_mix``, ``score_decay``, ``score_clip_quantile``
  and ``persistent_visits``: exploration, staleness and the noise guard of
  the :class:`~hardmine.loss_table.LossPowerTable` (see there). The leaf
  calls the staleness decay when an epoch starts.
* ``capacity`` (nats) with ``capacity_lr``: concentration control. Drawing
  ``p_i ∝ L_i ** a`` is ``softmax(log L_i / T)`` with ``T = 1 / a``, and
  ``softmax(s / T)`` maximises ``E_p[s] - T * KL(p || u)``: ``T`` is the
  Lagrange multiplier of ``KL <= C``. A
  :class:`~hardmine.capacity.CapacityController` (``parametrization="exp"``,
  Adam with ``capacity_lr``, starting from ``T = 1 / alpha``) does dual
  ascent on it (``T`` grows while the KL is above ``C``), with the KL of the
  draw distribution from uniform within each pool, averaged over the pools
  by their draw shares; ``a = 1 / T`` (kept within [1e-3, 1e3]) replaces
  ``alpha``. It is not a collective: the KL is measured on the table, which
  every rank holds identically.
* ``refresh_every`` (batches): the cadence of the O(N) work, the capacity
  step (measuring the KL and re-weighting every example) and the noise
  guard's quantiles. They run after every ``refresh_every``-th
  :meth:`~BatchSamplerBase.observe` call (counted over the run). The default
  ``None`` is ``max(8, ceil(N / 2048))``. A refresh costs about 0.6 ms plus
  0.07-0.1 µs per example on a 2-core CPU (about 1.5 ms at N = 1e4, 8 ms at
  1e5, under load), so about 0.2 ms per training step whatever N, and about
  ``min(N / 8, 2048) / batch`` controller steps per pass over the data.

Importance weights (``is_beta``, ``is_anneal_epochs``): the base records, for
every slot of every batch it hands out, the draw probability actually used,
``P_i = share_k * P(i | C_k)``, and :meth:`BatchSamplerBase.batch_weights`
returns for the batch in training ``w_i = (N_k * P(i | C_k)) ** -beta`` over
the global batch's largest (Schaul et al., 2016), ``N_k`` the size of ``i``'s
pool. The reference distribution is the sampler's own with uniform draws
inside each pool (``q_i = share_k / N_k``, so ``w_i = (q_i / P_i) ** beta``);
with the natural pool mix it is uniform over the training set and ``w_i`` is
Schaul's ``(N * P_i) ** -beta``. With ``beta = 1`` the weighted mean
``sum w_i L_i / sum w_i`` estimates the mean loss under ``q``.

Example
-------
>>> import numpy as np
>>> leaf = ISBLLeaf(np.array([0, 0, 1]), alpha=1.0)
>>> leaf.observe(np.array([1]), np.array([3.0]))
>>> leaf.table.probabilities(0).round(3).tolist(), leaf.stats()["n_quarantined"]
([0.25, 0.75], 0)
>>> leaf.table.probability_of(np.array([1, 0])).round(3).tolist()
[0.75, 0.25]
>>> robin = RoundRobinLeaf(np.array([0, 1, 0, 1]))
>>> robin.start(np.array([3, 2, 1, 0]))
>>> robin.draw(np.array([0, 0, 0, 1])).tolist()
[2, 0, 2, 3]
"""

import collections
import hashlib
import json

import numpy as np
import torch
from speechbrain.utils.checkpoints import (
    mark_as_loader,
    mark_as_saver,
    register_checkpoint_hooks,
)

from hardmine.distributed import all_gather_pairs, rank, world_size
from hardmine.loss_table import check_options, check_table_options
from hardmine.sampler_leaves import (
    LEAVES,
    PENDING_BATCHES,
    ISBLLeaf,
    RoundRobinLeaf,
    check_importance_options,
    check_leaf_options,
)
from hardmine.sumtree import read_only
from hardmine.validation import ConfigError, check_choice, check_int

__all__ = ["BatchSamplerBase", "ISBLLeaf", "LEAVES", "RoundRobinLeaf", "ids_checksum"]

#: Version of the checkpoint layout (both samplers wrote version 1 before
#: they shared this base; those files load unchanged).
FORMAT = 1


def ids_checksum(ids):
    """SHA-1 of the example ids in order: a checkpoint names its training set.

    Example
    -------
    >>> ids_checksum(["a", "b"]) == ids_checksum(["a", "b"]) != ids_checksum(["b", "a"])
    True
    """
    digest = hashlib.sha1()
    for name in ids:
        digest.update(str(name).encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()


def _to_numpy(losses):
    if isinstance(losses, torch.Tensor):
        return losses.detach().to("cpu", torch.float64).numpy().reshape(-1)
    return np.asarray(losses, dtype=np.float64).reshape(-1)


# -------------------------------------------------------------------- base
@register_checkpoint_hooks
class BatchSamplerBase(torch.utils.data.Sampler):
    """Batch sampler with a leaf, live feedback, sharding and checkpoints.

    A subclass builds its leaf with :meth:`_make_leaf` once it knows the
    group of every example, and implements

    * ``_global_batches(batch, cursor, world)``: a generator of the global
      batches (index arrays) of the current epoch from batch number
      ``batch``, which starts at draw number ``cursor``;
    * ``_max_batches(world)``: an upper bound on the batches of an epoch.

    The base turns them into the rank's shards, counts the draws and keeps
    for every handed-out batch the draw number it started at, so a checkpoint
    can name where the next batch starts.

    **Resuming.** A checkpoint stores the position ``P`` (batches trained on
    in the epoch, i.e. :meth:`observe` calls, else batches handed out) and
    the draw number where batch ``P`` starts. With a live leaf, a mid-epoch
    load makes the next iteration answer SpeechBrain's ``P`` fast-forward
    pulls with cheap placeholder batches and continue live from batch ``P``.
    With a round-robin leaf the epoch is replayed as is and SpeechBrain's
    loader discards the first ``P`` batches itself. A load also restores the
    epoch, the seed, the draw counts and the leaf's state.

    Arguments
    ---------
    ids : list of str
        Example ids; position ``i`` is dataset index ``i``.
    placeholder_size : int
        Length of a placeholder batch.
    seed : int
        Seed of the sampler's own random streams (>= 0).
    leaf : str
        ``"isbl"`` (:class:`ISBLLeaf`) or ``"uniform"`` (:class:`RoundRobinLeaf`).
    alpha, eps, transform, momentum
        Options of the ISBL leaf (see
        :class:`~hardmine.loss_table.LossPowerTable`), checked whatever the leaf.
    unseen_score, uniform_mix, score_decay, score_clip_quantile, persistent_visits
        Exploration, staleness and noise options of the ISBL leaf's table
        (see :mod:`hardmine.loss_table`); off by default.
    capacity, capacity_lr, refresh_every
        Concentration control of the ISBL leaf and the cadence of its O(N)
        refreshes (see the module); ``capacity=None`` is off.
    is_beta, is_anneal_epochs
        Importance weights (see the module and :meth:`batch_weights`):
        ``beta`` in [0, 1] (None = off), constant with ``is_anneal_epochs=0``,
        else ``beta_e = is_beta + (1 - is_beta) * min(1, (e - 1) / is_anneal_epochs)``
        in epoch ``e`` (so 1 from epoch ``1 + is_anneal_epochs`` on). The
        options of the ISBL leaf are checked whatever the leaf and used with
        the ISBL leaf only.
    rank, world_size : int, optional
        Distributed position; by default torch.distributed's when it is
        initialised, else a single process.

    Example
    -------
    >>> class Cycle(BatchSamplerBase):
    ...     def __init__(self, ids):
    ...         super().__init__(ids, placeholder_size=1, seed=0, leaf="uniform")
    ...         self._leaf = self._make_leaf(np.zeros(len(ids), dtype=np.int64))
    ...     def _max_batches(self, world):
    ...         return 3
    ...     def _global_batches(self, batch, cursor, world):
    ...         self._leaf.start(np.arange(len(self.ids)))
    ...         for _ in range(batch, 3):
    ...             yield self._leaf.draw(np.zeros(2, dtype=np.int64))
    >>> sampler = Cycle(["a", "b", "c"])
    >>> list(sampler), sampler.draw_counts.tolist()
    ([[0, 1], [2, 0], [1, 2]], [2, 2, 2])
    """

    handles_distributed = True

    def __init__(
        self,
        ids,
        placeholder_size,
        seed,
        *,
        leaf="isbl",
        alpha=0.75,
        eps=1e-6,
        transform="identity",
        momentum=None,
        unseen_score="initial",
        uniform_mix=0.0,
        score_decay=0.0,
        score_clip_quantile=None,
        persistent_visits=3,
        capacity=None,
        capacity_lr=0.05,
        refresh_every=None,
        is_beta=None,
        is_anneal_epochs=0,
        rank=None,
        world_size=None,
    ):
        super().__init__()
        self.ids = [str(name) for name in ids]
        if not self.ids:
            raise ConfigError("dataset", "the training set is empty")
        self._index_of = {name: i for i, name in enumerate(self.ids)}
        if len(self._index_of) != len(self.ids):
            raise ConfigError("dataset", "example ids are not unique")
        self.seed = check_int("seed", seed, minimum=0)
        self.leaf = check_choice("leaf", leaf, LEAVES)
        self._leaf_options = check_options(alpha, eps, transform, momentum)
        self._leaf_options.update(
            check_table_options(
                unseen_score,
                uniform_mix,
                score_decay,
                score_clip_quantile,
                persistent_visits,
            )
        )
        self._leaf_options.update(
            check_leaf_options(capacity, capacity_lr, refresh_every)
        )
        importance = check_importance_options(is_beta, is_anneal_epochs)
        self.is_beta = importance["is_beta"]
        self.is_anneal_epochs = importance["is_anneal_epochs"]
        if world_size is not None:
            world_size = check_int("world_size", world_size, minimum=1)
        if rank is not None:
            rank = check_int("rank", rank, minimum=0)
            if world_size is not None and rank >= world_size:
                raise ConfigError(
                    "rank", f"must be < world_size={world_size}, got {rank}"
                )
        self._rank, self._world_size = rank, world_size
        size = len(self.ids)
        self._placeholder = [i % size for i in range(placeholder_size)]
        self._draw_counts = np.zeros(size, dtype=np.int64)
        self._drawn_epoch = np.zeros(size, dtype=bool)  # drawn in this epoch
        self._pending = collections.deque(maxlen=PENDING_BATCHES)
        self._current = None  # the pending entry of the batch last observed
        self._leaf = None
        self.epoch = 0
        self._handed = 0  # batches handed out in this epoch
        self._consumed = 0  # observe() calls in this epoch
        self._offsets = {0: 0}  # batch number -> draw number it starts at
        self._resume_skip = 0  # placeholders the next iteration yields first
        self._resume_cursor = 0  # draw number of the batch after them

    # ---------------------------------------------------------- plumbing
    def _make_leaf(self, group_of):
        """The leaf named by ``leaf`` over the groups ``group_of``."""
        if self.leaf == "isbl":
            return ISBLLeaf(group_of, ids=self.ids, **self._leaf_options)
        return RoundRobinLeaf(group_of)

    @property
    def loss_table(self):
        """The leaf's :class:`~hardmine.loss_table.LossPowerTable` (None if it has none)."""
        return self._leaf.table

    def _generator(self, *words):
        """A generator seeded with ``(seed, *words)``."""
        seq = np.random.SeedSequence([self.seed, *words])
        return np.random.Generator(np.random.PCG64(seq))

    def _rank_world(self):
        """``(rank, world_size)``: the explicit ones, else torch.distributed's."""
        world = world_size() if self._world_size is None else self._world_size
        if self._rank is not None:
            return self._rank, world
        return (rank() if self._world_size is None else 0), world

    def _shard_params(self):
        me, world = self._rank_world()
        if me >= world:
            raise ConfigError("rank", f"must be < world_size={world}, got {me}")
        return me, world

    # ------------------------------------------------------------ epochs
    def set_epoch(self, epoch):
        """Start epoch ``epoch``; the restored epoch keeps its resume point.

        A new epoch also resets the epoch's coverage and lets the leaf age
        the scores not refreshed in the epoch that ended (``score_decay``).
        """
        epoch = check_int("epoch", epoch, minimum=0)
        if epoch != self.epoch:
            self._leaf.new_epoch(self.epoch, epoch)
            self._drawn_epoch[:] = False
            self._pending.clear()
            self._current = None
            self.epoch = epoch
            self._offsets = {0: 0}
            self._handed = self._consumed = 0
            self._resume_skip = self._resume_cursor = 0

    def __iter__(self):
        me, world = self._shard_params()
        return self._iterate(me, world)

    def _iterate(self, me, world):
        skip = min(self._resume_skip, self._max_batches(world))
        cursor = self._resume_cursor if skip else 0
        self._resume_skip = self._resume_cursor = 0
        self._handed = self._consumed = skip
        self._offsets = {skip: cursor}
        for _ in range(skip):
            yield list(self._placeholder)
        batch = skip
        for drawn in self._global_batches(skip, cursor, world):
            flat = drawn.reshape(-1)
            np.add.at(self._draw_counts, flat, 1)
            self._drawn_epoch[flat] = True
            if self._weighting:
                self._record(drawn, me, world)
            items = self._hand_out(drawn, cursor, me, world)
            cursor += len(drawn)
            batch += 1
            self._offsets[batch] = cursor
            self._handed = batch
            yield items

    def _hand_out(self, drawn, cursor, me, world):
        """This rank's items of a global batch whose first slot is draw ``cursor``.

        One example index per slot; a sampler whose slot draws several
        examples (``drawn`` of shape [slots, k]) hands out its own items.
        """
        return drawn[me::world].tolist()

    # ---------------------------------------------------------- feedback
    def observe(self, ids, losses):
        """Record the losses of a trained batch (collective under DDP).

        The pairs of all ranks are gathered and applied in rank order, so all
        ranks keep the same leaf state. A leaf that does not learn (round
        robin) ignores the call, and it is then not collective.

        Arguments
        ---------
        ids : list of str
            Example ids of this rank's batch (``batch.id``).
        losses : torch.Tensor or array_like
            Per-example losses, NaN for broken examples.
        """
        if not self._leaf.live:
            return
        losses = _to_numpy(losses)
        ids = list(ids)
        if len(ids) != losses.shape[0]:
            raise ValueError(f"observe: {len(ids)} ids but {losses.shape[0]} losses")
        indices = self._indices("observe", ids)
        parts = all_gather_pairs(indices, losses)
        self._leaf.observe(
            np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        )
        self._consumed += 1
        self._offsets.pop(self._consumed - 1, None)
        if self._weighting:
            self._current = self._take_pending(indices)

    # ------------------------------------------------- importance weights
    @property
    def _weighting(self):
        return self.is_beta is not None and self._leaf.live

    def importance_beta(self, epoch=None):
        """``beta`` of the importance weights in ``epoch`` (default: the current one).

        None when ``is_beta`` is off.

        Example
        -------
        >>> class Stub(BatchSamplerBase):
        ...     pass
        >>> stub = Stub(["a"], 1, 0, is_beta=0.4, is_anneal_epochs=3)
        >>> [round(stub.importance_beta(e), 2) for e in (1, 2, 4, 9)]
        [0.4, 0.6, 1.0, 1.0]
        """
        if self.is_beta is None:
            return None
        epoch = self.epoch if epoch is None else epoch
        if not self.is_anneal_epochs:
            return self.is_beta
        done = min(1.0, max(0, epoch - 1) / self.is_anneal_epochs)
        return self.is_beta + (1.0 - self.is_beta) * done

    def _weights_of(self, indices, within):
        """``(N_k * P(i | C_k)) ** -beta`` over their largest."""
        table = self._leaf.table
        pools = table.pool_of[indices]
        with np.errstate(divide="ignore", over="ignore"):
            weights = np.power(
                self._leaf.pool_sizes[pools] * within, -self.importance_beta()
            )
        weights = np.minimum(weights, np.finfo(np.float64).max)
        return weights / weights.max(), self._leaf.shares[pools] * within

    def _record(self, drawn, me, world):
        """Keep this rank's slots of a handed-out batch with their probabilities."""
        within = self._leaf.probability_of(drawn)
        weights, probs = self._weights_of(drawn, within)
        self._pending.append(
            (drawn[me::world].copy(), probs[me::world], weights[me::world])
        )

    def _take_pending(self, indices):
        """The handed-out batch now in training (dropping older ones), or None."""
        for position, entry in enumerate(self._pending):
            if np.array_equal(entry[0], indices):
                for _ in range(position + 1):
                    self._pending.popleft()
                return entry
        return None

    def _indices(self, caller, ids):
        """Dataset indices of example ids (ValueError naming an unknown one)."""
        try:
            return np.fromiter(
                (self._index_of[str(name)] for name in ids),
                dtype=np.int64,
                count=len(ids),
            )
        except KeyError as err:
            raise ValueError(
                f"{caller}: example id {err.args[0]!r} is not in the training set"
            ) from None

    def _entry_for(self, ids):
        indices = self._indices("batch_weights", list(ids))
        if self._current is not None and np.array_equal(self._current[0], indices):
            return self._current
        for entry in self._pending:
            if np.array_equal(entry[0], indices):
                return entry
        # Not handed out by this sampler (a resume placeholder): the
        # probabilities now in force are the best available.
        within = self._leaf.probability_of(indices)
        weights, probs = self._weights_of(indices, within)
        return indices, probs, weights

    def batch_weights(self, ids):
        """Importance weights of the batch in training, one per slot (or None).

        ``w_i = (N_k * P(i | C_k)) ** -beta`` over the largest of the global
        batch, ``P`` being the probability with which the slot was drawn (not
        the one in force now: the DataLoader draws batches ahead). The batch
        is matched by its ids among the batches handed out and not yet
        trained on, oldest first; :meth:`observe` retires it (so call this
        after or before :meth:`observe` of the same batch, as the Brain
        does). Repeated ids get one weight per slot. None when ``is_beta`` is
        off or the leaf does not learn from losses.

        Arguments
        ---------
        ids : list of str
            The example ids of this rank's batch, in batch order (``batch.id``).

        Returns
        -------
        numpy.ndarray or None
            float64 weights in (0, 1], aligned with ``ids``.
        """
        if not self._weighting:
            return None
        return self._entry_for(ids)[2].copy()

    def batch_probabilities(self, ids):
        """Draw probability ``P_i = share_k * P(i | C_k)`` of each slot (or None).

        The probabilities behind :meth:`batch_weights`, matched the same way.
        """
        if not self._weighting:
            return None
        return self._entry_for(ids)[1].copy()

    # --------------------------------------------------------- reporting
    @property
    def draw_counts(self):
        """Times each example was drawn into a global batch (read-only)."""
        return read_only(self._draw_counts)

    def _guard_mask(self, name):
        table = self._leaf.table
        if table is None:
            return read_only(np.zeros(len(self.ids), dtype=bool))
        return getattr(table, name)

    @property
    def persistently_hard(self):
        """The noise guard's flags (boolean, read-only); all False without an ISBL leaf."""
        return self._guard_mask("persistently_hard")

    @property
    def ever_persistently_hard(self):
        """Examples the noise guard flagged at any point (boolean, read-only)."""
        return self._guard_mask("ever_persistently_hard")

    def stats(self):
        """Coverage, the leaf's statistics and ``is_beta`` (when on).

        ``coverage`` is the share of examples drawn so far, ``coverage_epoch``
        the share drawn at least once in the current epoch.
        """
        size = len(self.ids)
        out = {
            "coverage": float(np.count_nonzero(self._draw_counts) / size),
            "coverage_epoch": float(np.count_nonzero(self._drawn_epoch) / size),
            **self._leaf.stats(),
        }
        if self._weighting:
            out["is_beta"] = self.importance_beta()
        return out

    # ------------------------------------------------------- checkpoints
    @mark_as_saver
    def _save(self, path):
        position = self._consumed if self._consumed else self._handed
        leaf_meta, leaf_arrays = self._leaf.state()
        meta = {
            "format": FORMAT,
            "leaf": self._leaf.name,
            "seed": self.seed,
            "epoch": self.epoch,
            "position": position,
            "draws": int(self._offsets.get(position, 0)),
            "size": len(self.ids),
            "ids_checksum": ids_checksum(self.ids),
            **leaf_meta,
        }
        with open(path, "wb") as handle:
            np.savez(
                handle,
                meta=np.array(json.dumps(meta)),
                draw_counts=self._draw_counts,
                drawn_epoch=self._drawn_epoch,
                **leaf_arrays,
            )

    @mark_as_loader
    def _load(self, path, end_of_epoch):
        with np.load(path, allow_pickle=False) as saved:
            meta = json.loads(str(saved["meta"]))
            arrays = {key: saved[key] for key in saved.files if key != "meta"}
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path}: unknown sampler checkpoint format")
        if meta["ids_checksum"] != ids_checksum(self.ids):
            size = meta.get("size", len(arrays["draw_counts"]))
            raise ValueError(
                f"{path}: saved for a different training set "
                f"({size} examples, this one has {len(self.ids)})"
            )
        leaf = meta.get("leaf", "isbl")  # ISBLSampler did not name its leaf
        if leaf != self._leaf.name:
            raise ValueError(
                f"{path}: saved with leaf={leaf!r}, this sampler has "
                f"leaf={self._leaf.name!r}"
            )
        try:
            self._leaf.load_state(meta, arrays)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None
        self._draw_counts[:] = arrays["draw_counts"]
        self._drawn_epoch[:] = arrays.get("drawn_epoch", False)
        self.seed = int(meta["seed"])
        self.epoch = int(meta["epoch"])
        self._leaf.resume_epoch(self.epoch)
        self._pending.clear()
        self._current = None
        position = 0
        if self._leaf.live and not end_of_epoch:
            position = int(meta["position"])
        cursor = int(meta.get("draws", 0)) if position else 0
        self._handed = self._consumed = self._resume_skip = position
        self._resume_cursor = cursor
        self._offsets = {position: cursor}
