"""Hardest-examples report: which training examples the mining sampler favours.

A loss-driven sampler (:class:`hardmine.isbl.ISBLSampler`, or a sampler with
a loss-power table such as the ISBL leaf of the category sampler) remembers
the latest loss of every training example, how likely each one is to be
drawn next and how often each one was drawn. This module turns that state
into a ranked table: one row per training example, with its ID, the audio
file paths and labels from the training CSV, the latest loss, the draw
probability and the draw count.

**Finding bad data.** Mining pulls corrupt and mislabelled clips to the top
of this report. A clip whose label is wrong, whose sources do not add up to
its mixture, or that is mostly clipping or silence cannot be learned, so its
loss stays high while the rest of the data gets easier, and the sampler
keeps drawing it. Listening to the first rows of the report is the quickest
way to find such clips. Clips whose audio cannot be read at all are
quarantined by the sampler (status ``broken``) and listed first.

Order of the rows: ``broken`` examples (unreadable audio, no loss), then the
examples trained on, by decreasing latest loss, then the examples never
drawn (status ``not drawn``: their loss is only the starting placeholder, so
it is left empty). Ties keep the training-CSV order. With a ``momentum``
sampler the "latest loss" is the sampler's moving average.

The report comes either from a live sampler (:func:`rank_examples`, e.g.
``brain.live_sampler`` after ``fit``) or, after a run has ended, from the
sampler file of a saved checkpoint (``save/CKPT+*/mining_sampler.ckpt``) plus
the training CSV (:func:`report_for_run`, or the command line)::

    python -m hardmine.tools.hardest results/sepformer_isbl/1234 --top 20
    python -m hardmine.tools.hardest RUN --checkpoint save/CKPT+x/mining_sampler.ckpt \\
        --train-csv save/wsj_tr.csv --out hardest.csv

The sampler is rebuilt from the ``mining_sampler`` entry of the run's saved
``hyperparams.yaml`` and the checkpoint is loaded into it, so the
probabilities are computed by the sampler's own code. The training CSV is
the one whose example IDs match the checkpoint (the sampler refuses any
other), searched in the run folder when not given.

Example
-------
>>> from speechbrain.dataio.dataset import DynamicItemDataset
>>> from hardmine.isbl import ISBLSampler
>>> data = {f"utt{i}": {"wav": f"/data/utt{i}.wav"} for i in range(4)}
>>> sampler = ISBLSampler(
...     DynamicItemDataset(data), batch_size=2, alpha=1.0, epoch_length=20, seed=0
... )
>>> sampler.set_epoch(1)
>>> batches = list(sampler)  # 20 draws
>>> sampler.draw_counts.tolist()
[3, 6, 7, 4]
>>> sampler.observe(["utt0", "utt1", "utt2", "utt3"], [float("nan"), 0.5, 3.0, 0.5])
>>> rows = rank_examples(sampler, table=data)
>>> [(r["id"], r["status"]) for r in rows[:2]]
[('utt0', 'broken'), ('utt2', 'trained')]
>>> rows[1]["loss"], rows[1]["wav"], round(rows[1]["prob"], 3)
(3.0, '/data/utt2.wav', 0.75)
"""

import argparse
import csv
import glob
import importlib
import math
import os
import sys

import numpy as np
import yaml

from hardmine.plainyaml import Tagged, read_fields
from hardmine.sampler_choice import saved_choice
from hardmine.validation import ConfigError, check_int

__all__ = [
    "STATUS_ORDER",
    "rank_examples",
    "loss_from_score",
    "audio_columns",
    "read_saved_hparams",
    "sampler_config",
    "find_sampler_checkpoint",
    "load_sampler",
    "HardestReport",
    "report_for_run",
    "write_report",
    "format_rows",
    "main",
]

#: Row status, in report order.
STATUS_ORDER = ("broken", "trained", "not drawn")

#: CSV columns copied into the report besides the audio paths, when present.
LABEL_COLUMNS = ("command", "label", "category", "duration")

SAMPLER_FILE = "mining_sampler.ckpt"


# --------------------------------------------------------------------- YAML
def read_saved_hparams(path):
    """Read a hyperparams YAML file without building anything.

    The project's one plain reader, :func:`hardmine.plainyaml.read_fields`.

    Arguments
    ---------
    path : str
        A ``hyperparams.yaml`` (as saved in a run folder) or a recipe YAML.

    Returns
    -------
    dict
        Top-level fields; tagged values come back as
        :class:`~hardmine.plainyaml.Tagged`.

    Example
    -------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = os.path.join(tmp, "hyperparams.yaml")
    ...     with open(path, "w") as f:
    ...         _ = f.write("seed: 3\\ns: !name:a.B\\n  alpha: 0.5\\n")
    ...     fields = read_saved_hparams(path)
    >>> fields["seed"], fields["s"].tag, fields["s"].value
    (3, 'name:a.B', {'alpha': 0.5})
    """
    return read_fields(path)


def sampler_config(hparams):
    """The class path and arguments of the ``mining_sampler`` entry.

    Arguments
    ---------
    hparams : dict
        As returned by :func:`read_saved_hparams`.

    Returns
    -------
    tuple or None
        ``(class_path, kwargs)``, or None when the run used no sampler.
    """
    entry = saved_choice(hparams.get("mining_sampler"))
    if entry is None:
        return None
    if not isinstance(entry, Tagged) or not entry.tag.startswith("name:"):
        raise ConfigError(
            "mining_sampler",
            f"expected a '!name:' sampler factory in the saved hyperparameters, got {entry!r}",
        )
    kwargs = entry.value if isinstance(entry.value, dict) else {}
    kwargs = {k: _apply_own(v) for k, v in kwargs.items()}
    unresolved = [k for k, v in kwargs.items() if isinstance(v, Tagged)]
    if unresolved:
        raise ConfigError(
            f"mining_sampler.{unresolved[0]}",
            "is still a tagged value; give the run's saved hyperparams.yaml, "
            "where references are resolved",
        )
    return entry.tag[len("name:") :], dict(kwargs)


def _apply_own(value):
    """Evaluate a saved ``!apply:hardmine.…`` value whose arguments are plain.

    A saved ``hyperparams.yaml`` keeps ``!apply:`` calls as written; the
    recipes use a few of hardmine's own small functions there (the KWS
    recipe's ``reference`` is ``kws_reference.reference_file``). Those are
    called as hyperpyyaml would; anything else is returned unchanged.

    Example
    -------
    >>> _apply_own(Tagged("apply:hardmine.tasks.kws_reference.reference_file", [0, "r.csv"]))
    >>> _apply_own(Tagged("apply:os.getcwd", [])).tag
    'apply:os.getcwd'
    """
    if not isinstance(value, Tagged) or not value.tag.startswith("apply:hardmine."):
        return value
    args = value.value
    plain = args if isinstance(args, (list, dict)) else [args]
    items = plain.values() if isinstance(plain, dict) else plain
    if any(isinstance(a, Tagged) for a in items):
        return value
    module, _, name = value.tag[len("apply:") :].rpartition(".")
    function = getattr(importlib.import_module(module), name)
    return function(**plain) if isinstance(plain, dict) else function(*plain)


# ------------------------------------------------------------------ ranking
def loss_from_score(scores, transform):
    """Undo the sampler's loss -> score transform.

    Example
    -------
    >>> loss_from_score(np.array([100.0, 1.0]), "db_to_power").tolist()
    [20.0, 0.0]
    """
    scores = np.asarray(scores, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        if transform == "db_to_power":
            return 10.0 * np.log10(scores)
        if transform == "exp":
            return np.log(scores)
    return scores.copy()


def _loss_table(sampler):
    from hardmine.loss_table import LossPowerTable

    for name in ("table", "loss_table"):
        table = getattr(sampler, name, None)
        if isinstance(table, LossPowerTable):
            return table
    return None


def _sampler_ids(sampler):
    ids = getattr(sampler, "ids", None)
    if ids is None:
        ids = getattr(getattr(sampler, "table", None), "ids", None)
    if ids is None:
        raise TypeError(f"{type(sampler).__name__} does not expose its example ids")
    return [str(i) for i in ids]


def audio_columns(fieldnames):
    """Columns of a training CSV that hold audio file paths.

    Example
    -------
    >>> audio_columns(["ID", "duration", "mix_wav", "mix_wav_format", "s1_wav", "wav"])
    ['mix_wav', 's1_wav', 'wav']
    """
    out = []
    for name in fieldnames:
        low = name.lower()
        if low in ("wav", "path", "file", "audio") or low.endswith(
            ("_wav", "_path", "_file", "_audio")
        ):
            out.append(name)
    return out


def rank_examples(sampler, table=None, columns=None):
    """Every training example of ``sampler``, hardest first.

    Arguments
    ---------
    sampler : object
        A loss-driven sampler: exposes its example ``ids``, a
        :class:`~hardmine.loss_table.LossPowerTable` (``table`` or
        ``loss_table``), ``draw_counts`` and ideally ``draw_probabilities()``.
    table : dict, optional
        ``{id: {column: value}}`` from the training CSV (e.g.
        ``dataset.data``); its audio-path and label columns are joined.
    columns : list of str, optional
        CSV columns to join (default: the audio paths, the label-like columns
        and the sampler's ``pool_field``).

    Returns
    -------
    list of dict
        Keys ``rank``, ``id``, ``status`` (see :data:`STATUS_ORDER`), ``loss``
        (the latest loss as observed, NaN when unknown), ``score`` (the
        sampler's hardness score: averaged with ``momentum``, capped for the
        noise guard's flagged examples),
        ``prob`` (chance of being picked by one draw), ``draws``,
        ``last_epoch`` (the sampler epoch of the latest loss, -1 if none: a
        loss from an early epoch may be stale), ``pool`` when there are
        several pools, ``persistently_hard`` (1/0, flagged at
        the checkpoint) and ``ever_persistently_hard`` (1/0, flagged at any
        point before it) when the sampler's noise guard has flagged any
        example, and the joined columns.
    """
    ids = _sampler_ids(sampler)
    n = len(ids)
    losses_table = _loss_table(sampler)
    draws = np.asarray(sampler.draw_counts, dtype=np.int64)
    if losses_table is not None:
        scores = np.asarray(losses_table.scores, dtype=np.float64)
        broken = np.asarray(losses_table.quarantined, dtype=bool)
        # The latest loss as observed: before a moving average or the noise
        # guard's cap, which act on the draws' scores only.
        latest = np.asarray(losses_table.latest_scores, dtype=np.float64)
        loss = loss_from_score(latest, losses_table.transform)
        last = np.asarray(losses_table.last_observed, dtype=np.int64)
    else:
        last = np.full(n, -1, dtype=np.int64)
        scores = np.full(n, np.nan)
        broken = np.zeros(n, dtype=bool)
        loss = np.full(n, np.nan)
    if hasattr(sampler, "draw_probabilities"):
        probs = np.asarray(sampler.draw_probabilities(), dtype=np.float64)
    else:
        probs = np.full(n, np.nan)
    # The noise guard's flags (persistently above the pool's score quantile),
    # now and at any point: the second holds the first.
    flagged = getattr(losses_table, "persistently_hard", None)
    ever = getattr(losses_table, "ever_persistently_hard", None)
    if ever is None or not np.asarray(ever).any():
        flagged = ever = None
    not_drawn = (draws == 0) & ~broken
    loss = np.where(broken | not_drawn, np.nan, loss)
    status = np.where(broken, 0, np.where(not_drawn, 2, 1))
    # Sort by status, then loss descending (NaN last), then CSV order.
    key_loss = np.where(np.isfinite(loss), -loss, np.inf)
    order = np.lexsort((np.arange(n), key_loss, status))

    pools = None
    pool_names = getattr(sampler, "pool_names", None)
    if losses_table is not None and pool_names is not None and len(pool_names) > 1:
        pools = [pool_names[int(k)] for k in losses_table.pool_of]

    if table is not None and columns is None:
        first = next(iter(table.values()), {})
        columns = audio_columns(first)
        columns += [c for c in LABEL_COLUMNS if c in first and c not in columns]
        pool_field = getattr(sampler, "pool_field", None)
        if pool_field and pool_field in first and pool_field not in columns:
            columns.append(pool_field)
    columns = list(columns or [])

    rows = []
    for rank, i in enumerate(order, start=1):
        uid = ids[i]
        row = {
            "rank": rank,
            "id": uid,
            "status": STATUS_ORDER[int(status[i])],
            "loss": float(loss[i]),
            "score": float(scores[i]),
            "prob": float(probs[i]),
            "draws": int(draws[i]),
            "last_epoch": int(last[i]),
        }
        if pools is not None:
            row["pool"] = pools[i]
        if flagged is not None:
            row["persistently_hard"] = int(flagged[i])
            row["ever_persistently_hard"] = int(ever[i])
        if table is not None:
            record = table.get(uid, {})
            for column in columns:
                row[column] = record.get(column, "")
        rows.append(row)
    return rows


# ------------------------------------------------------- saved checkpoints
def _ckpt_time(ckpt_dir):
    meta = os.path.join(ckpt_dir, "CKPT.yaml")
    try:
        with open(meta, encoding="utf-8") as handle:
            info = yaml.safe_load(handle) or {}
        return float(info.get("unixtime", os.path.getmtime(meta)))
    except (OSError, yaml.YAMLError, TypeError, ValueError):
        return os.path.getmtime(ckpt_dir)


def find_sampler_checkpoint(run_dir):
    """The newest ``CKPT*/mining_sampler.ckpt`` under ``run_dir`` (None if none).

    Checkpoints are ordered by the ``unixtime`` SpeechBrain records in
    ``CKPT.yaml``.
    """
    pattern = os.path.join(glob.escape(run_dir), "**", "CKPT*", SAMPLER_FILE)
    found = glob.glob(pattern, recursive=True)
    if not found:
        return None
    return max(found, key=lambda p: (_ckpt_time(os.path.dirname(p)), p))


class _KeepUnknown(dict):
    """CSV replacements that leave unknown ``$variables`` as written."""

    def __missing__(self, key):
        return "$" + key


def _dataset_from_csv(path, replacements):
    from speechbrain.dataio.dataset import DynamicItemDataset

    try:
        return DynamicItemDataset.from_csv(path, replacements=replacements)
    except KeyError as err:  # no ID column
        raise ConfigError("train_csv", f"{path}: {err.args[0]}") from None


def load_sampler(checkpoint, train_csv, config, replacements=None):
    """Rebuild the run's sampler on ``train_csv`` and load ``checkpoint`` into it.

    Arguments
    ---------
    checkpoint : str
        A saved ``mining_sampler.ckpt``.
    train_csv : str
        The training CSV the run used (same examples, same order).
    config : tuple
        ``(class_path, kwargs)`` from :func:`sampler_config`.
    replacements : dict, optional
        Values for ``$variables`` in the CSV (e.g. ``{"data_root": ...}``).

    Returns
    -------
    sampler, dataset
    """
    if not os.path.isfile(checkpoint):
        raise FileNotFoundError(f"checkpoint: {checkpoint} does not exist")
    if not os.path.isfile(train_csv):
        raise FileNotFoundError(f"train_csv: {train_csv} does not exist")
    class_path, kwargs = config
    module_name, _, class_name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError, ValueError):
        raise ConfigError(
            "mining_sampler", f"cannot import the sampler class {class_path!r}"
        ) from None
    mapping = _KeepUnknown(replacements or {})
    dataset = _dataset_from_csv(train_csv, mapping)
    sampler = cls(dataset, **kwargs)
    if not hasattr(sampler, "_load"):
        raise ConfigError(
            "mining_sampler", f"{class_path} has no checkpoint loader to read"
        )
    sampler._load(checkpoint, True)
    return sampler, dataset


def _csv_candidates(run_dir, hparams):
    """Training-CSV candidates: the ``train_csv`` field, then CSVs in the run folder."""
    out = []
    named = hparams.get("train_csv")
    if isinstance(named, str):
        for path in (named, os.path.join(run_dir, os.path.basename(named))):
            if os.path.isfile(path):
                out.append(path)
    found = []
    for path in glob.glob(
        os.path.join(glob.escape(run_dir), "**", "*.csv"), recursive=True
    ):
        base = os.path.basename(path)
        if "CKPT" in path or base.startswith(("test_", "hardest")):
            continue
        found.append(path)

    # Names that look like training lists first.
    def likely(path):
        base = os.path.basename(path).lower()
        return (
            0 if ("train" in base or "_tr." in base or base.startswith("tr")) else 1,
            base,
        )

    out += sorted(found, key=likely)
    seen, unique = set(), []
    for path in out:
        real = os.path.realpath(path)
        if real not in seen:
            seen.add(real)
            unique.append(path)
    return unique


def _count_rows(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return max(sum(1 for _ in csv.reader(handle)) - 1, 0)


def _checkpoint_size(checkpoint):
    import json

    with np.load(checkpoint, allow_pickle=False) as saved:
        meta = json.loads(str(saved["meta"]))
        size = meta.get("size")
        if size is None and "draw_counts" in saved.files:
            size = int(saved["draw_counts"].shape[0])
    return None if size is None else int(size)


class HardestReport:
    """A ranked hardest-examples table and where it came from.

    Arguments
    ---------
    rows : list of dict
        From :func:`rank_examples`.
    checkpoint : str, optional
        The sampler checkpoint read.
    train_csv : str, optional
        The training CSV joined.

    Example
    -------
    >>> report = HardestReport([{"rank": 1, "id": "a", "status": "trained",
    ...     "loss": 2.0, "score": 2.0, "prob": 0.5, "draws": 3}])
    >>> report.top(1)[0]["id"], len(report)
    ('a', 1)
    """

    def __init__(self, rows, checkpoint=None, train_csv=None):
        self.rows = list(rows)
        self.checkpoint = checkpoint
        self.train_csv = train_csv

    def __len__(self):
        return len(self.rows)

    def top(self, k):
        """The first ``k`` rows."""
        return self.rows[: max(0, int(k))]

    def write(self, path):
        """Write the whole table as CSV (see :func:`write_report`)."""
        return write_report(self.rows, path)


def report_for_run(
    run_dir,
    checkpoint=None,
    train_csv=None,
    hparams_file=None,
    data_root=None,
):
    """Hardest-examples report of a finished (or interrupted) run.

    Arguments
    ---------
    run_dir : str
        The run's output folder (holding ``hyperparams.yaml`` and ``save/``).
    checkpoint : str, optional
        Sampler file to read (default: the newest under ``run_dir``).
    train_csv : str, optional
        Training CSV (default: the one in ``run_dir`` matching the checkpoint).
    hparams_file : str, optional
        Default ``<run_dir>/hyperparams.yaml``.
    data_root : str, optional
        Replaces ``$data_root`` in the CSV's paths (default: the run's
        ``data_folder`` when it was set).

    Returns
    -------
    HardestReport or None
        None when the run used no sampler or saved no sampler checkpoint.
    """
    if not os.path.isdir(run_dir):
        raise FileNotFoundError(f"run folder {run_dir} does not exist")
    hparams_file = hparams_file or os.path.join(run_dir, "hyperparams.yaml")
    if not os.path.isfile(hparams_file):
        raise FileNotFoundError(
            f"{hparams_file} does not exist: cannot tell which sampler the run used"
        )
    hparams = read_saved_hparams(hparams_file)
    config = sampler_config(hparams)
    if config is None:
        return None
    checkpoint = checkpoint or find_sampler_checkpoint(run_dir)
    if checkpoint is None:
        return None
    if data_root is None and isinstance(hparams.get("data_folder"), str):
        data_root = hparams["data_folder"]
    replacements = {"data_root": data_root} if data_root else {}

    if train_csv is not None:
        candidates = [train_csv]
    else:
        candidates = _csv_candidates(run_dir, hparams)
        size = _checkpoint_size(checkpoint)
        if size is not None:
            candidates = [c for c in candidates if _count_rows(c) == size]
    errors = []
    for candidate in candidates:
        try:
            sampler, dataset = load_sampler(checkpoint, candidate, config, replacements)
        except (ValueError, KeyError) as err:
            if train_csv is not None:
                raise
            errors.append(f"{candidate}: {err}")
            continue
        rows = rank_examples(sampler, table=dataset.data)
        return HardestReport(rows, checkpoint=checkpoint, train_csv=candidate)
    detail = (
        ("; ".join(errors)) if errors else "no CSV with as many rows as the checkpoint"
    )
    raise FileNotFoundError(
        f"train_csv: no training CSV under {run_dir} matches {checkpoint} ({detail}); "
        "give it with --train-csv"
    )


# ------------------------------------------------------------------ output
def _fmt(value):
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        return f"{value:.6g}"
    return value


def write_report(rows, path):
    """Write the ranked rows as CSV (empty cells for unknown values); return ``path``."""
    rows = list(rows)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fields = []
    for row in rows:
        fields += [k for k in row if k not in fields]
    if not fields:
        fields = ["rank", "id", "status", "loss", "score", "prob", "draws"]
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _fmt(v) for k, v in row.items()})
    return path


def format_rows(rows, limit=10, path_width=60):
    """Plain-text table of the first ``limit`` rows (one audio path shown).

    Example
    -------
    >>> print(format_rows([{"rank": 1, "id": "a", "status": "trained", "loss": 2.5,
    ...     "score": 2.5, "prob": 0.25, "draws": 4, "wav": "/d/a.wav"}]))
    rank  id  status   loss   prob       draws  wav
       1  a   trained  2.500  2.500e-01      4  /d/a.wav
    """
    rows = list(rows)[: max(0, int(limit))]
    if not rows:
        return "(no examples)"
    path_cols = audio_columns(rows[0])
    extra = [
        c
        for c in ("last_epoch", "pool", "persistently_hard", "ever_persistently_hard")
        + LABEL_COLUMNS
        if c in rows[0] and c != "duration"
    ]
    shown = path_cols[:1]
    header = ["rank", "id", "status", "loss", "prob", "draws"] + extra + shown
    table = []
    for row in rows:
        cells = [
            str(row["rank"]),
            str(row["id"]),
            row["status"],
            "" if math.isnan(row["loss"]) else f"{row['loss']:.3f}",
            "" if math.isnan(row["prob"]) else f"{row['prob']:.3e}",
            str(row["draws"]),
        ]
        cells += [str(row.get(c, "")) for c in extra]
        for c in shown:
            text = str(row.get(c, ""))
            if len(text) > path_width:
                text = "..." + text[-(path_width - 3) :]
            cells.append(text)
        table.append(cells)
    widths = [max(len(h), *(len(r[j]) for r in table)) for j, h in enumerate(header)]
    right = {0, 3, 4, 5}
    lines = []
    for cells in [header] + table:
        parts = []
        for j, cell in enumerate(cells):
            last = j == len(cells) - 1
            if j in right and cells is not header:
                parts.append(cell.rjust(widths[j]))
            else:
                parts.append(cell if last else cell.ljust(widths[j]))
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def main(argv=None):
    """Command line: print the hardest examples of a run and write the CSV."""
    parser = argparse.ArgumentParser(
        prog="python -m hardmine.tools.hardest",
        description="Rank a run's training examples by their latest loss, with "
        "their draw probability under the mining sampler and their draw count. "
        "Corrupt and mislabelled clips come out on top.",
    )
    parser.add_argument("run_dir", help="the run's output folder")
    parser.add_argument("--checkpoint", help="mining_sampler.ckpt to read")
    parser.add_argument("--train-csv", help="the training CSV of the run")
    parser.add_argument("--hparams", help="saved hyperparams.yaml of the run")
    parser.add_argument("--data-root", help="value of $data_root in the CSV paths")
    parser.add_argument("--top", type=int, default=20, help="rows to print")
    parser.add_argument(
        "--out", help="CSV to write (default: <run_dir>/hardest_examples.csv)"
    )
    args = parser.parse_args(argv)
    top = check_int("--top", args.top, minimum=0)
    try:
        report = report_for_run(
            args.run_dir,
            checkpoint=args.checkpoint,
            train_csv=args.train_csv,
            hparams_file=args.hparams,
            data_root=args.data_root,
        )
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if report is None:
        print(
            f"error: {args.run_dir} has no mining sampler checkpoint "
            "(the run used no sampler, or saved no checkpoint yet)",
            file=sys.stderr,
        )
        return 1
    out = args.out or os.path.join(args.run_dir, "hardest_examples.csv")
    report.write(out)
    print(f"checkpoint: {report.checkpoint}\ntrain CSV:  {report.train_csv}")
    print(format_rows(report.rows, top))
    print(f"{len(report)} examples written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
