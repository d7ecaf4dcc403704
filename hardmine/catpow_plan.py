"""The static pieces of the power sampler's epoch plan.

:class:`UtteranceTable` holds every utterance's size in bins, category and
dataset, read from a SpeechBrain dataset (:func:`table_from_dataset`) or
from ESPnet/Kaldi-style map files (:func:`read_espnet_files`).
:func:`alias_table` draws from a fixed distribution in constant time,
:class:`GroupPlan` picks the ``(dataset, category)`` group of every draw with
them, and :func:`cut_batches` cuts a sequence of draws into batches of
``batch_bins``.
:class:`~hardmine.catpow.CategoryDatasetPowerSampler` plans its epochs with
them.

Example
-------
>>> table = UtteranceTable(["a", "b", "c"], [2.0, 3.0, 1.0], ["x", "y", "x"])
>>> prefix = np.concatenate([[0.0], np.cumsum(table.bins)])
>>> starts, ends, complete = cut_batches(prefix, 4.0, 1, None)
>>> starts.tolist(), ends.tolist(), complete
([0, 2], [2, 3], False)
"""

import os

import numpy as np

from hardmine.validation import ConfigError

__all__ = [
    "SINGLE_DATASET",
    "GroupPlan",
    "UtteranceTable",
    "alias_table",
    "cut_batches",
    "read_espnet_files",
    "table_from_dataset",
]

#: Dataset name used when no dataset field or dataset map is given.
SINGLE_DATASET = "all"


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


def table_from_dataset(dataset, category_field, dataset_field, bins_field):
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


class GroupPlan:
    """The ``(dataset, category)`` groups of a table and the powers that pick them.

    Groups are ordered by dataset, then category name. A draw picks dataset
    ``d`` with ``P(d) ∝ (N_d / M) ** dataset_power`` and group ``(d, l)`` of it
    with ``P(l | d) ∝ (n_ld / N_d) ** category_power`` (sizes in bins), each
    by an alias table.

    Arguments
    ---------
    table : UtteranceTable
    category_power, dataset_power : float
        ``beta_L`` and ``beta_D`` (>= 0).

    Example
    -------
    >>> table = UtteranceTable(["a", "b", "c"], [1.0, 1.0, 2.0], ["x", "x", "y"])
    >>> plan = GroupPlan(table, category_power=0.0, dataset_power=1.0)
    >>> plan.groups, plan.group_of.tolist(), plan.p_category.tolist()
    ([('all', 'x'), ('all', 'y')], [0, 0, 1], [0.5, 0.5])
    >>> plan.draw(np.array([[0.0, 0.2], [0.0, 0.7]])).tolist()
    [0, 1]
    """

    def __init__(self, table, category_power, dataset_power):
        self.table = table
        n_cat = len(table.category_names)
        key = table.dataset_of * n_cat + table.category_of
        uniq, group_of = np.unique(key, return_inverse=True)
        self.group_of = group_of.astype(np.int64).ravel()
        self.group_dataset = uniq // n_cat
        self.group_category = uniq % n_cat
        n_groups = len(uniq)
        n_datasets = len(table.dataset_names)
        group_bins = np.bincount(self.group_of, weights=table.bins, minlength=n_groups)
        self.group_size = np.bincount(self.group_of, minlength=n_groups)
        dataset_bins = np.bincount(
            self.group_dataset, weights=group_bins, minlength=n_datasets
        )
        self.total_bins = float(dataset_bins.sum())

        within = (group_bins / dataset_bins[self.group_dataset]) ** category_power
        within /= np.bincount(self.group_dataset, weights=within, minlength=n_datasets)[
            self.group_dataset
        ]
        across = (dataset_bins / self.total_bins) ** dataset_power
        across /= across.sum()
        self.p_category = within
        self.p_dataset = across

        # Alias tables: P(d), and P(l | d) per dataset (aliases as group numbers)
        self.keep_dataset, self.alias_dataset = alias_table(across)
        self.group_start = np.searchsorted(self.group_dataset, np.arange(n_datasets))
        self.groups_in = np.bincount(self.group_dataset, minlength=n_datasets)
        self.keep_within = np.empty(n_groups)
        self.alias_within = np.empty(n_groups, dtype=np.int64)
        for d in range(n_datasets):
            lo = self.group_start[d]
            hi = lo + self.groups_in[d]
            keep, alias = alias_table(within[lo:hi])
            self.keep_within[lo:hi] = keep
            self.alias_within[lo:hi] = lo + alias

    @property
    def groups(self):
        """The ``(dataset, category)`` name pairs, in group order."""
        names_d, names_c = self.table.dataset_names, self.table.category_names
        return [
            (names_d[d], names_c[c])
            for d, c in zip(self.group_dataset.tolist(), self.group_category.tolist())
        ]

    def draw(self, uniform):
        """The group of each draw from a ``(T, 2)`` array of uniforms in ``[0, 1)``.

        Column 0 picks the dataset, column 1 the category of that dataset.
        """
        scaled = uniform[:, 0] * len(self.keep_dataset)
        slot = np.minimum(scaled.astype(np.int64), len(self.keep_dataset) - 1)
        datasets = np.where(
            scaled - slot < self.keep_dataset[slot], slot, self.alias_dataset[slot]
        )
        width = self.groups_in[datasets]
        scaled = uniform[:, 1] * width
        slot = np.minimum(scaled.astype(np.int64), width - 1)
        scaled -= slot
        slot += self.group_start[datasets]
        return np.where(scaled < self.keep_within[slot], slot, self.alias_within[slot])
