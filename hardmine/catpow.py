"""Category- and dataset-balanced batch sampling with power-law weights.

Training sets that pool several corpora (datasets ``d``) with imbalanced
labels (categories ``l``, e.g. languages, speakers or keywords) are
re-balanced by drawing every utterance in two steps, with sizes ``n``
measured in bins (a duration or a frame count):

* a dataset with ``P(d) ∝ (N_d / M) ** beta_D``, where ``N_d`` is the size
  of dataset ``d`` and ``M`` the size of everything;
* a category of that dataset with ``P(l | d) ∝ (n_ld / N_d) ** beta_L``,
  where ``n_ld`` is the size of category ``l`` inside dataset ``d``;
* an utterance of the ``(d, l)`` group: the next one of the group's list,
  shuffled once per epoch and walked round-robin, so ``P(x | l, d) = 1 /
  k_ld`` for the ``k_ld`` utterances of the group. With ``leaf="isbl"`` the
  utterance is instead drawn from the group with the loss-power
  distribution of importance sampling (live feedback through
  :meth:`CategoryDatasetPowerSampler.observe`).

A power of 1 keeps the natural proportions, a power of 0 makes every
dataset (category) equally likely. An epoch holds
``int(dataset_scaling_factor * total_bins / mean_utterance_bins)`` draws.
The draws are cut into batches in order: a batch closes as soon as its bins
exceed ``batch_bins`` while it holds at least ``min_batch_size``
utterances, or when it holds ``max_batch_size`` utterances.

Both samplers are batch samplers (they yield lists of dataset indices) that
do their own distributed sharding: every rank computes the identical plan
and keeps ``batch[rank::world_size]`` of each batch.

Example
-------
>>> from speechbrain.dataio.dataset import DynamicItemDataset
>>> data = {
...     f"u{i}": {"duration": 1.0 + i % 3, "lang": "en" if i < 12 else "fr",
...               "corpus": "a" if i % 2 else "b"}
...     for i in range(16)
... }
>>> sampler = CategoryDatasetPowerSampler(
...     DynamicItemDataset(data), batch_bins=6, category_field="lang",
...     dataset_field="corpus", category_upsampling_factor=0.0)
>>> sampler.groups
[('a', 'en'), ('a', 'fr'), ('b', 'en'), ('b', 'fr')]
>>> sampler.num_draws  # int(1.2 * 16 utterances)
19
>>> batches = list(sampler)
>>> sum(len(b) for b in batches) == sampler.num_draws
True
"""

import numpy as np

from hardmine.catpow_plan import (
    GroupPlan,
    UtteranceTable,
    alias_table,
    cut_batches,
    read_espnet_files,
    table_from_dataset,
)
from hardmine.sampler_base import BatchSamplerBase
from hardmine.sampler_leaves import RoundRobinLeaf
from hardmine.validation import ConfigError, check_int, check_number

__all__ = [
    "CategoryDatasetPowerSampler",
    "CategoryPowerSampler",
    "UtteranceTable",
    "alias_table",
    "cut_batches",
    "read_espnet_files",
]

_LIVE_STREAM = 7919  # keeps per-batch generators apart from the epoch plan's


class CategoryDatasetPowerSampler(BatchSamplerBase):
    """Batch sampler balancing datasets and categories with power laws.

    See the module docstring for the sampling equations. Give the sampler to
    a DataLoader as ``batch_sampler``; call :meth:`set_epoch` before each
    epoch (SpeechBrain does so for ``Brain.train_sampler``).

    **Epoch plan.** The shuffle of every group, the dataset and category of
    every draw come from the sampler's own generator seeded with ``(seed,
    epoch)``: the same epoch gives the same plan on every rank and in every
    run, another epoch a different one. With the uniform leaf the whole
    plan (utterances and batch cuts) is computed up front with vectorised
    numpy, and a resumed epoch is replayed exactly by SpeechBrain's loader.

    **ISBL leaf.** With ``leaf="isbl"`` the groups of all draws are still
    planned up front (the same sequence as with the uniform leaf), but the
    utterance of each draw comes from the group's loss-power distribution
    ``P(x | l, d) ∝ L_x ** alpha + eps`` (a
    :class:`~hardmine.loss_table.LossPowerTable` with the groups as pools),
    drawn when the loader asks for the batch, so the losses passed to
    :meth:`observe` steer the next batches. Batch ``b`` uses a generator
    seeded with ``(seed, epoch, b)``. Because utterance sizes are known only
    once drawn, ``len()`` is then an estimate (the uniform leaf's count).
    After a mid-epoch load at position ``P`` (batches trained on) the
    sampler answers SpeechBrain's ``P`` fast-forward pulls with cheap
    placeholder batches and continues live from batch ``P``.

    **Distributed training.** Every rank computes the identical global
    batch and keeps ``batch[rank::world_size]`` (so ``min_batch_size`` must
    be at least the number of processes); an incomplete final batch with
    fewer utterances than processes is dropped. The ISBL leaf's
    :meth:`observe` gathers the losses of all ranks, so all tables agree.

    Feedback, sharding, resuming and checkpoints are those of
    :class:`~hardmine.sampler_base.BatchSamplerBase`; the leaf is an
    :class:`~hardmine.sampler_leaves.ISBLLeaf` or a
    :class:`~hardmine.sampler_leaves.RoundRobinLeaf`. The groups, their
    probabilities and alias tables are the attribute ``group_plan`` (a
    :class:`~hardmine.catpow_plan.GroupPlan`).

    Arguments
    ---------
    dataset : speechbrain.dataio.dataset.DynamicItemDataset or UtteranceTable
        The training set; index ``i`` is the position in ``dataset.data_ids``
        and the raw CSV fields are read from ``dataset.data[id]``. An
        :class:`~hardmine.catpow_plan.UtteranceTable` is used as it is (the
        field arguments are then not used).
    batch_bins : float
        A batch closes once its bins exceed this (same unit as ``bins_field``).
        Must be at least the size of the largest utterance.
    category_field : str
        Field holding the category (e.g. ``lang``, ``spk_id``, ``command``);
        required with a dataset.
    dataset_field : str, optional
        Field naming the source dataset; one dataset when omitted.
    bins_field : str
        Field holding the utterance size (default ``duration``).
    min_batch_size, max_batch_size : int
        Bounds on the number of utterances per batch (``max`` optional).
    category_upsampling_factor : float
        ``beta_L >= 0``.
    dataset_upsampling_factor : float
        ``beta_D >= 0``.
    dataset_scaling_factor : float
        ``>= 1``; draws per epoch are this times the number of utterances
        (``total_bins / mean_utterance_bins``).
    drop_last : bool
        Drop a final batch that did not meet the closing rule.
    seed : int
        Combined with the epoch to seed the sampler's own generator.
    leaf : str
        ``"uniform"`` (round-robin inside each group) or ``"isbl"``
        (loss-power importance sampling inside each group).
    **options
        Keyword arguments of :class:`~hardmine.sampler_base.BatchSamplerBase`:
        ``alpha``, ``eps``, ``transform`` and ``momentum``, the options of the
        ISBL leaf (see :class:`~hardmine.loss_table.LossPowerTable`); the
        leaf's exploration, staleness, noise-guard, capacity and importance
        options as in :class:`~hardmine.isbl.ISBLSampler`, with the groups as
        pools and ``P(d) P(l | d)`` as their draw shares (used with
        ``leaf="isbl"`` only); and ``rank``, ``world_size``, the distributed
        position (by default torch.distributed's when it is initialised, else
        a single process).

    Example
    -------
    >>> from speechbrain.dataio.dataset import DynamicItemDataset
    >>> data = {f"u{i}": {"duration": 2.0, "spk": "s1" if i < 9 else "s2"}
    ...         for i in range(10)}
    >>> sampler = CategoryDatasetPowerSampler(
    ...     DynamicItemDataset(data), batch_bins=4.0, category_field="spk",
    ...     category_upsampling_factor=0.0, dataset_scaling_factor=2.0)
    >>> sampler.set_epoch(3)
    >>> batches = list(sampler)
    >>> [len(b) for b in batches]
    [3, 3, 3, 3, 3, 3, 2]
    >>> round(sampler.group_probabilities[("all", "s2")], 3)  # beta_L = 0
    0.5
    """

    def __init__(
        self,
        dataset,
        batch_bins,
        category_field=None,
        dataset_field=None,
        bins_field="duration",
        min_batch_size=1,
        max_batch_size=None,
        category_upsampling_factor=1.0,
        dataset_upsampling_factor=1.0,
        dataset_scaling_factor=1.2,
        drop_last=False,
        seed=0,
        leaf="uniform",
        **options,
    ):
        if isinstance(dataset, UtteranceTable):
            table = dataset
        else:
            table = table_from_dataset(
                dataset, category_field, dataset_field, bins_field
            )
        self.table = table
        self.batch_bins = check_number(
            "batch_bins", batch_bins, minimum=0.0, strict=True
        )
        self.min_batch_size = check_int("min_batch_size", min_batch_size, minimum=1)
        if max_batch_size is not None:
            max_batch_size = check_int(
                "max_batch_size", max_batch_size, minimum=self.min_batch_size
            )
        self.max_batch_size = max_batch_size
        self.category_upsampling_factor = check_number(
            "category_upsampling_factor", category_upsampling_factor, minimum=0.0
        )
        self.dataset_upsampling_factor = check_number(
            "dataset_upsampling_factor", dataset_upsampling_factor, minimum=0.0
        )
        self.dataset_scaling_factor = check_number(
            "dataset_scaling_factor", dataset_scaling_factor, minimum=1.0
        )
        if not isinstance(drop_last, bool):
            raise ConfigError("drop_last", f"must be true or false, got {drop_last!r}")
        self.drop_last = drop_last
        super().__init__(
            table.ids,
            placeholder_size=self.min_batch_size,
            seed=seed,
            leaf=leaf,
            **options,
        )
        largest = int(np.argmax(table.bins))
        if table.bins[largest] > self.batch_bins:
            raise ConfigError(
                "batch_bins",
                f"{self.batch_bins:g} is smaller than utterance {table.ids[largest]!r} "
                f"({table.bins[largest]:g} bins)",
            )
        self.group_plan = GroupPlan(
            table, self.category_upsampling_factor, self.dataset_upsampling_factor
        )
        self._group_of = self.group_plan.group_of
        self._mean_bins = self.group_plan.total_bins / len(table)
        self.num_draws = int(
            self.dataset_scaling_factor * self.group_plan.total_bins / self._mean_bins
        )
        self._leaf = self._make_leaf(self._group_of)
        # The round-robin plan gives len() (and a static leaf's batches).
        self._round_robin = self._leaf
        if self._leaf.live:
            self._round_robin = RoundRobinLeaf(self._group_of)
            plan = self.group_plan
            self._leaf.set_shares(plan.p_dataset[plan.group_dataset] * plan.p_category)
        self._plan_cache = None
        self._groups_cache = None

    @classmethod
    def from_espnet_files(
        cls,
        dataset=None,
        shape_file=None,
        category2utt_file=None,
        dataset2utt_file=None,
        utt2dataset_file=None,
        **options,
    ):
        """Build the sampler from ESPnet/Kaldi-style map files.

        Arguments
        ---------
        dataset : DynamicItemDataset, optional
            When given, indices follow ``dataset.data_ids`` (so a YAML
            ``!name:`` factory receiving the training set works); otherwise
            they follow the order of the shape file.
        shape_file, category2utt_file, dataset2utt_file, utt2dataset_file
            See :func:`~hardmine.catpow_plan.read_espnet_files`.
        **options
            ``batch_bins`` (required) and the other keyword arguments of the
            class, except the field names.

        Returns
        -------
        CategoryDatasetPowerSampler
        """
        if shape_file is None:
            raise ConfigError("shape_file", "required")
        if category2utt_file is None:
            raise ConfigError("category2utt_file", "required")
        if "batch_bins" not in options:
            raise ConfigError("batch_bins", "required")
        ids = None if dataset is None else list(dataset.data_ids)
        table = read_espnet_files(
            shape_file, category2utt_file, dataset2utt_file, utt2dataset_file, ids=ids
        )
        return cls(table, **options)

    # ------------------------------------------------------------ inspection
    @property
    def groups(self):
        """The ``(dataset, category)`` groups, in the sampler's order."""
        return self.group_plan.groups

    @property
    def dataset_probabilities(self):
        """``{dataset: P(d)}``."""
        return dict(zip(self.table.dataset_names, self.group_plan.p_dataset.tolist()))

    @property
    def category_probabilities(self):
        """``{(dataset, category): P(l | d)}``."""
        return dict(zip(self.groups, self.group_plan.p_category.tolist()))

    @property
    def group_probabilities(self):
        """``{(dataset, category): P(d) P(l | d)}``."""
        plan = self.group_plan
        joint = plan.p_dataset[plan.group_dataset] * plan.p_category
        return dict(zip(self.groups, joint.tolist()))

    def group_of_index(self, indices):
        """Group number (position in :attr:`groups`) of dataset indices."""
        return self._group_of[np.asarray(indices, dtype=np.int64)]

    # ------------------------------------------------------------- planning
    def _draw_groups(self, rng):
        """Per-epoch shuffle and the sequence of groups of all draws."""
        perm = rng.permutation(len(self.table))
        return perm, self.group_plan.draw(rng.random((self.num_draws, 2)))

    def group_sequence(self, epoch=None):
        """Group number of every draw of an epoch (default: the current one)."""
        return self._draw_groups(
            self._generator(self.epoch if epoch is None else epoch)
        )[1]

    def _uniform_plan(self, epoch):
        """(draws, starts, ends) of the round-robin plan for ``epoch``."""
        if self._plan_cache is not None and self._plan_cache[0] == epoch:
            return self._plan_cache[1]
        perm, groups = self._draw_groups(self._generator(epoch))
        self._round_robin.start(perm)
        draws = self._round_robin.draw(groups)
        prefix = np.zeros(len(draws) + 1)
        np.cumsum(self.table.bins[draws], out=prefix[1:])
        starts, ends, complete = cut_batches(
            prefix, self.batch_bins, self.min_batch_size, self.max_batch_size
        )
        if self.drop_last and not complete:
            starts, ends = starts[:-1], ends[:-1]
        plan = (draws, starts, ends)
        self._plan_cache = (epoch, plan)
        return plan

    def plan(self, epoch=None):
        """All batches of an epoch, before distributed sharding (uniform leaf).

        Arguments
        ---------
        epoch : int, optional
            Defaults to the current epoch.

        Returns
        -------
        list of list of int
        """
        if self._leaf.live:
            raise RuntimeError(
                "plan(): an ISBL leaf draws utterances live; iterate the sampler"
            )
        draws, starts, ends = self._uniform_plan(self.epoch if epoch is None else epoch)
        flat = draws.tolist()
        return [flat[s:e] for s, e in zip(starts.tolist(), ends.tolist())]

    # ------------------------------------------------------------ iteration
    def _shard_params(self):
        rank, world = super()._shard_params()
        if world > 1 and self.min_batch_size < world:
            raise ConfigError(
                "min_batch_size",
                f"must be >= the number of processes ({world}) so that every rank gets a share of each batch",
            )
        return rank, world

    def __len__(self):
        _, starts, ends = self._uniform_plan(self.epoch)
        count = len(starts)
        world = self._rank_world()[1]
        if count and world > 1 and ends[-1] - starts[-1] < world:
            count -= 1
        return count

    def _max_batches(self, world):
        return self.num_draws  # every batch holds at least one draw

    def _global_batches(self, batch, cursor, world):
        if self._leaf.live:
            return self._live_batches(batch, cursor, world)
        return self._planned_batches(batch, world)

    def _planned_batches(self, batch, world):
        # The plan is fixed by seed and epoch: after a mid-epoch load
        # SpeechBrain's loader discards the first batches itself.
        draws, starts, ends = self._uniform_plan(self.epoch)
        for s, e in zip(starts[batch:].tolist(), ends[batch:].tolist()):
            if e - s < world:
                break  # an incomplete final batch too small to shard
            yield draws[s:e]

    def _live_batches(self, batch, start, world):
        while start < self.num_draws:
            drawn, complete = self.draw_live_batch(batch, start)
            if not complete and (self.drop_last or len(drawn) < world):
                break
            yield drawn
            start += len(drawn)
            batch += 1

    def _live_groups(self):
        if self._groups_cache is None or self._groups_cache[0] != self.epoch:
            self._groups_cache = (self.epoch, self.group_sequence(self.epoch))
        return self._groups_cache[1]

    def draw_live_batch(self, batch, start):
        """Draw global batch ``batch`` of the current epoch from draw ``start``.

        A pure function of the leaf's state, seed, epoch, ``batch`` and
        ``start``: utterances are drawn by the leaf for the planned groups
        ``start, start + 1, ...`` until the batch meets the closing rule.

        Returns
        -------
        indices : numpy.ndarray
            Dataset indices of the whole (unsharded) batch.
        complete : bool
            False for a final batch cut short by the end of the epoch.
        """
        groups = self._live_groups()
        rng = self._generator(self.epoch, _LIVE_STREAM, batch)
        chunk = max(self.min_batch_size, int(self.batch_bins / self._mean_bins) + 2)
        if self.max_batch_size is not None:
            chunk = min(chunk, self.max_batch_size)
        drawn = np.zeros(0, dtype=np.int64)
        while True:
            lo = start + len(drawn)
            hi = min(self.num_draws, lo + chunk)
            drawn = np.concatenate([drawn, self._leaf.draw(groups[lo:hi], rng)])
            prefix = np.zeros(len(drawn) + 1)
            np.cumsum(self.table.bins[drawn], out=prefix[1:])
            end = max(
                int(np.searchsorted(prefix, self.batch_bins, side="right")),
                self.min_batch_size,
            )
            if self.max_batch_size is not None:
                end = min(end, self.max_batch_size)
            if end <= len(drawn):
                return drawn[:end], True
            if hi == self.num_draws:
                return drawn, False
            chunk *= 2

    def __repr__(self):
        return (
            f"{type(self).__name__}(utterances={len(self.table)}, groups={len(self.group_plan.group_size)}, "
            f"draws={self.num_draws}, batch_bins={self.batch_bins:g}, "
            f"beta_L={self.category_upsampling_factor:g}, beta_D={self.dataset_upsampling_factor:g}, "
            f"leaf={self.leaf!r})"
        )


class CategoryPowerSampler(CategoryDatasetPowerSampler):
    """Single-level version: ``P(l) ∝ (n_l / N) ** upsampling_factor``.

    Every utterance belongs to one dataset, so only the category power
    applies. Arguments are those of :class:`CategoryDatasetPowerSampler`
    without ``dataset_field``, with ``upsampling_factor`` for ``beta``.

    Example
    -------
    >>> words = ["yes"] * 30 + ["no"] * 10  # one second each
    >>> table = UtteranceTable([f"u{i}" for i in range(40)], [1.0] * 40, words)
    >>> sampler = CategoryPowerSampler(table, batch_bins=8, upsampling_factor=0.5)
    >>> {k: round(v, 3) for k, v in sampler.group_probabilities.items()}
    {('all', 'no'): 0.366, ('all', 'yes'): 0.634}
    """

    def __init__(
        self,
        dataset,
        batch_bins,
        category_field=None,
        bins_field="duration",
        upsampling_factor=1.0,
        **options,
    ):
        if "dataset_field" in options or "dataset_upsampling_factor" in options:
            raise ConfigError(
                "dataset_field", "CategoryPowerSampler has a single dataset"
            )
        if "category_upsampling_factor" in options:
            raise ConfigError(
                "upsampling_factor", "CategoryPowerSampler takes upsampling_factor only"
            )
        super().__init__(
            dataset,
            batch_bins,
            category_field,
            bins_field=bins_field,
            category_upsampling_factor=upsampling_factor,
            **options,
        )

    @classmethod
    def from_espnet_files(
        cls, dataset=None, shape_file=None, category2utt_file=None, **options
    ):
        """Build from a shape file and a category2utt file (see the parent)."""
        return super().from_espnet_files(
            dataset,
            shape_file=shape_file,
            category2utt_file=category2utt_file,
            **options,
        )
