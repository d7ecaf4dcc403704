"""Compare recipe variants: one table, CDF and curve plots, hardest examples.

Usage::

    python -m hardmine.tools.compare results/sepformer_baseline results/sepformer_isbl \\
        --out results/compare

Each argument is a run folder (the recipe's ``output_folder``, holding
``train_log.txt``, ``mining_stats.jsonl``, ``test_results.csv`` ...) or a
folder containing run folders at any depth. A run's variant is the name of
its folder, or of the parent folder when the run folder is named after the
seed (``results/<variant>/<seed>/``, the recipes' layout); runs of the same
variant are different seeds and are aggregated as mean and standard
deviation across seeds (the ``± sd`` in the table; 0 for a single seed).

With two or more variants, a difference table follows each table: for every
column, the mean difference of each variant to a reference variant
(``--reference``, default the first), paired over seeds (the same seed of the
two variants is a pair; a seed of only one of them is left out, as a
footnote says), with a 95 % percentile-bootstrap interval
(:func:`hardmine.tools.stats.seed_difference`) and ``*`` when the interval
excludes 0.

What is read from each run:

* ``test_results.csv``: per-utterance test metrics. Separation runs
  (columns ``snt_id, sdr, sdr_i, si-snr, si-snr_i``) give the mean, median,
  5th and 10th percentiles of SI-SNRi; the low percentiles show the hard
  mixtures that a mean hides. Keyword-spotting runs (``ID, label,
  prediction, correct, score``) give the accuracy and, from
  ``test_summary.json``, the false-reject rate at each false-alarm budget;
  the keywords are the ``classes`` of ``test_summary.json`` other than
  ``_unknown_`` and ``_silence_``. A ``subgroup`` column of a separation
  file gives the mean SI-SNRi per subgroup.
* ``mining_stats.jsonl``: optimizer steps, examples filtered, batches
  skipped, broken examples, and the per-epoch spread of the sampler and of
  the loss weights.
* ``train_log.txt``: training and validation curves.
* wall time: ``run_info.json`` (written by :mod:`hardmine.tools.variants`), else a
  ``wall_time_s`` entry of the mining statistics, else the time between the
  first and last line of ``log.txt``.
* the newest sampler checkpoint, for the hardest-examples report
  (:mod:`hardmine.tools.hardest`).

Written to ``--out`` (default ``./compare_results``):
``summary.csv`` / ``summary.json`` (one row per variant; the JSON also
holds the paired differences with their intervals and the subgroup means),
``runs.csv`` (one row per run), ``cdf.png`` (per-utterance metric CDFs, one
line per variant), ``curves.png`` (train and validation curves),
``mining.png`` (sampler entropy and effective sample size, weight effective
sample size, share of examples filtered, per epoch), ``det.png`` (keyword
spotting: false-reject against false-alarm rate on log axes, mean over
seeds with a min-max band), ``subgroups.png`` (separation with a
``subgroup`` column: mean SI-SNRi per subgroup and variant with its interval
over seeds) and ``hardest_<variant>_<seed>.csv``.

Example
-------
>>> summarize_seeds([1.0, 3.0])
{'mean': 2.0, 'std': 1.4142135623730951, 'n': 2}
"""

import argparse
import csv
import json
import math
import os
import re
import sys
from datetime import datetime

import numpy as np

__all__ = [
    "Run",
    "find_runs",
    "is_report",
    "read_test_rows",
    "separation_summary",
    "side_by_side_table",
    "load_run",
    "parse_train_log",
    "read_mining_stats",
    "summarize_seeds",
    "aggregate",
    "format_table",
    "seed_differences",
    "format_differences",
    "keywords_of",
    "det_frr",
    "det_curves",
    "subgroup_means",
    "plot_cdf",
    "plot_det",
    "plot_subgroups",
    "plot_curves",
    "plot_mining",
    "compare",
    "main",
]

RUN_MARKERS = (
    "train_log.txt",
    "mining_stats.jsonl",
    "test_results.csv",
    "hyperparams.yaml",
)

SEP_METRIC = "si-snr_i"
#: Optional column of a separation ``test_results.csv`` naming each mixture's
#: subgroup (drawn as ``subgroups.png`` when present).
SUBGROUP_COLUMN = "subgroup"
#: KWS classes that are not keywords (the negatives of detection).
NON_KEYWORDS = ("_unknown_", "_silence_")
SEP_COLUMNS = (
    "si-snr_i_mean",
    "si-snr_i_median",
    "si-snr_i_p5",
    "si-snr_i_p10",
    "sdr_i_mean",
)
#: Rows of :func:`side_by_side_table`: (column of ``test_results.csv``, label,
#: statistics shown).
SIDE_BY_SIDE_ROWS = (
    ("si-snr_i", "SI-SNRi", ("mean", "median", "p5", "p10")),
    ("sdr_i", "SDRi", ("mean", "median", "p5", "p10")),
)
#: Files that :func:`compare` writes into its output folder.
REPORT_MARKERS = ("summary.json", "runs.csv")
COMMON_COLUMNS = (
    "steps",
    "epochs",
    "wall_time_s",
    "examples_filtered",
    "batches_skipped",
    "examples_bad_audio",
)
LABELS = {
    "si-snr_i_mean": "SI-SNRi mean",
    "si-snr_i_median": "median",
    "si-snr_i_p5": "p5",
    "si-snr_i_p10": "p10",
    "sdr_i_mean": "SDRi mean",
    "accuracy": "accuracy",
    "steps": "steps",
    "epochs": "epochs",
    "wall_time_s": "wall time (s)",
    "examples_filtered": "filtered",
    "batches_skipped": "skipped",
    "examples_bad_audio": "bad audio",
}

#: Mining-figure panels: (title, function of one mining record -> value or None).
MINING_PANELS = (
    ("sampler entropy / log N (1 = uniform)", lambda r: r.get("sampler_draw_entropy")),
    ("sampler ESS / N", lambda r: r.get("sampler_draw_ess_frac")),
    (
        "loss-weight ESS / batch size",
        lambda r: (
            r["weights_ess"] * r["batches"] / r["examples"]
            if r.get("weights_ess") is not None and r.get("examples")
            else None
        ),
    ),
    (
        "share of examples filtered",
        lambda r: (
            r.get("examples_filtered", 0) / r["examples"] if r.get("examples") else None
        ),
    ),
)


# ---------------------------------------------------------------- reading
class Run:
    """Everything read from one run folder.

    Attributes
    ----------
    path, variant, seed : str
    task : str or None
        ``"separation"``, ``"kws"`` or None (no test results).
    metrics : dict
        Scalar table columns of this run (NaN when unknown).
    per_utterance : numpy.ndarray or None
        The per-utterance values plotted as a CDF (SI-SNRi, or the detection
        score of keyword utterances).
    detection : dict or None
        Keyword spotting: the finite detection scores of the keyword
        utterances (``"targets"``) and of the others (``"negatives"``), for
        the DET curve.
    subgroups : dict or None
        Separation with a ``subgroup`` column: subgroup name (in order of
        first appearance) -> ``{"mean": SI-SNRi mean, "count": mixtures}``.
    epochs : list of dict
        Parsed ``train_log.txt`` lines (see :func:`parse_train_log`).
    mining : list of dict
        ``mining_stats.jsonl`` records, one per epoch.
    hardest : hardmine.tools.hardest.HardestReport or None
    notes : list of str
        Problems met while reading (missing files ...).

    Example
    -------
    >>> run = Run("results/x/1", "x", "1")
    >>> run.label, run.task
    ('x/1', None)
    """

    def __init__(self, path, variant, seed):
        self.path = path
        self.variant = variant
        self.seed = seed
        self.task = None
        self.metrics = {}
        self.per_utterance = None
        self.detection = None
        self.subgroups = None
        self.epochs = []
        self.mining = []
        self.hardest = None
        self.notes = []

    @property
    def label(self):
        """``variant/seed``."""
        return f"{self.variant}/{self.seed}"

    def __repr__(self):
        return f"Run({self.label!r}, task={self.task!r}, path={self.path!r})"


def _is_run(path):
    return any(os.path.exists(os.path.join(path, m)) for m in RUN_MARKERS)


def is_report(path):
    """Whether ``path`` is an output folder of :func:`compare`, not a run.

    Example
    -------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     before = is_report(tmp)
    ...     for name in REPORT_MARKERS:
    ...         open(os.path.join(tmp, name), "w").close()
    ...     before, is_report(tmp)
    (False, True)
    """
    return not _is_run(path) and all(
        os.path.isfile(os.path.join(path, m)) for m in REPORT_MARKERS
    )


def find_runs(paths, skipped=None):
    """Run folders named by ``paths`` (each a run or a folder of runs).

    Order follows the arguments, then sorted folder names. Checkpoint and
    ``save`` folders are not searched. A comparison report among ``paths``
    (an earlier ``--out`` folder, e.g. ``<out>/compare`` of
    :mod:`hardmine.tools.variants`, which a shell glob such as
    ``results/compare/*/`` also matches) is skipped and appended to
    ``skipped`` when given; an error is raised only if no run is left.
    """
    runs = []
    reports = []
    for path in paths:
        if not os.path.isdir(path):
            raise FileNotFoundError(f"result folder {path} does not exist")
        if is_report(path):
            reports.append(path)
            continue
        found = []
        if _is_run(path):
            found.append(path)
        else:
            for root, dirs, _files in os.walk(path):
                dirs[:] = sorted(
                    d for d in dirs if d != "save" and not d.startswith("CKPT")
                )
                if root != path and _is_run(root):
                    found.append(root)
                    dirs[:] = []
        if not found:
            raise FileNotFoundError(
                f"{path} holds no run output (none of {', '.join(RUN_MARKERS)})"
            )
        for run in found:
            if os.path.realpath(run) not in {os.path.realpath(r) for r in runs}:
                runs.append(run)
    if reports and not runs:
        raise FileNotFoundError(
            f"{', '.join(reports)}: comparison report(s), no run output; "
            "give the run folders (or the folder holding them)"
        )
    if skipped is not None:
        skipped.extend(reports)
    return runs


_ITEM_SPLIT = re.compile(r", (?=[^,:]+: )")


def _value(text):
    text = text.strip()
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def parse_train_log(path):
    """Parse a SpeechBrain ``FileTrainLogger`` file.

    Lines look like ``epoch: 1, lr: 1.50e-04 - train si-snr: -3.2e+00,
    batches: 10 - valid si-snr: -4.1e+00``.

    Returns
    -------
    list of dict
        One dict per line with keys ``meta``, ``train``, ``valid``, ``test``
        (each a dict; missing parts empty). Values are numbers when they
        parse as numbers.

    Example
    -------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = os.path.join(tmp, "train_log.txt")
    ...     with open(path, "w") as f:
    ...         _ = f.write("epoch: 2, lr: 1.50e-04 - train si-snr: -3.20, "
    ...                     "train batches: 10 - valid si-snr: -4.10\\n")
    ...     line = parse_train_log(path)[0]
    >>> line["meta"]["epoch"], line["train"], line["valid"]["si-snr"]
    (2, {'si-snr': -3.2, 'batches': 10}, -4.1)
    """
    records = []
    with open(path, encoding="utf-8") as handle:
        for raw in handle:
            raw = raw.strip()
            if not raw:
                continue
            record = {"meta": {}, "train": {}, "valid": {}, "test": {}}
            for i, part in enumerate(raw.split(" - ")):
                part_target = "meta"
                for item in _ITEM_SPLIT.split(part):
                    key, sep, value = item.partition(": ")
                    if not sep:
                        continue
                    target = part_target
                    if i > 0:
                        prefix, _, rest = key.partition(" ")
                        if prefix in ("train", "valid", "test") and rest:
                            target, key = prefix, rest
                            part_target = prefix
                    record[target][key.strip()] = _value(value)
            records.append(record)
    return records


def read_mining_stats(path):
    """Records of ``mining_stats.jsonl``, one per epoch (the last if repeated).

    Example
    -------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = os.path.join(tmp, "mining_stats.jsonl")
    ...     with open(path, "w") as f:
    ...         _ = f.write('{"epoch": 1, "batches": 4}\\n{"epoch": 1, "batches": 5}\\n')
    ...     read_mining_stats(path)
    [{'epoch': 1, 'batches': 5}]
    """
    by_epoch = {}
    with open(path, encoding="utf-8") as handle:
        for n, line in enumerate(handle, start=1):
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}, line {n}: not JSON ({err})") from None
            epoch = record.get("epoch", n)
            by_epoch[epoch if epoch is not None else n] = record
    return [by_epoch[k] for k in sorted(by_epoch, key=lambda e: (str(type(e)), e))]


def _read_csv(path):
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def _float(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def read_test_rows(path):
    """Per-utterance rows of a separation ``test_results.csv`` (no ``avg`` row).

    Arguments
    ---------
    path : str
        The file, or the run folder holding it.

    Returns
    -------
    list of dict
        Values as written (strings).
    """
    if os.path.isdir(path):
        path = os.path.join(path, "test_results.csv")
    _fields, rows = _read_csv(path)
    return [r for r in rows if r.get("snt_id") != "avg"]


def separation_summary(rows, metrics=None):
    """Statistics of the per-utterance separation metrics.

    Arguments
    ---------
    rows : list of dict
        Per-utterance rows (values may be strings), e.g. from
        :func:`read_test_rows`.
    metrics : list of str, optional
        Columns to summarise (default: those of :data:`SIDE_BY_SIDE_ROWS`
        that the rows have).

    Returns
    -------
    dict
        Metric (``si-snr_i``, ``sdr_i``, those the rows have) ->
        :func:`hardmine.tasks.sep_metrics.summarize` output (``count``,
        ``mean``, ``median``, ``p5``, ``p10`` ...).

    Example
    -------
    >>> rows = [{"si-snr_i": "1.0", "sdr_i": "2"}, {"si-snr_i": "3.0", "sdr_i": "4"}]
    >>> summary = separation_summary(rows)
    >>> summary["si-snr_i"]["mean"], summary["sdr_i"]["count"]
    (2.0, 2)
    """
    from hardmine.tasks.sep_metrics import summarize

    rows = list(rows)
    if metrics is None:
        metrics = [m for m, _, _ in SIDE_BY_SIDE_ROWS if rows and m in rows[0]]
    return {
        metric: summarize(np.array([_float(r[metric]) for r in rows]))
        for metric in metrics
    }


def _load_separation(run, fields, rows):
    rows = [r for r in rows if r.get("snt_id") != "avg"]
    summary = separation_summary(
        rows, [m for m in ("si-snr_i", "sdr_i") if m in fields]
    )
    for metric, stats in summary.items():
        for stat in ("mean", "median", "p5", "p10"):
            column = f"{metric}_{stat}"
            if column in SEP_COLUMNS:
                run.metrics[column] = stats[stat]
        if metric == SEP_METRIC:
            values = np.array([_float(r[metric]) for r in rows])
            run.per_utterance = values[np.isfinite(values)]
    run.metrics["test_utterances"] = len(rows)
    if SUBGROUP_COLUMN in fields and SEP_METRIC in fields:
        groups = {}
        for r in rows:
            name = (r.get(SUBGROUP_COLUMN) or "").strip()
            value = _float(r[SEP_METRIC])
            if name and math.isfinite(value):
                groups.setdefault(name, []).append(value)
        run.subgroups = {
            name: {"mean": float(np.mean(v)), "count": len(v)}
            for name, v in groups.items()
        }


def _is_negative_label(label):
    return label.startswith("_") and label.endswith("_")


def keywords_of(classes):
    """The keyword classes: every class but those of :data:`NON_KEYWORDS`.

    Example
    -------
    >>> keywords_of(["yes", "no", "_silence_", "_unknown_"])
    ['yes', 'no']
    """
    return [c for c in classes if c not in NON_KEYWORDS]


def _load_kws(run, rows, summary_path):
    from hardmine.tasks.kws_metrics import frr_at_far

    correct = np.array([_float(r["correct"]) for r in rows])
    run.metrics["accuracy"] = float(np.mean(correct)) if rows else math.nan
    run.metrics["test_utterances"] = len(rows)
    summary = None
    if os.path.isfile(summary_path):
        with open(summary_path, encoding="utf-8") as handle:
            summary = json.load(handle)
    scores = np.array([_float(r.get("score")) for r in rows])
    classes = summary.get("classes") if isinstance(summary, dict) else None
    if isinstance(classes, list) and classes:
        keywords = set(keywords_of(classes))
        is_target = np.array([r["label"] in keywords for r in rows], bool)
    else:
        is_target = np.array([not _is_negative_label(r["label"]) for r in rows], bool)
    finite = np.isfinite(scores)
    run.per_utterance = scores[is_target & finite]
    run.detection = {
        "targets": scores[is_target & finite],
        "negatives": scores[~is_target & finite],
    }
    if summary and isinstance(summary.get("frr_at_far"), dict):
        for far, res in summary["frr_at_far"].items():
            frr = res.get("frr") if isinstance(res, dict) else None
            run.metrics[f"frr@far{far}"] = math.nan if frr is None else float(frr)
        if summary.get("n_targets") not in (None, int(is_target.sum())):
            run.notes.append(
                f"{summary_path}: {summary['n_targets']} keyword utterances, but "
                f"{int(is_target.sum())} keyword labels in test_results.csv"
            )
    else:
        # No summary: keywords are the labels not written _like_this_.
        for far in (0.01, 0.05):
            res = frr_at_far(scores[is_target], scores[~is_target], far)
            run.metrics[f"frr@far{far}"] = res["frr"]
        run.notes.append(f"{summary_path} missing: FRR computed from test_results.csv")


_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)(?:,(\d+))?")


def _log_span(path):
    first = last = None
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            match = _LOG_TIME.match(line)
            if not match:
                continue
            stamp = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S")
            seconds = stamp.timestamp() + int(match.group(2) or 0) / 1000.0
            first = seconds if first is None else first
            last = seconds
    if first is None:
        return None
    return last - first


def _wall_time(run):
    info = os.path.join(run.path, "run_info.json")
    if os.path.isfile(info):
        with open(info, encoding="utf-8") as handle:
            value = json.load(handle).get("wall_time_s")
        if value is not None:
            return float(value), "run_info.json"
    for key in ("wall_time_s", "wall_time"):
        values = [r[key] for r in run.mining if r.get(key) is not None]
        if values:
            return float(values[-1]), f"mining_stats {key}"
    log = os.path.join(run.path, "log.txt")
    if os.path.isfile(log):
        span = _log_span(log)
        if span is not None:
            return span, "log.txt span"
    return math.nan, None


def _variant_and_seed(path, hparams):
    name = os.path.basename(os.path.normpath(path))
    parent = os.path.basename(os.path.dirname(os.path.normpath(path)))
    seed = hparams.get("seed")
    if (name.isdigit() or (seed is not None and name == str(seed))) and parent:
        return parent, name
    return name, "" if seed is None else str(seed)


def load_run(path, with_hardest=True):
    """Read one run folder into a :class:`Run`."""
    from hardmine.tools.hardest import read_saved_hparams, report_for_run

    hparams = {}
    hp_path = os.path.join(path, "hyperparams.yaml")
    if os.path.isfile(hp_path):
        try:
            hparams = read_saved_hparams(hp_path)
        except ValueError as err:
            hparams = {}
            note = str(err)
        else:
            note = None
    else:
        note = f"{hp_path} missing"
    variant, seed = _variant_and_seed(path, hparams)
    run = Run(path, variant, seed)
    if note:
        run.notes.append(note)

    results = os.path.join(path, "test_results.csv")
    if os.path.isfile(results):
        fields, rows = _read_csv(results)
        if SEP_METRIC in fields:
            run.task = "separation"
            _load_separation(run, fields, rows)
        elif {"label", "correct"} <= set(fields):
            run.task = "kws"
            _load_kws(run, rows, os.path.join(path, "test_summary.json"))
        else:
            run.notes.append(f"{results}: unknown columns {fields}")
    else:
        run.notes.append("no test_results.csv (not evaluated yet)")

    stats_path = os.path.join(path, "mining_stats.jsonl")
    if os.path.isfile(stats_path):
        run.mining = read_mining_stats(stats_path)
    log_path = os.path.join(path, "train_log.txt")
    if os.path.isfile(log_path):
        by_epoch = {}
        for record in parse_train_log(log_path):
            epoch = record["meta"].get("epoch")
            if isinstance(epoch, int) and (record["train"] or record["valid"]):
                by_epoch[epoch] = record
        run.epochs = [by_epoch[e] for e in sorted(by_epoch)]

    m = run.metrics
    if run.mining:
        steps = run.mining[-1].get("optimizer_step")
        m["steps"] = math.nan if steps is None else float(steps)
        for key in ("examples_filtered", "batches_skipped", "examples_bad_audio"):
            m[key] = float(sum(r.get(key, 0) for r in run.mining))
        m["epochs"] = float(len(run.mining))
    else:
        for key in ("steps", "examples_filtered", "batches_skipped"):
            m[key] = math.nan
        m["examples_bad_audio"] = math.nan
        m["epochs"] = float(len(run.epochs)) if run.epochs else math.nan
    m["wall_time_s"], source = _wall_time(run)
    if source and source != "run_info.json":
        run.notes.append(f"wall time from {source}")

    if with_hardest:
        try:
            run.hardest = report_for_run(path)
        except (OSError, ValueError) as err:
            run.notes.append(f"hardest examples: {err}")
    return run


# ------------------------------------------------------------ aggregation
def summarize_seeds(values):
    """Mean and sample standard deviation (0 for one value) of finite values."""
    arr = np.asarray([v for v in values if v is not None], dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        return {"mean": math.nan, "std": math.nan, "n": 0}
    std = float(np.std(arr, ddof=1)) if arr.size > 1 else 0.0
    return {"mean": float(np.mean(arr)), "std": std, "n": int(arr.size)}


def _columns_for(runs):
    tasks = {r.task for r in runs}
    columns = []
    if "separation" in tasks:
        columns += list(SEP_COLUMNS)
    if "kws" in tasks:
        columns.append("accuracy")
        fars = sorted(
            {k for r in runs for k in r.metrics if k.startswith("frr@far")},
            key=lambda k: _float(k[len("frr@far") :]),
        )
        columns += fars
    return columns + list(COMMON_COLUMNS)


def _variants(runs):
    order = []
    for run in runs:
        if run.variant not in order:
            order.append(run.variant)
    return order


def aggregate(runs):
    """One row per variant: mean and spread across its seeds.

    Returns
    -------
    list of dict
        Keys ``variant``, ``task``, ``n_seeds``, ``seeds`` and, per column,
        ``<column>`` -> ``{"mean", "std", "n", "values"}``.
    """
    columns = _columns_for(runs)
    rows = []
    for variant in _variants(runs):
        mine = [r for r in runs if r.variant == variant]
        tasks = sorted({r.task for r in mine if r.task})
        row = {
            "variant": variant,
            "task": "+".join(tasks) if tasks else None,
            "n_seeds": len(mine),
            "seeds": [r.seed for r in mine],
        }
        for column in columns:
            values = [r.metrics.get(column, math.nan) for r in mine]
            row[column] = {**summarize_seeds(values), "values": values}
        rows.append(row)
    return rows


def _cell(stats, column):
    mean, std = stats["mean"], stats["std"]
    if not math.isfinite(mean):
        return "-"
    if column == "accuracy" or column.startswith("frr@"):
        text = f"{100 * mean:.2f}%"
        spread = f"{100 * std:.2f}"
    elif column in ("steps", "epochs", "examples_filtered", "batches_skipped") or (
        column == "examples_bad_audio"
    ):
        text = f"{mean:.0f}" if float(mean).is_integer() else f"{mean:.1f}"
        spread = f"{std:.1f}"
    elif column == "wall_time_s":
        text, spread = f"{mean:.1f}", f"{std:.1f}"
    else:
        text, spread = f"{mean:.2f}", f"{std:.2f}"
    if stats["n"] > 1:
        text += f" ± {spread}"
    return text


def _label(column):
    if column.startswith("frr@far"):
        far = _float(column[len("frr@far") :])
        return f"FRR@FA {100 * far:g}%"
    return LABELS.get(column, column)


def format_table(rows, columns=None):
    """Plain-text table of :func:`aggregate` rows (mean ± sd across seeds).

    Example
    -------
    >>> row = {"variant": "isbl", "n_seeds": 2, "steps": summarize_seeds([10, 12])}
    >>> print(format_table([row], ["steps"]))
    variant  seeds  steps
    isbl         2  11 ± 1.4
    """
    if columns is None:
        columns = [
            k
            for k in (rows[0] if rows else {})
            if k not in ("variant", "task", "n_seeds", "seeds")
        ]
    header = ["variant", "seeds"] + [_label(c) for c in columns]
    body = [
        [row["variant"], str(row["n_seeds"])] + [_cell(row[c], c) for c in columns]
        for row in rows
    ]
    widths = [max(len(h), *(len(b[j]) for b in body)) for j, h in enumerate(header)]
    lines = []
    for cells in [header] + body:
        parts = [
            cells[0].ljust(widths[0]),
            *(c.rjust(w) for c, w in zip(cells[1:], widths[1:])),
        ]
        if cells is header:
            parts = [c.ljust(w) for c, w in zip(cells, widths)]
            parts[1] = cells[1].rjust(widths[1])
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def _first_index(seeds):
    index = {}
    for i, seed in enumerate(seeds):
        index.setdefault(seed, i)
    return index


def seed_differences(rows, reference, columns):
    """Paired differences over seeds of every variant against ``reference``.

    The same seed of two variants is a pair; seeds that only one of the two
    has are left out (and listed). Each column's differences go through
    :func:`hardmine.tools.stats.seed_difference` (mean, percentile-bootstrap
    interval, Wilcoxon p-value).

    Arguments
    ---------
    rows : list of dict
        :func:`aggregate` rows (``seeds`` and per-column ``values``).
    reference : str
        Variant of ``rows`` subtracted from the others.
    columns : list of str
        Columns compared.

    Returns
    -------
    dict
        ``reference``, ``confidence``, ``method`` and ``variants``: variant ->
        ``{"paired_seeds", "only_variant", "only_reference", "metrics"}``
        where ``metrics`` maps each column to the
        :func:`~hardmine.tools.stats.seed_difference` result (``mean``,
        ``low``, ``high``, ``n``, ``excludes_zero``, ``wilcoxon_p``) plus the
        paired ``variant_values`` and ``reference_values``.

    Example
    -------
    >>> rows = [
    ...     {"variant": "a", "seeds": ["1", "2"], "x": {"values": [1.0, 2.0]}},
    ...     {"variant": "b", "seeds": ["2", "1", "3"], "x": {"values": [4.0, 2.0, 9.0]}},
    ... ]
    >>> d = seed_differences(rows, "a", ["x"])["variants"]["b"]
    >>> d["paired_seeds"], d["only_variant"], d["metrics"]["x"]["mean"]
    (['1', '2'], ['3'], 1.5)
    """
    from hardmine.tools.stats import CONFIDENCE, seed_difference

    by_name = {row["variant"]: row for row in rows}
    if reference not in by_name:
        raise ValueError(f"reference {reference!r} is not one of {list(by_name)}")
    ref = by_name[reference]
    ref_index = _first_index(ref["seeds"])
    out = {
        "reference": reference,
        "confidence": CONFIDENCE,
        "method": "paired over seeds: mean of the per-seed differences, "
        "percentile bootstrap interval (scipy.stats.bootstrap, 9999 resamples), "
        "Wilcoxon signed-rank p-value",
        "variants": {},
    }
    for row in rows:
        if row is ref:
            continue
        own_index = _first_index(row["seeds"])
        paired = [s for s in ref_index if s in own_index]
        entry = {
            "paired_seeds": paired,
            "only_variant": [s for s in own_index if s not in ref_index],
            "only_reference": [s for s in ref_index if s not in own_index],
            "metrics": {},
        }
        for column in columns:
            mine = [row[column]["values"][own_index[s]] for s in paired]
            theirs = [ref[column]["values"][ref_index[s]] for s in paired]
            entry["metrics"][column] = {
                **seed_difference(mine, theirs),
                "variant_values": mine,
                "reference_values": theirs,
            }
        out["variants"][row["variant"]] = entry
    return out


def _is_rate(column):
    return column == "accuracy" or column.startswith("frr@")


def _difference_cell(diff, column):
    if not math.isfinite(diff["mean"]):
        return "-"
    scale = 100.0 if _is_rate(column) else 1.0
    digits = 2 if _is_rate(column) or column in SEP_COLUMNS else 1
    mean = f"{scale * diff['mean']:+.{digits}f}"
    if not (math.isfinite(diff["low"]) and math.isfinite(diff["high"])):
        pairs = diff["n"]
        return f"{mean} ({pairs} pair{'s' if pairs != 1 else ''})  "
    low, high = scale * diff["low"], scale * diff["high"]
    mark = " *" if diff["excludes_zero"] else "  "
    return f"{mean} [{low:+.{digits}f}, {high:+.{digits}f}]{mark}"


def format_differences(differences, columns):
    """Plain-text difference table of :func:`seed_differences` output.

    One line per column of the comparison table, one column per variant
    other than the reference: mean paired difference ``variant -
    reference`` over seeds with its interval, ``*`` when the interval
    excludes 0. Rates (accuracy, false-reject rates) are in percentage
    points. A footnote lists the seeds left out of the pairing.

    Example
    -------
    >>> rows = [
    ...     {"variant": "a", "seeds": ["1", "2"], "steps": {"values": [10, 12]}},
    ...     {"variant": "b", "seeds": ["1", "2", "3"], "steps": {"values": [14, 15, 9]}},
    ... ]
    >>> print(format_differences(seed_differences(rows, "a", ["steps"]), ["steps"]))
    Difference to a, paired by seed (mean [95 % interval]; * interval excludes 0)
    difference                    b †
    paired seeds                    2
    steps         +3.5 [+3.0, +4.0] *
    † seed 3 only in b: left out of the pairing b - a
    """
    from hardmine.tools.stats import CONFIDENCE

    variants = list(differences["variants"])
    level = f"{100 * differences.get('confidence', CONFIDENCE):g} %"
    title = (
        f"Difference to {differences['reference']}, paired by seed "
        f"(mean [{level} interval]; * interval excludes 0)"
    )
    notes = []
    for variant, entry in differences["variants"].items():
        for seeds, whose in (
            (entry["only_variant"], variant),
            (entry["only_reference"], differences["reference"]),
        ):
            if seeds:
                notes.append(
                    f"seed{'s' if len(seeds) > 1 else ''} {', '.join(seeds)} "
                    f"only in {whose}: left out of the pairing {variant} - "
                    f"{differences['reference']}"
                )
    header = ["difference"]
    for variant in variants:
        entry = differences["variants"][variant]
        unpaired = entry["only_variant"] or entry["only_reference"]
        header.append(variant + (" †" if unpaired else ""))
    body = [
        ["paired seeds"]
        + [str(len(differences["variants"][v]["paired_seeds"])) for v in variants]
    ]
    for column in columns:
        label = _label(column) + (" (points)" if _is_rate(column) else "")
        body.append(
            [label]
            + [
                _difference_cell(differences["variants"][v]["metrics"][column], column)
                for v in variants
            ]
        )
    widths = [max(len(r[j]) for r in [header] + body) for j in range(len(header))]
    lines = [title]
    for cells in [header] + body:
        parts = [cells[0].ljust(widths[0])]
        parts += [c.rjust(w) for c, w in zip(cells[1:], widths[1:])]
        lines.append("  ".join(parts).rstrip())
    lines += [f"† {note}" for note in notes]
    return "\n".join(lines)


def side_by_side_table(summaries, rows=SIDE_BY_SIDE_ROWS, count_label="test mixtures"):
    """One column per run, one line per statistic (``make demo`` prints this).

    With exactly two runs a third column gives the difference (second minus
    first). The last line counts the test utterances of each run.

    Arguments
    ---------
    summaries : dict
        Run name -> metric -> statistics, as from :func:`separation_summary`.
    rows : sequence
        ``(metric, label, statistics)`` triples, in display order.
    count_label : str
        Label of the last line.

    Returns
    -------
    str

    Example
    -------
    >>> summaries = {
    ...     "baseline": separation_summary([{"si-snr_i": 4.0, "sdr_i": 5.0}]),
    ...     "isbl": separation_summary([{"si-snr_i": 6.0, "sdr_i": 6.5}]),
    ... }
    >>> print(side_by_side_table(summaries).splitlines()[2])
    SI-SNRi mean (dB)         4.00      6.00   +2.00
    """
    runs = list(summaries)
    diff = len(runs) == 2
    header = f"{'':20}" + "".join(f"{run:>10}" for run in runs)
    header += f"{'diff':>8}" if diff else ""
    lines = [header, "-" * len(header)]
    for metric, label, stats in rows:
        for stat in stats:
            values = [summaries[run][metric][stat] for run in runs]
            line = f"{label + ' ' + stat + ' (dB)':20}"
            line += "".join(f"{v:10.2f}" for v in values)
            if diff:
                line += f"{values[1] - values[0]:+8.2f}"
            lines.append(line)
    counts = [summaries[run][rows[0][0]]["count"] for run in runs]
    lines.append(f"{count_label:20}" + "".join(f"{c:10d}" for c in counts))
    return "\n".join(lines)


# ---------------------------------------------------------------- figures
def _figure(n_panels, title):
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    cols = min(n_panels, 2)
    rows = math.ceil(n_panels / cols)
    fig = Figure(figsize=(6.0 * cols, 4.0 * rows), layout="constrained")
    axes = [fig.add_subplot(rows, cols, i + 1) for i in range(n_panels)]
    fig.suptitle(title)
    return fig, axes


def _colors(variants):
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return {v: cmap(i % 10) for i, v in enumerate(variants)}


def plot_cdf(runs):
    """Per-utterance test metric CDFs, one line per variant (seeds pooled).

    Separation: SI-SNRi per test mixture. Keyword spotting: detection score
    of the keyword utterances, whose CDF at a threshold is the false-reject
    rate there. One panel per task; each line is labelled with its variant.
    """
    tasks = [t for t in ("separation", "kws") if any(r.task == t for r in runs)]
    fig, axes = _figure(max(len(tasks), 1), "Per-utterance test results")
    colors = _colors(_variants(runs))
    if not tasks:
        axes[0].text(
            0.5, 0.5, "no test results", ha="center", transform=axes[0].transAxes
        )
    for ax, task in zip(axes, tasks):
        for variant in _variants(runs):
            parts = [
                r.per_utterance
                for r in runs
                if r.variant == variant
                and r.task == task
                and r.per_utterance is not None
            ]
            if not parts:
                continue
            values = np.sort(np.concatenate(parts))
            if values.size == 0:
                continue
            # Starts at (lowest value, 0) so the first step is drawn.
            cdf = np.arange(0, values.size + 1) / values.size
            xs = np.concatenate([values[:1], values])
            ax.step(xs, cdf, where="post", label=variant, color=colors[variant])
        if task == "separation":
            ax.set_xlabel("SI-SNRi (dB)")
            ax.set_ylabel("share of test mixtures <= x")
            ax.set_title("SI-SNRi CDF (hard mixtures on the left)")
        else:
            ax.set_xlabel("keyword score threshold")
            ax.set_ylabel("false-reject rate (CDF of keyword scores)")
            ax.set_title("Keyword detection scores")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    return fig


def _series(records, getter):
    """``{epoch: value}`` from per-epoch records."""
    out = {}
    for record in records:
        value = getter(record)
        if isinstance(value, (int, float)) and math.isfinite(value):
            out[record["_epoch"]] = float(value)
    return out


def _plot_seed_band(ax, per_seed, label, color, style="-"):
    """Mean over seeds (labelled line) with a min-max band when several."""
    epochs = sorted({e for s in per_seed for e in s})
    if not epochs:
        return False
    stacked = [[s[e] for s in per_seed if e in s] for e in epochs]
    means = [float(np.mean(v)) for v in stacked]
    ax.plot(epochs, means, style, label=label, color=color, marker=".")
    if len(per_seed) > 1:
        ax.fill_between(
            epochs,
            [min(v) for v in stacked],
            [max(v) for v in stacked],
            color=color,
            alpha=0.15,
            linewidth=0,
        )
    return True


#: Axis labels of logged keys whose name hides what they are.
CURVE_LABELS = {"si-snr": "loss = -SI-SNR (dB)", "loss": "loss (NLL)"}


def _integer_epochs(ax):
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _curve_keys(runs, limit=4):
    keys = []
    for run in runs:
        for record in run.epochs:
            for key, value in record["valid"].items():
                if isinstance(value, (int, float)) and key not in keys:
                    keys.append(key)
    if "accuracy" in keys and "error" in keys:
        keys.remove("error")  # 1 - accuracy: no new information
    return keys[:limit]


def plot_curves(runs, limit=4):
    """Training (solid) and validation (dashed) curves per variant.

    One panel per validation metric (the first ``limit``); lines are
    labelled ``"<variant> train"`` and ``"<variant> valid"``, the mean over
    seeds with a min-max band.
    """
    keys = _curve_keys(runs, limit)
    fig, axes = _figure(max(len(keys), 1), "Training and validation curves")
    colors = _colors(_variants(runs))
    if not keys:
        axes[0].text(
            0.5, 0.5, "no train_log.txt", ha="center", transform=axes[0].transAxes
        )
    for ax, key in zip(axes, keys):
        for variant in _variants(runs):
            mine = [r for r in runs if r.variant == variant]
            for split, style in (("train", "-"), ("valid", "--")):
                per_seed = []
                for run in mine:
                    records = [
                        {"_epoch": rec["meta"]["epoch"], **rec[split]}
                        for rec in run.epochs
                    ]
                    series = _series(records, lambda r, k=key: r.get(k))
                    if series:
                        per_seed.append(series)
                _plot_seed_band(
                    ax, per_seed, f"{variant} {split}", colors[variant], style
                )
        ax.set_xlabel("epoch")
        ax.set_ylabel(CURVE_LABELS.get(key, key))
        ax.set_title(key)
        _integer_epochs(ax)
        ax.grid(alpha=0.3)
        if ax.get_lines():
            ax.legend(fontsize="small")
    return fig


def plot_mining(runs):
    """How concentrated the mining is, per epoch and variant.

    Panels (see :data:`MINING_PANELS`): normalised entropy and effective
    sample size of the sampler's draw distribution, effective sample size of
    the loss weights relative to the batch size, and the share of examples
    the threshold filter dropped. Each line is labelled with its variant; a
    variant only appears in the panels it logs.
    """
    fig, axes = _figure(len(MINING_PANELS), "Mining distribution over training")
    colors = _colors(_variants(runs))
    for ax, (title, getter) in zip(axes, MINING_PANELS):
        for variant in _variants(runs):
            per_seed = []
            for run in runs:
                if run.variant != variant:
                    continue
                records = [
                    {"_epoch": r.get("epoch", i + 1), **r}
                    for i, r in enumerate(run.mining)
                ]
                series = _series(records, getter)
                if series:
                    per_seed.append(series)
            _plot_seed_band(ax, per_seed, variant, colors[variant])
        ax.set_title(title)
        ax.set_xlabel("epoch")
        _integer_epochs(ax)
        ax.grid(alpha=0.3)
        if ax.get_lines():
            ax.legend(fontsize="small")
        else:
            ax.text(
                0.5,
                0.5,
                "not logged by these runs",
                ha="center",
                va="center",
                transform=ax.transAxes,
            )
    return fig


#: Points of the log-spaced false-alarm grid of the DET curve.
DET_POINTS = 200


def det_frr(target_scores, negative_scores, fars):
    """False-reject rate at each false-alarm budget of ``fars``.

    Vectorised :func:`hardmine.tasks.kws_metrics.frr_at_far` (same threshold
    rule: accept strictly above the ``floor(far * n_negatives) + 1``-th
    highest negative score); NaN when either side is empty.

    Example
    -------
    >>> det_frr([0.9, 0.7, 0.65, 0.2], [0.8, 0.6, 0.3, 0.1], [0.0, 0.25, 1.0]).tolist()
    [0.75, 0.25, 0.0]
    """
    pos = np.sort(np.asarray(target_scores, dtype=float))
    neg = np.sort(np.asarray(negative_scores, dtype=float))[::-1]
    fars = np.asarray(fars, dtype=float)
    if pos.size == 0 or neg.size == 0:
        return np.full(fars.shape, math.nan)
    allowed = np.floor(fars * neg.size + 1e-9).astype(np.int64)
    thresholds = np.full(fars.shape, -math.inf)
    inside = allowed < neg.size
    thresholds[inside] = np.nextafter(neg[allowed[inside]], math.inf)
    return np.searchsorted(pos, thresholds, side="left") / pos.size


def _detection_runs(runs):
    return [
        r
        for r in runs
        if r.task == "kws"
        and r.detection is not None
        and r.detection["targets"].size
        and r.detection["negatives"].size
    ]


def det_curves(runs, points=DET_POINTS):
    """Per-variant DET curves on a common false-alarm grid.

    The grid runs log-spaced from ``1 / n`` (``n``: the largest number of
    negative utterances of a run) to 1. Each seed's false-reject rate is
    computed at every grid point (:func:`det_frr`); per variant the curve
    is their mean and the band their minimum and maximum.

    Returns
    -------
    dict or None
        ``far`` (the grid) and ``variants``: variant -> ``{"seeds", "frr"
        (per seed, [n_seeds, points]), "mean", "low", "high", "n_targets"}``;
        None without keyword-spotting scores.
    """
    usable = _detection_runs(runs)
    if not usable:
        return None
    n_negatives = max(r.detection["negatives"].size for r in usable)
    grid = np.geomspace(1.0 / n_negatives, 1.0, points)
    curves = {}
    for variant in _variants(usable):
        mine = [r for r in usable if r.variant == variant]
        frr = np.stack(
            [
                det_frr(r.detection["targets"], r.detection["negatives"], grid)
                for r in mine
            ]
        )
        curves[variant] = {
            "seeds": [r.seed for r in mine],
            "frr": frr,
            "mean": frr.mean(axis=0),
            "low": frr.min(axis=0),
            "high": frr.max(axis=0),
            "n_targets": max(r.detection["targets"].size for r in mine),
        }
    return {"far": grid, "variants": curves}


def _percent(value, _pos=None):
    if value <= 0:
        return ""
    return f"{100 * value:.4g}%"


def _log_percent_axis(axis, low, high, max_decades):
    """Percent labels at 1, 2, 5 x 10^k, or at the decades only on a long axis."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    decades = math.log10(high / low)
    subs = (1.0, 2.0, 5.0) if decades <= max_decades else (1.0,)
    axis.set_major_locator(LogLocator(base=10.0, subs=subs))
    axis.set_major_formatter(FuncFormatter(_percent))
    axis.set_minor_locator(LogLocator(base=10.0, subs=np.arange(2, 10), numticks=100))
    axis.set_minor_formatter(NullFormatter())


def plot_det(runs, points=DET_POINTS):
    """DET curve of the keyword-spotting runs: false rejects against false alarms.

    Both axes are logarithmic. One line per variant, the mean over its
    seeds of each seed's false-reject rate at a common grid of false-alarm
    rates (:func:`det_curves`), with a min-max band over the seeds when
    there are several. A false-reject rate of 0 falls off the bottom of the
    axes. Returns None when no run has keyword-spotting scores.
    """
    curves = det_curves(runs, points)
    if curves is None:
        return None
    fig, (ax,) = _figure(1, "DET curve (keyword spotting)")
    fig.set_size_inches(8.5, 5.5)
    colors = _colors(_variants(runs))
    grid = curves["far"]
    positive = []
    for variant, curve in curves["variants"].items():
        seeds = len(curve["seeds"])
        label = f"{variant} ({seeds} seed{'s' if seeds != 1 else ''})"
        ax.plot(grid, curve["mean"], label=label, color=colors[variant])
        if len(curve["seeds"]) > 1:
            ax.fill_between(
                grid,
                curve["low"],
                curve["high"],
                color=colors[variant],
                alpha=0.2,
                linewidth=0,
            )
        values = np.concatenate([curve["low"], curve["mean"]])
        positive.append(values[values > 0])
    ax.set_xscale("log")
    ax.set_yscale("log")
    n_targets = max(c["n_targets"] for c in curves["variants"].values())
    positive = np.concatenate(positive)
    bottom = positive.min() / 1.5 if positive.size else 0.5 / n_targets
    ax.set_xlim(grid[0], 1.0)
    ax.set_ylim(bottom, 1.05)
    # Horizontal labels need more room than vertical ones.
    _log_percent_axis(ax.xaxis, grid[0], 1.0, max_decades=2.0)
    _log_percent_axis(ax.yaxis, bottom, 1.05, max_decades=4.5)
    ax.set_xlabel("false-alarm rate (non-keyword utterances accepted)")
    ax.set_ylabel("false-reject rate (keyword utterances missed)")
    ax.set_title("line: mean over seeds; band: min-max over seeds", fontsize="medium")
    ax.grid(which="major", alpha=0.3)
    ax.grid(which="minor", alpha=0.1)
    # Outside the axes: a good system's curve runs through the lower left,
    # a weak one's band through the upper right.
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def subgroup_means(runs):
    """Mean SI-SNRi per test subgroup and variant, with an interval over seeds.

    Each seed's mean over the subgroup's mixtures is one value; the variant's
    figure is the mean of these seed means and its interval a percentile
    bootstrap over the seed means (:func:`hardmine.tools.stats.seed_mean`:
    ``scipy.stats.bootstrap``, 9999 resamples, 95 %).

    Returns
    -------
    dict or None
        ``subgroups`` (names in order of first appearance), ``counts``
        (subgroup -> sorted distinct mixture counts over the runs) and
        ``variants``: variant -> subgroup -> ``{"mean", "low", "high", "n",
        "seeds", "values"}``; None when no separation run has a ``subgroup``
        column.
    """
    from hardmine.tools.stats import seed_mean

    usable = [r for r in runs if r.task == "separation" and r.subgroups]
    if not usable:
        return None
    names, counts = [], {}
    for run in usable:
        for name, group in run.subgroups.items():
            if name not in names:
                names.append(name)
            counts.setdefault(name, set()).add(group["count"])
    variants = {}
    for variant in _variants(usable):
        mine = [r for r in usable if r.variant == variant]
        variants[variant] = {}
        for name in names:
            present = [r for r in mine if name in r.subgroups]
            values = [r.subgroups[name]["mean"] for r in present]
            variants[variant][name] = {
                **seed_mean(values),
                "seeds": [r.seed for r in present],
                "values": values,
            }
    return {
        "subgroups": names,
        "counts": {k: sorted(v) for k, v in counts.items()},
        "variants": variants,
    }


def plot_subgroups(runs):
    """Bars of the mean SI-SNRi per test subgroup, one bar per variant.

    One group of bars per subgroup of the ``subgroup`` column (x tick label:
    the name and the number of mixtures); bar height: the mean over seeds of
    each seed's subgroup mean; whiskers: the 95 % percentile-bootstrap
    interval over those seed means (:func:`subgroup_means`), absent for a
    single seed. Returns None when no run has a ``subgroup`` column.
    """
    data = subgroup_means(runs)
    if data is None:
        return None
    names, variants = data["subgroups"], list(data["variants"])
    fig, (ax,) = _figure(1, "Mean SI-SNRi per test subgroup")
    fig.set_size_inches(
        max(6.0, 1.0 + len(names) * (0.6 + 0.45 * len(variants))) + 2.0, 4.8
    )
    colors = _colors(_variants(runs))
    width = 0.8 / len(variants)
    x = np.arange(len(names))
    for i, variant in enumerate(variants):
        stats = [data["variants"][variant][name] for name in names]
        means = np.array([s["mean"] for s in stats])
        low = np.array([s["low"] for s in stats])
        high = np.array([s["high"] for s in stats])
        seeds = max(s["n"] for s in stats)
        ax.bar(
            x + (i - (len(variants) - 1) / 2) * width,
            means,
            width,
            yerr=np.vstack([means - low, high - means]),
            capsize=3,
            label=f"{variant} ({seeds} seed{'s' if seeds != 1 else ''})",
            color=colors[variant],
            error_kw={"elinewidth": 1, "ecolor": "0.2"},
        )
    labels = []
    for name in names:
        counts = data["counts"][name]
        count = str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
        labels.append(f"{name}\n({count} mixtures)")
    ax.set_xticks(x, labels)
    ax.axhline(0.0, color="0.3", linewidth=0.8)
    ax.set_ylabel("SI-SNRi (dB)")
    ax.set_title(
        "bars: mean over seeds; whiskers: 95 % bootstrap interval over seeds",
        fontsize="medium",
    )
    ax.grid(axis="y", alpha=0.3)
    # Outside the axes: inside, it would hide bars or whiskers.
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


# ----------------------------------------------------------------- output
def _json_safe(obj):
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def _write_tables(runs, rows, columns, out, differences=(), subgroups=None):
    summary_csv = os.path.join(out, "summary.csv")
    with open(summary_csv, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        header = ["variant", "task", "n_seeds", "seeds"]
        for column in columns:
            header += [f"{column}_mean", f"{column}_std"]
        writer.writerow(header)
        for row in rows:
            line = [
                row["variant"],
                row["task"] or "",
                row["n_seeds"],
                " ".join(row["seeds"]),
            ]
            for column in columns:
                for stat in ("mean", "std"):
                    value = row[column][stat]
                    line.append(f"{value:.6g}" if math.isfinite(value) else "")
            writer.writerow(line)
    runs_csv = os.path.join(out, "runs.csv")
    with open(runs_csv, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["variant", "seed", "task", "path"] + columns)
        for run in runs:
            values = [run.metrics.get(c, math.nan) for c in columns]
            writer.writerow(
                [run.variant, run.seed, run.task or "", run.path]
                + [f"{v:.6g}" if math.isfinite(v) else "" for v in values]
            )
    summary_json = os.path.join(out, "summary.json")
    payload = {
        "columns": columns,
        "variants": rows,
        "differences": list(differences),
        "subgroups": subgroups,
        "runs": [
            {
                "variant": r.variant,
                "seed": r.seed,
                "task": r.task,
                "path": r.path,
                "metrics": r.metrics,
                "notes": r.notes,
            }
            for r in runs
        ],
    }
    with open(summary_json, "w", encoding="utf-8") as handle:
        json.dump(_json_safe(payload), handle, indent=2)
        handle.write("\n")
    return [summary_csv, summary_json, runs_csv]


def _safe_name(text):
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "run"


def compare(paths, out, top=5, with_hardest=True, echo=print, reference=None):
    """Read the runs under ``paths``, print the comparison, write tables and plots.

    Arguments
    ---------
    paths : list of str
        Run folders or folders of runs.
    out : str
        Folder for the tables, figures and hardest-example CSVs.
    top : int
        Hardest examples printed per run.
    with_hardest : bool
        Whether to build hardest-example reports from sampler checkpoints.
    echo : callable
        Receives each printed block of text.
    reference : str, optional
        Variant the others are compared with (paired over seeds, see
        :func:`seed_differences`); default: the first variant of each task.

    Returns
    -------
    dict
        ``runs``, ``rows`` (from :func:`aggregate`), ``columns``,
        ``differences`` (one :func:`seed_differences` result per task table
        with two or more variants, with its ``task``), ``figures`` (name ->
        Figure, already saved), ``files`` (paths written).
    """
    skipped = []
    runs = [load_run(p, with_hardest=with_hardest) for p in find_runs(paths, skipped)]
    if skipped:
        echo("Skipped (comparison reports, not runs): " + ", ".join(skipped))
    rows = aggregate(runs)
    columns = _columns_for(runs)
    names = _variants(runs)
    if reference is not None and reference not in names:
        raise ValueError(
            f"--reference {reference}: not a variant of these runs ({', '.join(names)})"
        )
    os.makedirs(out, exist_ok=True)

    tables = []
    for task in ("separation", "kws", None):
        task_variants = {r.variant for r in runs if r.task == task}
        task_rows = [r for r in rows if r["variant"] in task_variants]
        if not task_rows:
            continue
        own = [
            c
            for c in columns
            if any(math.isfinite(row[c]["mean"]) for row in task_rows)
            or c in COMMON_COLUMNS
        ]
        title = {"separation": "Separation", "kws": "Keyword spotting"}.get(
            task, "Not evaluated"
        )
        diff = why = None
        if len(task_rows) > 1:
            ref = task_rows[0]["variant"] if reference is None else reference
            if any(r["variant"] == ref for r in task_rows):
                diff = {"task": task, **seed_differences(task_rows, ref, own)}
            else:
                why = f"(no difference: the reference {ref} is not in this table)"
        tables.append((title, task_rows, own, diff, why))
    differences = [diff for *_, diff, _why in tables if diff is not None]
    subgroups = subgroup_means(runs)
    files = _write_tables(runs, rows, columns, out, differences, subgroups)

    for title, task_rows, own, diff, why in tables:
        echo(
            f"{title} ({sum(r['n_seeds'] for r in task_rows)} runs; mean ± sd over seeds)"
        )
        echo(format_table(task_rows, own))
        if diff is not None:
            echo("")
            echo(format_differences(diff, own))
        elif why:
            echo(why)
        echo("")

    figures = {
        "cdf": plot_cdf(runs),
        "curves": plot_curves(runs),
        "mining": plot_mining(runs),
    }
    for name, plot in (("det", plot_det), ("subgroups", plot_subgroups)):
        fig = plot(runs)
        if fig is not None:
            figures[name] = fig
    for name, fig in figures.items():
        path = os.path.join(out, f"{name}.png")
        fig.savefig(path, dpi=100)
        files.append(path)

    from hardmine.tools.hardest import format_rows

    for run in runs:
        if run.hardest is None:
            continue
        path = os.path.join(
            out, f"hardest_{_safe_name(run.variant)}_{_safe_name(run.seed)}.csv"
        )
        run.hardest.write(path)
        files.append(path)
        echo(f"Hardest training examples, {run.label} (full list: {path})")
        echo(format_rows(run.hardest.rows, top))
        echo("")
    notes = [f"  {r.label}: {n}" for r in runs for n in r.notes]
    if notes:
        echo("Notes:\n" + "\n".join(notes))
    echo("Written: " + ", ".join(os.path.relpath(f, out) for f in files) + f" in {out}")
    return {
        "runs": runs,
        "rows": rows,
        "columns": columns,
        "differences": differences,
        "figures": figures,
        "files": files,
    }


def main(argv=None):
    """Command line of :func:`compare`."""
    parser = argparse.ArgumentParser(
        prog="python -m hardmine.tools.compare",
        description="Compare recipe variants: table of test metrics and training "
        "counts (mean ± sd over seeds) with paired differences to a reference "
        "variant, CDF/curve/mining/DET/subgroup plots, hardest examples.",
    )
    parser.add_argument("paths", nargs="+", help="run folders or folders of runs")
    parser.add_argument(
        "--out", help="output folder (default: ./compare_results)", default=None
    )
    parser.add_argument(
        "--top", type=int, default=5, help="hardest examples shown per run"
    )
    parser.add_argument(
        "--no-hardest", action="store_true", help="skip the hardest-examples reports"
    )
    parser.add_argument(
        "--reference",
        metavar="NAME",
        default=None,
        help="variant the others are compared with, paired over seeds "
        "(default: the first variant)",
    )
    args = parser.parse_args(argv)
    if args.top < 0:
        parser.error("--top: must be >= 0")
    out = args.out or "compare_results"
    try:
        compare(
            args.paths,
            out,
            top=args.top,
            with_hardest=not args.no_hardest,
            reference=args.reference,
        )
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
