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
interface (``draw``, ``observe``, ``state``/``load_state``, ``stats``):
:class:`ISBLLeaf` draws by loss power and learns from the losses (it is
*live*); :class:`RoundRobinLeaf` walks each group's shuffled list and ignores
them (its draws are fixed by seed and epoch, so a resumed epoch is replayed).

Example
-------
>>> import numpy as np
>>> leaf = ISBLLeaf(np.array([0, 0, 1]), alpha=1.0)
>>> leaf.observe(np.array([1]), np.array([3.0]))
>>> leaf.table.probabilities(0).round(3).tolist(), leaf.stats()["n_quarantined"]
([0.25, 0.75], 0)
>>> robin = RoundRobinLeaf(np.array([0, 1, 0, 1]))
>>> robin.start(np.array([3, 2, 1, 0]))
>>> robin.draw(np.array([0, 0, 0, 1])).tolist()
[2, 0, 2, 3]
"""

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
from hardmine.loss_table import LossPowerTable, check_options
from hardmine.sumtree import read_only
from hardmine.validation import ConfigError, check_choice, check_int

__all__ = ["BatchSamplerBase", "ISBLLeaf", "LEAVES", "RoundRobinLeaf", "ids_checksum"]

#: Version of the checkpoint layout (both samplers wrote version 1 before
#: they shared this base; those files load unchanged).
FORMAT = 1

#: Names of the leaves (``leaf`` argument).
LEAVES = ("uniform", "isbl")


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


# ------------------------------------------------------------------ leaves
class ISBLLeaf:
    """Loss-power draws inside each group, steered by the observed losses.

    Arguments
    ---------
    group_of : array_like of int
        Group (pool) of every example.
    ids : list of str, optional
        Example names for error messages.
    **options
        ``alpha``, ``eps``, ``transform`` and ``momentum`` of the
        :class:`~hardmine.loss_table.LossPowerTable` that holds the scores.
    """

    name = "isbl"
    live = True  # the draws follow the losses fed back

    def __init__(self, group_of, ids=None, **options):
        self.table = LossPowerTable(group_of, ids=ids, **options)

    def draw(self, groups, rng):
        """One example of each group in ``groups`` (with replacement)."""
        return self.table.draw(groups, rng)

    def observe(self, indices, losses):
        """Apply the gathered losses, in order."""
        self.table.observe_indices(indices, losses)

    def state(self):
        """``(meta, arrays)`` for a checkpoint."""
        table = self.table.state_dict()
        meta = {key: table[key] for key in ("n_observations", "size", "pool_checksum")}
        arrays = {key: table[key] for key in ("scores", "quarantined", "seen")}
        return meta, arrays

    def load_state(self, meta, arrays):
        """Restore :meth:`state` (``seen`` may be missing from older files)."""
        state = {key: meta[key] for key in ("n_observations", "size", "pool_checksum")}
        state.update(
            scores=arrays["scores"],
            quarantined=arrays["quarantined"],
            seen=arrays.get("seen"),
        )
        self.table.load_state_dict(state)

    def stats(self):
        """``mean_score`` and ``n_quarantined``."""
        return {
            "mean_score": float(self.table.scores.mean()),
            "n_quarantined": int(self.table.n_quarantined),
        }


class RoundRobinLeaf:
    """Uniform draws inside each group: the next member of its shuffled list.

    :meth:`start` sets an epoch's shuffle; the ``k``-th draw of group ``g``
    from then on takes member ``k mod size_g`` of ``g``'s list, so every
    member is drawn once before any is drawn twice. Losses are ignored.

    Arguments
    ---------
    group_of : array_like of int
        Group of every example (values ``0 .. G-1``, every group non-empty).
    """

    name = "uniform"
    live = False  # the draws are a function of the epoch's shuffle alone
    table = None

    def __init__(self, group_of):
        self.group_of = np.asarray(group_of, dtype=np.int64)
        self.size = np.bincount(self.group_of)
        self.offset = np.concatenate([[0], np.cumsum(self.size)[:-1]])
        self._small = np.uint16 if len(self.size) < 2**16 else np.int64
        self._members = np.arange(len(self.group_of))
        self._next = np.zeros(len(self.size), dtype=np.int64)

    def start(self, perm):
        """Begin an epoch whose groups are walked in the order of ``perm``."""
        perm = np.asarray(perm, dtype=np.int64)
        order = np.argsort(self.group_of[perm].astype(self._small), kind="stable")
        self._members = perm[order]
        self._next[:] = 0

    def draw(self, groups, rng=None):
        """The next member of each group in ``groups``, in order (vectorised)."""
        groups = np.asarray(groups, dtype=np.int64)
        # In group-sorted order the k-th draw of group g in this call takes
        # position next_g + k of g's list (modulo its size).
        order = np.argsort(groups.astype(self._small), kind="stable")
        counts = np.bincount(groups, minlength=len(self.size))
        position = np.arange(len(groups)) - np.repeat(
            np.cumsum(counts) - counts, counts
        )
        position += np.repeat(self._next, counts)
        position %= np.repeat(self.size, counts)
        position += np.repeat(self.offset, counts)
        draws = np.empty(len(groups), dtype=np.int64)
        draws[order] = self._members[position]
        self._next = (self._next + counts) % self.size
        return draws

    def observe(self, indices, losses):
        """Nothing to learn."""

    def state(self):
        """Nothing to save: the draws follow from seed and epoch."""
        return {}, {}

    def load_state(self, meta, arrays):
        """Nothing to restore."""

    def stats(self):
        """No statistics of its own."""
        return {}


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
        """Start epoch ``epoch``; the restored epoch keeps its resume point."""
        epoch = check_int("epoch", epoch, minimum=0)
        if epoch != self.epoch:
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
            np.add.at(self._draw_counts, drawn, 1)
            cursor += len(drawn)
            batch += 1
            self._offsets[batch] = cursor
            self._handed = batch
            yield drawn[me::world].tolist()

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
        try:
            indices = np.fromiter(
                (self._index_of[str(name)] for name in ids),
                dtype=np.int64,
                count=len(ids),
            )
        except KeyError as err:
            raise ValueError(
                f"observe: example id {err.args[0]!r} is not in the training set"
            ) from None
        parts = all_gather_pairs(indices, losses)
        self._leaf.observe(
            np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        )
        self._consumed += 1
        self._offsets.pop(self._consumed - 1, None)

    # --------------------------------------------------------- reporting
    @property
    def draw_counts(self):
        """Times each example was drawn into a global batch (read-only)."""
        return read_only(self._draw_counts)

    def stats(self):
        """``coverage`` (share of examples drawn so far) and the leaf's statistics."""
        coverage = np.count_nonzero(self._draw_counts) / len(self.ids)
        return {"coverage": float(coverage), **self._leaf.stats()}

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
        self.seed = int(meta["seed"])
        self.epoch = int(meta["epoch"])
        position = 0
        if self._leaf.live and not end_of_epoch:
            position = int(meta["position"])
        cursor = int(meta.get("draws", 0)) if position else 0
        self._handed = self._consumed = self._resume_skip = position
        self._resume_cursor = cursor
        self._offsets = {position: cursor}
