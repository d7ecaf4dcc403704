"""Paired statistics for comparing a variant with a reference over seeds.

Two questions get two tests, both from :mod:`scipy.stats` (well-kept and
exact where it matters, rather than hand-written resampling):

* **Over seeds**: the same seed gives the variant and the reference the same
  initial weights and, where the sampler allows, the same data order, so
  the per-seed differences are paired. :func:`seed_difference` reports their
  mean, a bootstrap 95 % interval (percentile method: with 3-10 seeds the
  BCa correction is unstable) and the Wilcoxon signed-rank p-value. With
  ``n`` seeds the smallest two-sided Wilcoxon p-value is ``2 / 2**n``
  (0.0625 for 5 seeds), so the interval is the figure to read.
* **Over test utterances**: :func:`utterance_difference` resamples the test
  utterances (the same resample for both variants and every seed) and
  recomputes any metric, e.g. a false-reject rate at a fixed false-alarm rate
  that is not a mean over utterances.

:func:`seed_mean` gives one variant's mean over seeds with the same
percentile bootstrap over seeds (e.g. its mean SI-SNRi on a test subgroup).

Example
-------
>>> d = seed_difference([0.80, 0.82, 0.79, 0.85, 0.81], [0.78, 0.80, 0.78, 0.81, 0.80])
>>> round(d["mean"], 3), d["n"], d["low"] > 0, round(d["wilcoxon_p"], 4)
(0.02, 5, True, 0.0625)
"""

import math
import warnings

import numpy as np
from scipy import stats

__all__ = ["seed_difference", "seed_mean", "utterance_difference", "CONFIDENCE"]

CONFIDENCE = 0.95


def _interval(result):
    low, high = result.confidence_interval
    return float(low), float(high)


def _mean_interval(values, confidence, seed):
    """Percentile-bootstrap interval of the mean of a few values (over seeds)."""
    res = stats.bootstrap(
        (values,),
        np.mean,
        confidence_level=confidence,
        method="percentile",
        n_resamples=9999,
        rng=np.random.default_rng(seed),
    )
    return _interval(res)


def seed_difference(variant, reference, confidence=CONFIDENCE, seed=0):
    """Mean paired difference ``variant - reference`` over seeds, with its interval.

    Arguments
    ---------
    variant, reference : sequence of float
        One value per seed, aligned (NaN pairs are dropped).
    confidence : float
        Level of the bootstrap interval.
    seed : int
        Seed of the bootstrap resampling.

    Returns
    -------
    dict
        ``mean``, ``low``, ``high`` (interval), ``wilcoxon_p``, ``n`` (pairs)
        and ``excludes_zero``. With fewer than two pairs the interval and p
        are NaN.
    """
    a = np.asarray(variant, dtype=float)
    b = np.asarray(reference, dtype=float)
    if a.shape != b.shape:
        raise ValueError(
            f"{a.shape[0]} variant values but {b.shape[0]} reference values"
        )
    ok = np.isfinite(a) & np.isfinite(b)
    diff = a[ok] - b[ok]
    out = {"mean": float(diff.mean()) if diff.size else math.nan, "n": int(diff.size)}
    if diff.size < 2:
        out.update(low=math.nan, high=math.nan, wilcoxon_p=math.nan)
    elif np.all(diff == diff[0]):
        out.update(low=float(diff[0]), high=float(diff[0]))
        out["wilcoxon_p"] = 1.0 if diff[0] == 0 else 2.0 / 2**diff.size
    else:
        out["low"], out["high"] = _mean_interval(diff, confidence, seed)
        nonzero = diff[diff != 0]
        out["wilcoxon_p"] = (
            float(stats.wilcoxon(nonzero).pvalue) if nonzero.size else 1.0
        )
    out["excludes_zero"] = bool(out["low"] > 0 or out["high"] < 0)
    return out


def seed_mean(values, confidence=CONFIDENCE, seed=0):
    """Mean over seeds with a percentile bootstrap interval over the seeds.

    The seeds' values are resampled with replacement (scipy's
    ``stats.bootstrap``, percentile method, 9999 resamples), as
    :func:`seed_difference` does with the per-seed differences.

    Arguments
    ---------
    values : sequence of float
        One value per seed (NaN values are dropped).
    confidence : float
        Level of the interval.
    seed : int
        Seed of the bootstrap resampling.

    Returns
    -------
    dict
        ``mean``, ``low``, ``high`` and ``n`` (finite values). With fewer
        than two values the interval is NaN; with equal values it is that
        value.

    Example
    -------
    >>> m = seed_mean([4.0, 5.0, 6.0, 5.5])
    >>> m["mean"], m["n"], 4.0 <= m["low"] < m["mean"] < m["high"] <= 6.0
    (5.125, 4, True)
    """
    a = np.asarray(values, dtype=float)
    a = a[np.isfinite(a)]
    out = {"mean": float(a.mean()) if a.size else math.nan, "n": int(a.size)}
    if a.size < 2:
        out.update(low=math.nan, high=math.nan)
    elif np.all(a == a[0]):
        out.update(low=float(a[0]), high=float(a[0]))
    else:
        out["low"], out["high"] = _mean_interval(a, confidence, seed)
    return out


def utterance_difference(
    metric, variant, reference, confidence=CONFIDENCE, n_resamples=2000, seed=0
):
    """Paired bootstrap over test utterances of ``metric(variant) - metric(reference)``.

    Arguments
    ---------
    metric : callable
        ``metric(run, index) -> float`` for one run's per-utterance data and
        an array of utterance positions (a resample).
    variant, reference : list
        Per-seed runs (aligned by seed), each whatever ``metric`` reads,
        covering the same utterances in the same order.
    confidence, n_resamples, seed
        Bootstrap settings.

    Returns
    -------
    dict
        ``mean`` (the difference on the full test set, averaged over seeds),
        ``low``, ``high`` and ``excludes_zero``.

    Example
    -------
    >>> acc = lambda run, idx: float(np.mean(run[idx]))
    >>> ref = [np.array([1, 0, 0, 1, 0, 1, 0, 0] * 10)]
    >>> var = [np.array([1, 1, 0, 1, 1, 1, 0, 1] * 10)]
    >>> d = utterance_difference(acc, var, ref)
    >>> d["mean"], d["excludes_zero"]
    (0.375, True)
    """
    if len(variant) != len(reference) or not variant:
        raise ValueError("need the same, non-zero number of variant and reference runs")

    def difference(index):
        index = np.asarray(index, dtype=int)
        gaps = [metric(v, index) - metric(r, index) for v, r in zip(variant, reference)]
        gaps = [g for g in gaps if math.isfinite(g)]  # e.g. no rare keyword drawn
        return float(np.mean(gaps)) if gaps else math.nan

    n = _length(variant[0])
    full = difference(np.arange(n))
    with warnings.catch_warnings():
        # A metric can be constant over resamples (e.g. no false reject at
        # all); scipy then warns about a degenerate distribution.
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        res = stats.bootstrap(
            (np.arange(n),),
            difference,
            vectorized=False,
            confidence_level=confidence,
            method="percentile",
            n_resamples=n_resamples,
            rng=np.random.default_rng(seed),
        )
    low, high = _interval(res)
    return {
        "mean": full,
        "low": low,
        "high": high,
        "excludes_zero": bool(low > 0 or high < 0),
    }


def _length(run):
    if isinstance(run, dict):
        return len(next(iter(run.values())))
    return len(run)
