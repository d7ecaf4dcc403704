"""BSS-Eval SDR: fast_bss_eval (used by hardmine.tasks.sep_metrics) versus mir_eval.

Both sides compute ``bss_eval_sources`` (512-tap distortion filter,
permutation by SIR) on the same random 2-source utterances of 2, 4 and 8 s
at 8 kHz; the script checks that the SDRs agree to 1e-6 dB and reports the
median time per utterance. mir_eval is not a project dependency: install it
anywhere on ``PYTHONPATH`` (e.g. ``pip install --target /tmp/me mir_eval
decorator``) to get the comparison; without it only fast_bss_eval is timed.
Prints a table and writes ``sep_metrics_bench.json`` next to this script.
Usage: ``python benchmarks/sep_metrics_bench.py [--repeats 5]``.
"""

import argparse
import json
import platform
import time
import warnings
from pathlib import Path

import fast_bss_eval
import numpy as np

try:
    import mir_eval.separation as mir_separation
except ImportError:  # optional comparison
    mir_separation = None


def _median_time(func, repeats):
    out = func()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return float(np.median(times)), out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    for seconds in (2, 4, 8):
        refs = rng.standard_normal((2, 8000 * seconds))
        est = refs[::-1] + 0.3 * rng.standard_normal(refs.shape)
        t_fast, fast = _median_time(
            lambda r=refs, e=est: fast_bss_eval.bss_eval_sources(r, e), args.repeats
        )
        row = {"seconds": seconds, "fast_bss_eval_s": t_fast}
        if mir_separation is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                t_mir, mir = _median_time(
                    lambda r=refs, e=est: mir_separation.bss_eval_sources(r, e),
                    args.repeats,
                )
            diff = float(np.max(np.abs(np.sort(fast[0]) - np.sort(mir[0]))))
            if diff > 1e-6:
                raise SystemExit(f"SDR mismatch of {diff} dB at {seconds} s")
            row.update(mir_eval_s=t_mir, speedup=t_mir / t_fast, max_sdr_diff_db=diff)
        rows.append(row)
    print(
        f"{'utterance':>9s} {'fast_bss_eval':>14s} {'mir_eval':>10s} {'speed-up':>9s} {'max |dSDR|':>11s}"
    )
    for r in rows:
        mir = f"{r['mir_eval_s']:10.3f}" if "mir_eval_s" in r else f"{'n/a':>10s}"
        spd = f"{r['speedup']:8.1f}x" if "speedup" in r else f"{'n/a':>9s}"
        dif = (
            f"{r['max_sdr_diff_db']:11.1e}"
            if "max_sdr_diff_db" in r
            else f"{'n/a':>11s}"
        )
        print(f"{r['seconds']:>7d} s {r['fast_bss_eval_s']:13.3f}s {mir} {spd} {dif}")
    meta = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "repeats": args.repeats,
        "mir_eval": mir_separation is not None,
    }
    out = Path(__file__).with_suffix(".json")
    out.write_text(json.dumps({"meta": meta, "results": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
