"""Separation test metrics: SDR, SI-SNR and their improvements over the mixture.

The figures match what SpeechBrain's separation recipes write to
``test_results.csv`` (snt_id, sdr, sdr_i, si-snr, si-snr_i, plus an ``avg``
row), and a JSON summary adds the median and low percentiles, where the
hard examples show up.

Example
-------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> refs = rng.standard_normal((4000, 2))
>>> mix = refs.sum(axis=1)
>>> est = refs[:, ::-1] + 0.01 * rng.standard_normal((4000, 2))
>>> m = utterance_metrics(mix, est, refs)
>>> sorted(m)
['sdr', 'sdr_i', 'si-snr', 'si-snr_i']
>>> round(m["si-snr"]), round(m["si-snr_i"])
(40, 40)
"""

import csv
import itertools
import json
import math
import os
import tempfile

import fast_bss_eval
import numpy as np

__all__ = [
    "si_snr",
    "utterance_metrics",
    "summarize",
    "write_test_results",
    "mixture_subgroup",
    "read_subgroups",
    "SUBGROUPS",
]

#: Difficulty subgroups of a generated mixture, in order of precedence.
SUBGROUPS = ("close_pitch", "level_gap", "full_overlap", "rest")

METRICS = ("sdr", "sdr_i", "si-snr", "si-snr_i")
_EPS = 1e-12


def _as_numpy(x, name):
    if hasattr(x, "detach"):
        x = x.detach().cpu().double().numpy()
    x = np.asarray(x, dtype=np.float64)
    if not np.isfinite(x).all():
        raise ValueError(f"{name}: contains NaN or infinite values")
    return x


def si_snr(estimates, references):
    """Pairwise scale-invariant SNR in dB.

    Both signals are made zero-mean, the estimate is projected on the
    reference, and the ratio of the projection's energy to the residual's is
    returned, for every (estimate, reference) pair.

    Arguments
    ---------
    estimates : numpy.ndarray
        [n_est, T]
    references : numpy.ndarray
        [n_ref, T]

    Returns
    -------
    numpy.ndarray
        [n_est, n_ref] SI-SNR values.

    Example
    -------
    >>> phase = 2 * np.pi * 5 * np.arange(1000) / 1000
    >>> ref, other = np.sin(phase)[None], np.cos(phase)[None]  # orthogonal
    >>> round(float(si_snr(2.0 * ref + 0.2 * other, ref)[0, 0]), 6)  # 20 log10(10)
    20.0
    """
    est = estimates - estimates.mean(axis=-1, keepdims=True)
    ref = references - references.mean(axis=-1, keepdims=True)
    dots = est @ ref.T  # [n_est, n_ref]
    ref_energy = np.sum(ref * ref, axis=-1)  # [n_ref]
    est_energy = np.sum(est * est, axis=-1)  # [n_est]
    # Target energy |a s|^2 with a = <e, s>/|s|^2; residual by Pythagoras.
    target = dots**2 / (ref_energy[None, :] + _EPS)
    residual = np.maximum(est_energy[:, None] - target, 0.0)
    return 10.0 * np.log10((target + _EPS) / (residual + _EPS))


def _best_permutation_mean(pairwise):
    """Mean of ``pairwise[i, perm[i]]`` maximised over permutations."""
    n = pairwise.shape[0]
    rows = np.arange(n)
    return max(
        float(pairwise[rows, list(perm)].mean())
        for perm in itertools.permutations(range(n))
    )


def utterance_metrics(mix, estimates, references, sr=None):
    """SDR, SI-SNR and their improvements for one separated utterance.

    Arguments
    ---------
    mix : array or tensor
        [T] mixture.
    estimates, references : array or tensor
        [T, n_src] separated and true sources (the recipes' layout).
    sr : int, optional
        Sample rate; only checked for sanity, the metrics do not depend on it.

    Returns
    -------
    dict
        ``sdr``, ``sdr_i``, ``si-snr``, ``si-snr_i`` in dB, each averaged
        over sources with the source permutation solved. The improvements
        subtract the same metric obtained by using the mixture as every
        estimate.
    """
    if sr is not None and not sr > 0:
        raise ValueError(f"sr: must be positive, got {sr!r}")
    mix = _as_numpy(mix, "mix")
    est = _as_numpy(estimates, "estimates")
    ref = _as_numpy(references, "references")
    if mix.ndim != 1 or est.ndim != 2 or est.shape != ref.shape:
        raise ValueError(
            "expected mix [T] and estimates/references [T, n_src] of equal shape, "
            f"got {mix.shape}, {est.shape}, {ref.shape}"
        )
    if est.shape[0] != mix.shape[0]:
        raise ValueError(
            f"mix has {mix.shape[0]} samples but the sources have {est.shape[0]}"
        )
    est, ref = est.T, ref.T  # [n_src, T]
    baseline = np.repeat(mix[None, :], ref.shape[0], axis=0)

    # SDR is BSS-Eval's, as computed by mir_eval.separation.bss_eval_sources
    # (which the SpeechBrain recipes call): a 512-tap distortion filter and
    # the permutation chosen by SIR. fast_bss_eval implements the same
    # definition (Scheibler, "SDR - Medium Rare with Fast Computations",
    # arXiv:2110.06440) but solves the filter equations once per reference
    # set from FFT-based correlations, vectorised over sources, where
    # mir_eval recomputes projections pair by pair in Python loops; this is
    # much faster (see benchmarks/sep_metrics_bench.py).
    sdr = fast_bss_eval.bss_eval_sources(ref, est)[0]
    # The mixture lies in the span of the references, so its SAR is infinite
    # (log10 of 0 noise); only its SDR is used.
    with np.errstate(divide="ignore"):
        sdr_mix = fast_bss_eval.bss_eval_sources(ref, baseline)[0]
    sdr, sdr_mix = float(np.mean(sdr)), float(np.mean(sdr_mix))

    sisnr = _best_permutation_mean(si_snr(est, ref))
    sisnr_mix = float(np.mean(np.diag(si_snr(baseline, ref))))
    return {
        "sdr": sdr,
        "sdr_i": sdr - sdr_mix,
        "si-snr": sisnr,
        "si-snr_i": sisnr - sisnr_mix,
    }


def summarize(values):
    """Mean, median, 5th and 10th percentiles of the finite values.

    Example
    -------
    >>> s = summarize(list(range(1, 101)) + [float("nan")])
    >>> s["count"], s["mean"], s["median"], round(s["p5"], 2), s["n_nonfinite"]
    (100, 50.5, 50.5, 5.95, 1)
    """
    arr = np.asarray(list(values), dtype=np.float64)
    finite = arr[np.isfinite(arr)]
    if finite.size == 0:
        stats = dict.fromkeys(("mean", "median", "p5", "p10"), float("nan"))
    else:
        stats = {
            "mean": float(finite.mean()),
            "median": float(np.median(finite)),
            "p5": float(np.percentile(finite, 5)),
            "p10": float(np.percentile(finite, 10)),
        }
    stats["count"] = int(finite.size)
    stats["n_nonfinite"] = int(arr.size - finite.size)
    return stats


def _atomic_text(path, write):
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder, text=True)
    try:
        with os.fdopen(fd, "w", newline="") as handle:
            write(handle)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def mixture_subgroup(info):
    """The subgroup of one ``mixture_info.csv`` row (:data:`SUBGROUPS` order).

    A mixture is ``close_pitch`` when its first two speakers were picked with
    close mean F0, else ``level_gap`` when their level differs by 5-10 dB,
    else ``full_overlap`` when every source spans the whole mixture, else
    ``rest``.

    Example
    -------
    >>> mixture_subgroup({"close_pitch": "0", "hard_level": "1", "overlap": "1.0"})
    'level_gap'
    >>> mixture_subgroup({"close_pitch": "0", "hard_level": "0", "overlap": "0.6"})
    'rest'
    """
    if str(info.get("close_pitch")) == "1":
        return "close_pitch"
    if str(info.get("hard_level")) == "1":
        return "level_gap"
    if float(info.get("overlap", 0.0)) >= 0.999:
        return "full_overlap"
    return "rest"


def read_subgroups(info_csv, split=None):
    """``{mixture name without .wav: subgroup}`` from a ``mixture_info.csv``."""
    with open(info_csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {
        os.path.splitext(r["name"])[0]: mixture_subgroup(r)
        for r in rows
        if split is None or r.get("split") == split
    }


def write_test_results(rows, csv_path, json_path):
    """Write per-utterance metrics and their summary.

    Arguments
    ---------
    rows : list of dict
        One dict per utterance with ``snt_id`` and the four metrics.
    csv_path : str
        CSV with columns snt_id, sdr, sdr_i, si-snr, si-snr_i, one row per
        utterance and a final ``avg`` row of the means.
    json_path : str
        JSON ``{"count": n, "<metric>": {mean, median, p5, p10, ...}, ...}``.
        When every row has a ``subgroup``, the CSV gets a ``subgroup`` column
        and the JSON the mean of each metric per subgroup (``by_subgroup``).

    Returns
    -------
    dict
        The JSON summary.

    Example
    -------
    >>> import tempfile
    >>> rows = [{"snt_id": "a", "sdr": 10.0, "sdr_i": 9.0, "si-snr": 8.0,
    ...          "si-snr_i": 7.0}]
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     summary = write_test_results(rows, tmp + "/r.csv", tmp + "/r.json")
    ...     lines = open(tmp + "/r.csv").read().splitlines()
    >>> lines[-1], summary["si-snr_i"]["median"]
    ('avg,10.0,9.0,8.0,7.0', 7.0)
    """
    rows = list(rows)
    for row in rows:
        missing = [k for k in ("snt_id",) + METRICS if k not in row]
        if missing:
            raise ValueError(f"test result row lacks {missing}: {row!r}")
    summary = {"count": len(rows)}
    for key in METRICS:
        summary[key] = summarize(row[key] for row in rows)
    columns = ("snt_id",) + METRICS
    if rows and all(row.get("subgroup") for row in rows):
        columns += ("subgroup",)
        groups = sorted({row["subgroup"] for row in rows})
        summary["by_subgroup"] = {
            g: {
                "count": sum(r["subgroup"] == g for r in rows),
                **{
                    k: float(np.mean([r[k] for r in rows if r["subgroup"] == g]))
                    for k in METRICS
                },
            }
            for g in groups
        }

    def write_csv(handle):
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row[k] for k in columns})
        avg = {"snt_id": "avg"}
        avg.update({k: summary[k]["mean"] for k in METRICS})
        writer.writerow(avg)

    def write_json(handle):
        json.dump(_json_safe(summary), handle, indent=2)
        handle.write("\n")

    _atomic_text(csv_path, write_csv)
    _atomic_text(json_path, write_json)
    return summary


def _json_safe(obj):
    """Replace NaN (not valid JSON) by None, recursively."""
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, float) and math.isnan(obj):
        return None
    return obj
