"""Generation time of the speech-like synthetic sources and mixtures.

Measures :func:`hardmine.synthetic.mixtures.speech_like` for 2 s utterances at 8 and
16 kHz, one full WSJ0-2mix-style mixture (two sources, scaling, 16-bit
rounding, three wav files written) and reports the real-time factor
(synthesis time / audio duration). Median of ``--repeats`` runs after a
warm-up. Prints a table and writes ``synthetic_bench.json`` next to this
script. Usage: ``python benchmarks/synthetic_bench.py [--repeats 30]``.
"""

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from hardmine.synthetic.layouts import make_wsj0mix
from hardmine.synthetic.mixtures import random_speaker, speech_like


def _median_time(func, repeats):
    func()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    speaker = random_speaker(rng)
    rows = []
    for sr in (8000, 16000):
        t = _median_time(
            lambda sr=sr: speech_like(rng, 2.0, sr, speaker=speaker), args.repeats
        )
        rows.append(
            {"case": f"speech_like 2 s @ {sr} Hz", "ms": 1e3 * t, "rtf": t / 2.0}
        )
    with tempfile.TemporaryDirectory() as tmp:
        n_mix = 20
        start = time.perf_counter()
        make_wsj0mix(tmp, sizes={"tr": n_mix, "cv": 0, "tt": 0}, seconds=2.0)
        per_mix = (time.perf_counter() - start) / n_mix
    rows.append(
        {
            "case": "WSJ0-2mix mixture 2 s @ 8 kHz (3 wavs)",
            "ms": 1e3 * per_mix,
            "rtf": per_mix / 2.0,
        }
    )
    print(f"{'case':42s} {'ms':>8s} {'real-time factor':>17s}")
    for row in rows:
        print(f"{row['case']:42s} {row['ms']:8.2f} {row['rtf']:17.4f}")
    meta = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "repeats": args.repeats,
        "numpy": np.__version__,
    }
    out = Path(__file__).with_suffix(".json")
    out.write_text(json.dumps({"meta": meta, "results": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
