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

import hashlib
import json
import os

import numpy as np
import torch
from speechbrain.utils.checkpoints import (
    mark_as_loader,
    mark_as_saver,
    register_checkpoint_hooks,
)

from hardmine.distributed import all_gather_pairs
from hardmine.loss_table import LossPowerTable
from hardmine.validation import ConfigError, check_choice, check_int, check_number

__all__ = [
    "CategoryDatasetPowerSampler",
    "CategoryPowerSampler",
    "UtteranceTable",
    "alias_table",
    "cut_batches",
    "read_espnet_files",
]

#: Dataset name used when no dataset field or dataset map is given.
SINGLE_DATASET = "all"

LEAVES = ("uniform", "isbl")

_FORMAT = 1
_LIVE_STREAM = 7919  # keeps per-batch generators apart from the epoch plan's


def _ids_checksum(ids):
    digest = hashlib.sha1()
    for name in ids:
        digest.update(name.encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()


class UtteranceTable:
    """Utterances with their bins, category and dataset, in dataset-index order.

    Arguments
    ---------
    ids : list of str
        Utterance IDs; position ``i`` is the dataset index yielded for it.
    bins : sequence of float
        Size of each utterance (duration, samples or frames), all ``> 0``.
    categories : sequence of str
        Category label of each utterance.
    datasets : sequence of str, optional
        Dataset label of each utterance (one dataset when omitted).
    source : str
        Where the table came from, quoted in error messages.

    Example
    -------
    >>> table = UtteranceTable(["a", "b", "c"], [1.0, 2.0, 3.0], ["x", "y", "x"])
    >>> table.category_names, table.dataset_names, table.category_of.tolist()
    (['x', 'y'], ['all'], [0, 1, 0])
    """

    def __init__(self, ids, bins, categories, datasets=None, source="table"):
        self.ids = [str(i) for i in ids]
        n = len(self.ids)
        if n == 0:
            raise ValueError(f"{source}: no utterances")
        if len(set(self.ids)) != n:
            dup = _first_duplicate(self.ids)
            raise ValueError(f"{source}: utterance {dup!r} appears more than once")
        if datasets is None:
            datasets = [SINGLE_DATASET] * n
        if len(bins) != n or len(categories) != n or len(datasets) != n:
            raise ValueError(
                f"{source}: ids, bins, categories and datasets differ in length"
            )
        self.bins = np.asarray(bins, dtype=np.float64)
        bad = np.flatnonzero(~(self.bins > 0) | ~np.isfinite(self.bins))
        if bad.size:
            i = int(bad[0])
            raise ValueError(
                f"{source}: utterance {self.ids[i]!r} has size {float(self.bins[i])}; "
                "sizes must be finite and > 0"
            )
        self.category_names, self.category_of = _encode(categories)
        self.dataset_names, self.dataset_of = _encode(datasets)
        self.source = source

    def __len__(self):
        return len(self.ids)


def _first_duplicate(values):
    seen = set()
    for v in values:
        if v in seen:
            return v
        seen.add(v)
    return None


def _encode(labels):
    """Sorted unique label names and the integer code of every entry."""
    labels = [str(v) for v in labels]
    names = sorted(set(labels))
    code = {name: i for i, name in enumerate(names)}
    return names, np.fromiter(
        (code[v] for v in labels), dtype=np.int64, count=len(labels)
    )


def _table_from_dataset(dataset, category_field, dataset_field, bins_field):
    """Build an :class:`UtteranceTable` from a DynamicItemDataset's raw fields."""
    for attr in ("data", "data_ids"):
        if not hasattr(dataset, attr):
            raise TypeError(
                "dataset: expected a SpeechBrain DynamicItemDataset (with .data "
                f"and .data_ids), got {type(dataset).__name__}"
            )
    ids = list(dataset.data_ids)
    if not ids:
        raise ValueError("dataset: the training set has no examples")
    fields = [("category_field", category_field), ("bins_field", bins_field)]
    if dataset_field is not None:
        fields.append(("dataset_field", dataset_field))
    first = dataset.data[ids[0]]
    for name, field in fields:
        if not isinstance(field, str) or field not in first:
            known = ", ".join(sorted(first))
            raise ConfigError(
                name, f"no field {field!r} in the dataset (fields: {known})"
            )
    cats, dsets, bins = [], [], []
    for uid in ids:
        row = dataset.data[uid]
        for name, field in fields:
            if field not in row:
                raise ConfigError(name, f"example {uid!r} has no field {field!r}")
        cat = str(row[category_field]).strip()
        if not cat:
            raise ConfigError(
                "category_field", f"example {uid!r} has an empty {category_field!r}"
            )
        cats.append(cat)
        if dataset_field is not None:
            ds = str(row[dataset_field]).strip()
            if not ds:
                raise ConfigError(
                    "dataset_field", f"example {uid!r} has an empty {dataset_field!r}"
                )
            dsets.append(ds)
        try:
            bins.append(float(row[bins_field]))
        except (TypeError, ValueError):
            raise ConfigError(
                "bins_field",
                f"example {uid!r}: {bins_field}={row[bins_field]!r} is not a number",
            ) from None
    return UtteranceTable(
        ids, bins, cats, dsets if dataset_field is not None else None, source="dataset"
    )


def _read_kaldi_map(path, what):
    """Read ``key value...`` lines into a dict of key -> list of tokens."""
    out = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            tokens = line.split()
            if not tokens:
                continue
            if tokens[0] in out:
                raise ValueError(
                    f"{path}:{lineno}: {what} {tokens[0]!r} is listed twice"
                )
            out[tokens[0]] = tokens[1:]
    if not out:
        raise ValueError(f"{path}: empty file")
    return out


def read_espnet_files(
    shape_file,
    category2utt_file,
    dataset2utt_file=None,
    utt2dataset_file=None,
    ids=None,
):
    """Read ESPnet/Kaldi-style maps into an :class:`UtteranceTable`.

    Arguments
    ---------
    shape_file : str or list of str
        ``utt 500`` or ``utt 500,80`` lines; the first number is the size in
        bins. A list must hold exactly one path.
    category2utt_file : str
        ``category utt1 utt2 ...`` lines.
    dataset2utt_file, utt2dataset_file : str, optional
        ``dataset utt1 utt2 ...`` or ``utt dataset`` lines; either or both
        (they must agree). Without them every utterance is in one dataset.
    ids : list of str, optional
        Utterance order (e.g. a DynamicItemDataset's ``data_ids``); map
        entries for utterances outside it are ignored. By default the order
        of the shape file, and every map entry must name an utterance of it.

    Returns
    -------
    UtteranceTable

    Example
    -------
    >>> import pathlib, tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     d = pathlib.Path(tmp)
    ...     _ = (d / "shape").write_text("u1 300\\nu2 500,80\\nu3 200\\n")
    ...     _ = (d / "category2utt").write_text("en u1 u3\\nfr u2\\n")
    ...     table = read_espnet_files(str(d / "shape"), str(d / "category2utt"))
    >>> table.ids, table.bins.tolist(), table.category_of.tolist()
    (['u1', 'u2', 'u3'], [300.0, 500.0, 200.0], [0, 1, 0])
    """
    if isinstance(shape_file, (list, tuple)):
        if len(shape_file) != 1:
            raise ConfigError(
                "shape_file",
                f"exactly one shape file is supported, got {len(shape_file)}",
            )
        shape_file = shape_file[0]
    shape_file = os.fspath(shape_file)
    shapes = _read_kaldi_map(shape_file, "utterance")
    sizes = {}
    for utt, rest in shapes.items():
        try:
            sizes[utt] = float(rest[0].split(",")[0])
        except (IndexError, ValueError):
            raise ValueError(
                f"{shape_file}: utterance {utt!r} has no numeric shape: {rest!r}"
            ) from None
    universe = list(shapes) if ids is None else [str(i) for i in ids]
    in_universe = set(universe)
    strict = ids is None

    def invert(path, what):
        mapping = {}
        for key, utts in _read_kaldi_map(path, what).items():
            if not utts:
                raise ValueError(f"{path}: {what} {key!r} has no utterances")
            for utt in utts:
                if utt not in in_universe:
                    if strict:
                        raise ValueError(
                            f"{path}: utterance {utt!r} of {what} {key!r} is not in {shape_file}"
                        )
                    continue
                if utt in mapping and mapping[utt] != key:
                    raise ValueError(
                        f"{path}: utterance {utt!r} is in {what} {mapping[utt]!r} and {key!r}"
                    )
                mapping[utt] = key
        return mapping

    category_of = invert(os.fspath(category2utt_file), "category")
    dataset_of = None
    if dataset2utt_file is not None:
        dataset_of = invert(os.fspath(dataset2utt_file), "dataset")
    if utt2dataset_file is not None:
        path = os.fspath(utt2dataset_file)
        direct = {}
        for utt, rest in _read_kaldi_map(path, "utterance").items():
            if len(rest) != 1:
                raise ValueError(
                    f"{path}: utterance {utt!r} needs exactly one dataset, got {rest!r}"
                )
            if utt not in in_universe:
                if strict:
                    raise ValueError(
                        f"{path}: utterance {utt!r} is not in {shape_file}"
                    )
                continue
            if dataset_of is not None and dataset_of.get(utt, rest[0]) != rest[0]:
                raise ValueError(
                    f"{path}: utterance {utt!r} is in dataset {rest[0]!r} here but in "
                    f"{dataset_of[utt]!r} in {dataset2utt_file}"
                )
            direct[utt] = rest[0]
        if dataset_of is not None:
            for utt in dataset_of:
                if utt not in direct:
                    raise ValueError(
                        f"{path}: utterance {utt!r} is missing (it is in {dataset2utt_file})"
                    )
        dataset_of = direct
    for utt in universe:
        if utt not in sizes:
            raise ValueError(f"{shape_file}: utterance {utt!r} is missing")
        if utt not in category_of:
            raise ValueError(f"{category2utt_file}: utterance {utt!r} is missing")
        if dataset_of is not None and utt not in dataset_of:
            missing_in = (
                utt2dataset_file if utt2dataset_file is not None else dataset2utt_file
            )
            raise ValueError(f"{missing_in}: utterance {utt!r} is missing")
    return UtteranceTable(
        universe,
        [sizes[u] for u in universe],
        [category_of[u] for u in universe],
        None if dataset_of is None else [dataset_of[u] for u in universe],
        source=shape_file,
    )


def _resolve_rank(rank, world_size):
    """The explicit rank/world size, else torch.distributed's, else (0, 1)."""
    if world_size is None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            world_size = torch.distributed.get_world_size()
            rank = torch.distributed.get_rank() if rank is None else rank
        else:
            world_size = 1
    if rank is None:
        rank = 0
    return rank, world_size


def alias_table(probs):
    """Walker's alias table for drawing from ``probs`` in constant time.

    Draw ``x = u * K`` for a uniform ``u`` in ``[0, 1)`` and ``K =
    len(probs)``; with ``j = floor(x)`` the outcome is ``j`` when ``x - j <
    keep[j]``, else ``alias[j]``.

    Arguments
    ---------
    probs : array_like of float
        Non-negative weights (normalised here).

    Returns
    -------
    keep : numpy.ndarray of float
    alias : numpy.ndarray of int

    Example
    -------
    >>> keep, alias = alias_table([0.5, 0.25, 0.25])
    >>> exact = np.zeros(3)
    >>> for j in range(3):
    ...     exact[j] += keep[j] / 3
    ...     exact[alias[j]] += (1 - keep[j]) / 3
    >>> exact.round(12).tolist()
    [0.5, 0.25, 0.25]
    """
    probs = np.asarray(probs, dtype=np.float64)
    size = len(probs)
    scaled = (probs * (size / probs.sum())).tolist()
    keep = np.ones(size)
    alias = np.arange(size, dtype=np.int64)
    small = [j for j in range(size) if scaled[j] < 1.0]
    large = [j for j in range(size) if scaled[j] >= 1.0]
    while small and large:
        lo, hi = small.pop(), large.pop()
        keep[lo] = scaled[lo]
        alias[lo] = hi
        scaled[hi] += scaled[lo] - 1.0
        (small if scaled[hi] < 1.0 else large).append(hi)
    return keep, alias  # leftovers keep themselves (rounding only)


def cut_batches(prefix, batch_bins, min_batch_size, max_batch_size):
    """Cut a sequence of draws into batches from the prefix sums of their bins.

    A batch starting at draw ``s`` ends before the first draw ``e`` at which
    either its bins ``prefix[e] - prefix[s]`` exceed ``batch_bins`` while it
    holds at least ``min_batch_size`` draws, or it holds ``max_batch_size``
    draws. The end of a batch starting at every draw comes from one
    vectorised search in the prefix sums; only the chain of batch starts is
    then walked, one step per batch.

    Arguments
    ---------
    prefix : numpy.ndarray
        ``T + 1`` prefix sums of positive bins (``prefix[0] == 0``).
    batch_bins : float
    min_batch_size : int
    max_batch_size : int or None

    Returns
    -------
    starts, ends : numpy.ndarray
        Batch boundaries, covering ``[0, T)`` in order.
    last_complete : bool
        Whether the final batch met the closing rule.

    Example
    -------
    >>> prefix = np.cumsum([0, 3, 3, 3, 3, 3])
    >>> starts, ends, complete = cut_batches(prefix, 5, 1, None)
    >>> starts.tolist(), ends.tolist(), complete
    ([0, 2, 4], [2, 4, 5], False)
    """
    total = len(prefix) - 1
    if total == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), True
    start = np.arange(total, dtype=np.int64)
    raw = np.searchsorted(prefix, prefix[:-1] + batch_bins, side="right")
    np.maximum(raw, start + min_batch_size, out=raw)
    if max_batch_size is not None:
        np.minimum(raw, start + max_batch_size, out=raw)
    step = raw.item
    chain, here = [], 0
    while here < total:
        chain.append(here)
        here = step(here)
    starts = np.array(chain, dtype=np.int64)
    ends = np.minimum(raw[starts], total)
    return starts, ends, bool(raw[starts[-1]] <= total)


@register_checkpoint_hooks
class CategoryDatasetPowerSampler:
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

    Arguments
    ---------
    dataset : speechbrain.dataio.dataset.DynamicItemDataset
        The training set; index ``i`` is the position in ``dataset.data_ids``
        and the raw CSV fields are read from ``dataset.data[id]``.
    batch_bins : float
        A batch closes once its bins exceed this (same unit as ``bins_field``).
        Must be at least the size of the largest utterance.
    category_field : str
        Field holding the category (e.g. ``lang``, ``spk_id``, ``command``).
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
    alpha, eps, transform, momentum
        Options of the ISBL leaf (see :mod:`hardmine.loss_table`).
    rank, world_size : int, optional
        Distributed position; by default torch.distributed's when it is
        initialised, else a single process.

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

    handles_distributed = True

    def __init__(
        self,
        dataset,
        batch_bins,
        category_field,
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
        alpha=0.75,
        eps=1e-6,
        transform="identity",
        momentum=None,
        rank=None,
        world_size=None,
    ):
        table = _table_from_dataset(dataset, category_field, dataset_field, bins_field)
        self._setup(
            table,
            batch_bins=batch_bins,
            min_batch_size=min_batch_size,
            max_batch_size=max_batch_size,
            category_upsampling_factor=category_upsampling_factor,
            dataset_upsampling_factor=dataset_upsampling_factor,
            dataset_scaling_factor=dataset_scaling_factor,
            drop_last=drop_last,
            seed=seed,
            leaf=leaf,
            alpha=alpha,
            eps=eps,
            transform=transform,
            momentum=momentum,
            rank=rank,
            world_size=world_size,
        )

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
            See :func:`read_espnet_files`.
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
        sampler = cls.__new__(cls)
        sampler._setup(table, **cls._translate_options(options))
        return sampler

    @staticmethod
    def _translate_options(options):
        return options

    # ------------------------------------------------------------------ setup
    def _setup(
        self,
        table,
        batch_bins,
        min_batch_size=1,
        max_batch_size=None,
        category_upsampling_factor=1.0,
        dataset_upsampling_factor=1.0,
        dataset_scaling_factor=1.2,
        drop_last=False,
        seed=0,
        leaf="uniform",
        alpha=0.75,
        eps=1e-6,
        transform="identity",
        momentum=None,
        rank=None,
        world_size=None,
    ):
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
        self.seed = check_int("seed", seed, minimum=0)
        self.leaf = check_choice("leaf", leaf, LEAVES)
        self.alpha = check_number("alpha", alpha, minimum=0.0)
        self.eps = check_number("eps", eps, minimum=0.0, strict=True)
        self.transform = transform
        self.momentum = momentum
        if world_size is not None:
            world_size = check_int("world_size", world_size, minimum=1)
        if rank is not None:
            rank = check_int("rank", rank, minimum=0)
            if world_size is not None and rank >= world_size:
                raise ConfigError(
                    "rank", f"must be < world_size={world_size}, got {rank}"
                )
        self._rank, self._world_size = rank, world_size

        bins = table.bins
        largest = int(np.argmax(bins))
        if bins[largest] > self.batch_bins:
            raise ConfigError(
                "batch_bins",
                f"{self.batch_bins:g} is smaller than utterance {table.ids[largest]!r} "
                f"({bins[largest]:g} bins)",
            )

        # (dataset, category) groups, ordered by dataset then category name
        n_cat = len(table.category_names)
        key = table.dataset_of * n_cat + table.category_of
        uniq, self._group_of = np.unique(key, return_inverse=True)
        self._group_of = self._group_of.astype(np.int64).ravel()
        self._group_dataset = uniq // n_cat
        self._group_category = uniq % n_cat
        n_groups = len(uniq)
        n_datasets = len(table.dataset_names)
        self._group_bins = np.bincount(self._group_of, weights=bins, minlength=n_groups)
        self._group_size = np.bincount(self._group_of, minlength=n_groups)
        dataset_bins = np.bincount(
            self._group_dataset, weights=self._group_bins, minlength=n_datasets
        )
        total_bins = float(dataset_bins.sum())

        within = (
            self._group_bins / dataset_bins[self._group_dataset]
        ) ** self.category_upsampling_factor
        within /= np.bincount(
            self._group_dataset, weights=within, minlength=n_datasets
        )[self._group_dataset]
        across = (dataset_bins / total_bins) ** self.dataset_upsampling_factor
        across /= across.sum()
        self._p_category = within
        self._p_dataset = across

        # Alias tables: P(d), and P(l | d) per dataset (aliases as group numbers)
        self._keep_dataset, self._alias_dataset = alias_table(across)
        self._group_start = np.searchsorted(self._group_dataset, np.arange(n_datasets))
        self._groups_in = np.bincount(self._group_dataset, minlength=n_datasets)
        self._keep_within = np.empty(n_groups)
        self._alias_within = np.empty(n_groups, dtype=np.int64)
        for d in range(n_datasets):
            lo = self._group_start[d]
            hi = lo + self._groups_in[d]
            keep, alias = alias_table(within[lo:hi])
            self._keep_within[lo:hi] = keep
            self._alias_within[lo:hi] = lo + alias
        self._member_offset = np.concatenate([[0], np.cumsum(self._group_size)[:-1]])
        self._small = np.uint16 if n_groups < 2**16 else np.int64

        self._mean_bins = total_bins / len(table)
        self.num_draws = int(self.dataset_scaling_factor * total_bins / self._mean_bins)
        self._index_of = {name: i for i, name in enumerate(table.ids)}
        self.loss_table = None
        if self.leaf == "isbl":
            self._build_leaf_table()
        self.epoch = 0
        self._plan_cache = None
        self._groups_cache = None
        self._resume = None
        self._offsets = {0: 0}
        self._handed = 0
        self._consumed = 0
        self._draw_counts = np.zeros(len(table), dtype=np.int64)

    # ------------------------------------------------------------ inspection
    @property
    def groups(self):
        """The ``(dataset, category)`` groups, in the sampler's order."""
        names_d, names_c = self.table.dataset_names, self.table.category_names
        return [
            (names_d[d], names_c[c])
            for d, c in zip(self._group_dataset.tolist(), self._group_category.tolist())
        ]

    @property
    def dataset_probabilities(self):
        """``{dataset: P(d)}``."""
        return dict(zip(self.table.dataset_names, self._p_dataset.tolist()))

    @property
    def category_probabilities(self):
        """``{(dataset, category): P(l | d)}``."""
        return dict(zip(self.groups, self._p_category.tolist()))

    @property
    def group_probabilities(self):
        """``{(dataset, category): P(d) P(l | d)}``."""
        joint = self._p_dataset[self._group_dataset] * self._p_category
        return dict(zip(self.groups, joint.tolist()))

    def group_of_index(self, indices):
        """Group number (position in :attr:`groups`) of dataset indices."""
        return self._group_of[np.asarray(indices, dtype=np.int64)]

    # ------------------------------------------------------------- planning
    def _generator(self, epoch):
        return np.random.Generator(
            np.random.PCG64(np.random.SeedSequence([self.seed, epoch]))
        )

    def _draw_groups(self, rng):
        """Per-epoch shuffle and the sequence of groups of all draws."""
        perm = rng.permutation(len(self.table))
        uniform = rng.random((self.num_draws, 2))
        # dataset ~ P(d), then category ~ P(l | d), both by the alias method
        scaled = uniform[:, 0] * len(self._keep_dataset)
        slot = np.minimum(scaled.astype(np.int64), len(self._keep_dataset) - 1)
        datasets = np.where(
            scaled - slot < self._keep_dataset[slot], slot, self._alias_dataset[slot]
        )
        width = self._groups_in[datasets]
        scaled = uniform[:, 1] * width
        slot = np.minimum(scaled.astype(np.int64), width - 1)
        scaled -= slot
        slot += self._group_start[datasets]
        groups = np.where(
            scaled < self._keep_within[slot], slot, self._alias_within[slot]
        )
        return perm, groups

    def group_sequence(self, epoch=None):
        """Group number of every draw of an epoch (default: the current one)."""
        return self._draw_groups(
            self._generator(self.epoch if epoch is None else epoch)
        )[1]

    def _round_robin(self, perm, groups):
        """Utterance of every draw: the next one of its group's shuffled list."""
        members = perm[
            np.argsort(self._group_of[perm].astype(self._small), kind="stable")
        ]
        # Work in group-sorted order: the k-th draw of group g (counting in
        # draw order) takes member k mod size_g of g's shuffled list.
        order = np.argsort(groups.astype(self._small), kind="stable")
        counts = np.bincount(groups, minlength=len(self._group_size))
        occurrence = np.arange(len(groups)) - np.repeat(
            np.cumsum(counts) - counts, counts
        )
        occurrence %= np.repeat(self._group_size, counts)
        occurrence += np.repeat(self._member_offset, counts)
        draws = np.empty(len(groups), dtype=np.int64)
        draws[order] = members[occurrence]
        return draws

    def _uniform_plan(self, epoch):
        """(draws, starts, ends) of the uniform-leaf plan for ``epoch``."""
        if self._plan_cache is not None and self._plan_cache[0] == epoch:
            return self._plan_cache[1]
        perm, groups = self._draw_groups(self._generator(epoch))
        draws = self._round_robin(perm, groups)
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
        if self.leaf != "uniform":
            raise RuntimeError(
                "plan(): an ISBL leaf draws utterances live; iterate the sampler"
            )
        draws, starts, ends = self._uniform_plan(self.epoch if epoch is None else epoch)
        flat = draws.tolist()
        return [flat[s:e] for s, e in zip(starts.tolist(), ends.tolist())]

    # ------------------------------------------------------------ iteration
    def set_epoch(self, epoch):
        """Select the epoch whose plan the next iteration yields."""
        epoch = check_int("epoch", epoch, minimum=0)
        if self._resume is not None and self._resume["epoch"] != epoch:
            self._resume = None
        if epoch != self.epoch:
            self._offsets = {0: 0}
            self._handed = self._consumed = 0
        self.epoch = epoch

    def _shard_params(self):
        rank, world = _resolve_rank(self._rank, self._world_size)
        if rank >= world:
            raise ConfigError("rank", f"must be < world_size={world}, got {rank}")
        if world > 1 and self.min_batch_size < world:
            raise ConfigError(
                "min_batch_size",
                f"must be >= the number of processes ({world}) so that every rank gets a share of each batch",
            )
        return rank, world

    def __len__(self):
        _, starts, ends = self._uniform_plan(self.epoch)
        count = len(starts)
        _, world = _resolve_rank(self._rank, self._world_size)
        if count and world > 1 and ends[-1] - starts[-1] < world:
            count -= 1
        return count

    def __iter__(self):
        rank, world = self._shard_params()
        if self.leaf == "uniform":
            return self._iter_uniform(rank, world)
        return self._iter_live(rank, world)

    def _iter_uniform(self, rank, world):
        # Deterministic plan: after a mid-epoch load SpeechBrain's loader
        # discards the first batches itself, so the plan is replayed as is.
        draws, starts, ends = self._uniform_plan(self.epoch)
        self._resume = None
        self._offsets = {0: 0}
        self._handed = self._consumed = 0
        for b, (s, e) in enumerate(zip(starts.tolist(), ends.tolist())):
            if e - s < world:
                break  # an incomplete final batch too small to shard
            np.add.at(self._draw_counts, draws[s:e], 1)
            self._handed = b + 1
            yield draws[s + rank : e : world].tolist()

    # ------------------------------------------------------------ ISBL leaf
    def _build_leaf_table(self):
        self.loss_table = LossPowerTable(
            self._group_of,
            alpha=self.alpha,
            eps=self.eps,
            transform=self.transform,
            momentum=self.momentum,
            ids=self.table.ids,
        )

    def _batch_generator(self, batch):
        words = [self.seed, self.epoch, _LIVE_STREAM, batch]
        return np.random.Generator(np.random.PCG64(np.random.SeedSequence(words)))

    def _live_groups(self):
        if self._groups_cache is None or self._groups_cache[0] != self.epoch:
            self._groups_cache = (self.epoch, self.group_sequence(self.epoch))
        return self._groups_cache[1]

    def draw_live_batch(self, batch, start):
        """Draw global batch ``batch`` of the current epoch from draw ``start``.

        A pure function of the loss table, seed, epoch, ``batch`` and
        ``start``: utterances are drawn for the planned groups
        ``start, start + 1, ...`` from the loss-power distribution of each
        group until the batch meets the closing rule.

        Returns
        -------
        indices : numpy.ndarray
            Dataset indices of the whole (unsharded) batch.
        complete : bool
            False for a final batch cut short by the end of the epoch.
        """
        groups = self._live_groups()
        rng = self._batch_generator(batch)
        chunk = max(self.min_batch_size, int(self.batch_bins / self._mean_bins) + 2)
        if self.max_batch_size is not None:
            chunk = min(chunk, self.max_batch_size)
        drawn = np.zeros(0, dtype=np.int64)
        while True:
            lo = start + len(drawn)
            hi = min(self.num_draws, lo + chunk)
            drawn = np.concatenate([drawn, self.loss_table.draw(groups[lo:hi], rng)])
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

    def _iter_live(self, rank, world):
        resume, self._resume = self._resume, None
        skip = 0 if resume is None else int(resume["position"])
        start = 0 if resume is None else int(resume["draws"])
        self._offsets = {skip: start}
        self._handed = skip
        self._consumed = skip
        placeholder = [i % len(self.table) for i in range(self.min_batch_size)]
        for _ in range(skip):
            yield list(placeholder)
        batch = skip
        while start < self.num_draws:
            drawn, complete = self.draw_live_batch(batch, start)
            if not complete and (self.drop_last or len(drawn) < world):
                break
            np.add.at(self._draw_counts, drawn, 1)
            start += len(drawn)
            batch += 1
            self._offsets[batch] = start
            self._handed = batch
            yield drawn[rank::world].tolist()

    def observe(self, ids, losses):
        """Feed per-example training losses back (used by the ISBL leaf).

        With the uniform leaf this does nothing. With the ISBL leaf it is a
        collective under DDP: the pairs of all ranks are gathered and
        applied in rank order, so every rank keeps the same loss table.

        Arguments
        ---------
        ids : list of str
            Example IDs of this rank's batch (``batch.id``).
        losses : torch.Tensor or sequence of float
            One loss per example; NaN marks an example whose audio was broken.
        """
        if self.leaf == "uniform":
            return
        if isinstance(losses, torch.Tensor):
            losses = losses.detach().to("cpu", torch.float64).numpy().reshape(-1)
        losses = np.asarray(losses, dtype=np.float64).reshape(-1)
        ids = list(ids)
        if len(ids) != losses.shape[0]:
            raise ValueError(f"observe: {len(ids)} ids but {losses.shape[0]} losses")
        try:
            indices = np.fromiter(
                (self._index_of[str(i)] for i in ids), dtype=np.int64, count=len(ids)
            )
        except KeyError as err:
            raise ValueError(
                f"observe: example id {err.args[0]!r} is not in the training set"
            ) from None
        parts = all_gather_pairs(indices, losses)
        self.loss_table.observe_indices(
            np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        )
        self._consumed += 1
        self._offsets.pop(self._consumed - 1, None)

    def stats(self):
        """Sampling summary for the training log.

        Returns
        -------
        dict
            ``coverage`` (share of utterances drawn at least once so far) and,
            for the ISBL leaf, ``mean_score`` and ``n_quarantined``.
        """
        out = {"coverage": float(np.count_nonzero(self._draw_counts) / len(self.table))}
        if self.leaf == "isbl":
            out["mean_score"] = float(self.loss_table.scores.mean())
            out["n_quarantined"] = int(self.loss_table.n_quarantined)
        return out

    @property
    def draw_counts(self):
        """Times each utterance was handed out in a batch (all ranks, read-only)."""
        view = self._draw_counts.view()
        view.flags.writeable = False
        return view

    # -------------------------------------------------------- checkpointing
    def _position(self):
        """Batches trained on (observe calls), else batches handed out."""
        return self._consumed if self._consumed else self._handed

    @mark_as_saver
    def _save(self, path):
        position = self._position()
        meta = {
            "format": _FORMAT,
            "leaf": self.leaf,
            "seed": self.seed,
            "epoch": self.epoch,
            "position": position,
            "draws": int(self._offsets.get(position, 0)),
            "ids_checksum": _ids_checksum(self.table.ids),
        }
        arrays = {"draw_counts": self._draw_counts}
        if self.leaf == "isbl":
            table = self.loss_table.state_dict()
            arrays["scores"] = table["scores"]
            arrays["quarantined"] = table["quarantined"]
            arrays["seen"] = table["seen"]
            meta.update(
                n_observations=table["n_observations"],
                size=table["size"],
                pool_checksum=table["pool_checksum"],
            )
        with open(path, "wb") as handle:
            np.savez(handle, meta=np.array(json.dumps(meta)), **arrays)

    @mark_as_loader
    def _load(self, path, end_of_epoch):
        with np.load(path, allow_pickle=False) as saved:
            meta = json.loads(str(saved["meta"]))
            arrays = {key: saved[key] for key in saved.files if key != "meta"}
        if meta.get("format") != _FORMAT:
            raise ValueError(f"{path}: unknown sampler checkpoint format")
        if meta["ids_checksum"] != _ids_checksum(self.table.ids):
            raise ValueError(f"{path}: saved for a different training set")
        if meta["leaf"] != self.leaf:
            raise ValueError(
                f"{path}: saved with leaf={meta['leaf']!r}, this sampler has leaf={self.leaf!r}"
            )
        if self.leaf == "isbl":
            try:
                self.loss_table.load_state_dict(
                    {
                        "scores": arrays["scores"],
                        "quarantined": arrays["quarantined"],
                        "seen": arrays.get("seen"),
                        "n_observations": meta["n_observations"],
                        "size": meta["size"],
                        "pool_checksum": meta["pool_checksum"],
                    }
                )
            except ValueError as err:
                raise ValueError(f"{path}: {err}") from None
        self._draw_counts[:] = arrays["draw_counts"]
        self.epoch = int(meta["epoch"])
        self._consumed = self._handed = 0
        self._resume = None
        if not end_of_epoch and self.leaf == "isbl" and meta["position"] > 0:
            self._resume = {
                "epoch": self.epoch,
                "position": meta["position"],
                "draws": meta["draws"],
            }

    def __repr__(self):
        return (
            f"{type(self).__name__}(utterances={len(self.table)}, groups={len(self._group_size)}, "
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
    >>> from speechbrain.dataio.dataset import DynamicItemDataset
    >>> data = {f"u{i}": {"duration": 1.0, "word": "yes" if i < 30 else "no"}
    ...         for i in range(40)}
    >>> sampler = CategoryPowerSampler(
    ...     DynamicItemDataset(data), batch_bins=8, category_field="word",
    ...     upsampling_factor=0.5)
    >>> {k: round(v, 3) for k, v in sampler.group_probabilities.items()}
    {('all', 'no'): 0.366, ('all', 'yes'): 0.634}
    """

    def __init__(
        self,
        dataset,
        batch_bins,
        category_field,
        bins_field="duration",
        upsampling_factor=1.0,
        **options,
    ):
        if "dataset_field" in options or "dataset_upsampling_factor" in options:
            raise ConfigError(
                "dataset_field", "CategoryPowerSampler has a single dataset"
            )
        super().__init__(
            dataset,
            batch_bins,
            category_field,
            bins_field=bins_field,
            category_upsampling_factor=upsampling_factor,
            **options,
        )

    @staticmethod
    def _translate_options(options):
        options = dict(options)
        if (
            "dataset_upsampling_factor" in options
            or "category_upsampling_factor" in options
        ):
            raise ConfigError(
                "upsampling_factor", "CategoryPowerSampler takes upsampling_factor only"
            )
        if "upsampling_factor" in options:
            options["category_upsampling_factor"] = options.pop("upsampling_factor")
        return options

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
