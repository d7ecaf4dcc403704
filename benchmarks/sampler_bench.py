"""Time of one mining step: update B losses, then draw B examples.

Compared in the same run:

* ``isbl``: :class:`hardmine.loss_table.LossPowerTable` (sum tree), one
  ``observe_indices`` of B losses plus one ``draw`` of B examples.
* ``sampler``: the full :class:`hardmine.isbl.ISBLSampler` path the brain
  uses: ``observe(ids, losses)`` (id lookup) plus drawing the next batch
  (seeded generator per batch), single process.
* ``weighted``: the WeightedRandomSampler pattern: write the B losses into a
  float64 tensor of N scores, recompute all N weights ``L ** alpha + eps``,
  then ``torch.multinomial(weights, B, replacement=True)``.

Prints a table and writes ``sampler_bench.json`` next to this script.
Usage: ``python benchmarks/sampler_bench.py [--sizes 1e4 1e6 1e7]``.
"""

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from hardmine.isbl import ISBLSampler
from hardmine.loss_table import LossPowerTable

ALPHA = 0.75
EPS = 1e-6


class IdsOnly:
    """The one attribute ISBLSampler needs when there is a single pool."""

    def __init__(self, n):
        self.data_ids = [f"ex{i}" for i in range(n)]


def timed(step, repeats, warmup=3):
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return times


def summary(times):
    return {
        "median_ms": 1e3 * statistics.median(times),
        "mean_ms": 1e3 * statistics.fmean(times),
        "min_ms": 1e3 * min(times),
        "repeats": len(times),
    }


def bench_sampler(n, batch):
    dataset = IdsOnly(n)
    sampler = ISBLSampler(dataset, batch_size=batch, alpha=ALPHA, eps=EPS)
    sampler.set_epoch(1)
    state = {"batch": 0, "ids": dataset.data_ids[:batch]}

    def sampler_step():
        sampler.observe(state["ids"], torch.rand(batch, dtype=torch.float64))
        drawn = sampler.draw_global_batch(state["batch"], world=1)
        state["ids"] = [dataset.data_ids[i] for i in drawn]
        state["batch"] += 1

    return summary(timed(sampler_step, 1000))


def bench_size(n, batch, seed=0):
    rng = np.random.default_rng(seed)
    result = {"N": n, "B": batch}

    # --- sum-tree loss table
    start = time.perf_counter()
    table = LossPowerTable(np.zeros(n, dtype=np.int64), alpha=ALPHA, eps=EPS)
    result["isbl_build_s"] = time.perf_counter() - start
    pools = np.zeros(batch, dtype=np.int64)

    def isbl_step():
        idx = rng.integers(n, size=batch)
        table.observe_indices(idx, rng.exponential(1.0, size=batch))
        table.draw(pools, rng)

    result["isbl"] = summary(timed(isbl_step, 2000))

    # --- full sampler path (ids -> indices, per-batch generator)
    result["sampler"] = bench_sampler(n, batch)

    # --- WeightedRandomSampler pattern
    scores = torch.ones(n, dtype=torch.float64)
    gen = torch.Generator().manual_seed(seed)

    def weighted_step():
        idx = torch.randint(n, (batch,), generator=gen)
        scores[idx] = torch.empty(batch, dtype=torch.float64).exponential_(
            generator=gen
        )
        weights = scores.pow(ALPHA).add_(EPS)
        torch.multinomial(weights, batch, replacement=True, generator=gen)

    repeats = max(5, min(300, int(3e8 / (n * 50))))
    result["weighted"] = summary(timed(weighted_step, repeats, warmup=2))
    result["speedup_vs_weighted"] = (
        result["weighted"]["median_ms"] / result["isbl"]["median_ms"]
    )
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", type=float, default=[1e4, 1e6, 1e7])
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()

    rows = [bench_size(int(n), args.batch) for n in args.sizes]
    header = (
        f"{'N':>10} {'isbl ms':>9} {'sampler ms':>11} {'weighted ms':>12} "
        f"{'speedup':>9} {'build s':>8}"
    )
    print(f"one step = update B={args.batch} losses + draw B={args.batch} (median)")
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row['N']:>10.0e} {row['isbl']['median_ms']:>9.3f} "
            f"{row['sampler']['median_ms']:>11.3f} "
            f"{row['weighted']['median_ms']:>12.2f} "
            f"{row['speedup_vs_weighted']:>8.1f}x {row['isbl_build_s']:>8.2f}"
        )
    out = Path(__file__).with_suffix(".json")
    meta = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "alpha": ALPHA,
        "eps": EPS,
    }
    out.write_text(json.dumps({"meta": meta, "results": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
