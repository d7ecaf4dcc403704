"""Epoch-plan time of the category/dataset power sampler.

Compared in the same run, on the same sampler and epoch:

* ``vectorised``: :meth:`CategoryDatasetPowerSampler.plan` (numpy: alias-table
  draws, round-robin positions from per-group running counts, batch ends
  from one search in the prefix sums, then a walk over the batch starts).
* ``loop``: the same algorithm written as a plain per-draw Python loop
  (alias-table draws of dataset and category, one pointer per group, a
  running bin total for the batch cuts). It consumes the same random
  numbers, so both must produce identical batches; the script checks this.

Both sides produce the epoch plan the sampler keeps: the drawn utterance
of every draw plus the start and end of every batch (index lists are made
lazily, one batch per loader step).
The utterance table is synthetic: 5 datasets, 200 categories with Zipf-like
sizes, integer sizes of 100..1600 frames, ``batch_bins = 16000``.
Prints a table and writes ``catpow_bench.json`` next to this script.
Usage: ``python benchmarks/catpow_bench.py [--sizes 1e5 1e6]``.
"""

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from hardmine.catpow import CategoryDatasetPowerSampler, UtteranceTable

N_DATASETS = 5
N_CATEGORIES = 200
BATCH_BINS = 16000
EPOCH = 1


def make_sampler(n, seed=0):
    rng = np.random.default_rng(seed)
    zipf = 1.0 / np.arange(1, N_CATEGORIES + 1)
    cats = rng.choice(N_CATEGORIES, size=n, p=zipf / zipf.sum())
    dsets = rng.choice(N_DATASETS, size=n, p=[0.5, 0.25, 0.15, 0.07, 0.03])
    table = UtteranceTable(
        [f"utt{i}" for i in range(n)],
        rng.integers(100, 1601, n),
        [f"cat{c:03d}" for c in cats],
        [f"set{d}" for d in dsets],
    )
    sampler = CategoryDatasetPowerSampler(
        table,
        batch_bins=BATCH_BINS,
        category_upsampling_factor=0.3,
        dataset_upsampling_factor=0.5,
        dataset_scaling_factor=1.2,
    )
    return sampler


def loop_plan(sampler, epoch):
    """The per-draw Python loop of the same algorithm (same random stream)."""
    rng = sampler._generator(epoch)
    n_groups = len(sampler.group_plan.group_size)
    group_of = sampler.group_plan.group_of.tolist()
    members = [[] for _ in range(n_groups)]
    for i in rng.permutation(len(sampler.table)).tolist():
        members[group_of[i]].append(i)
    keep_dataset = sampler.group_plan.keep_dataset.tolist()
    alias_dataset = sampler.group_plan.alias_dataset.tolist()
    n_datasets = len(keep_dataset)
    first_group = sampler.group_plan.group_start.tolist()
    groups_in = sampler.group_plan.groups_in.tolist()
    keep_within = sampler.group_plan.keep_within.tolist()
    alias_within = sampler.group_plan.alias_within.tolist()
    pointer = [0] * n_groups
    draws = []
    for _ in range(sampler.num_draws):
        u_dataset, u_category = rng.random(2).tolist()
        # dataset ~ P(d) by the alias method
        x = u_dataset * n_datasets
        j = min(int(x), n_datasets - 1)
        d = j if x - j < keep_dataset[j] else alias_dataset[j]
        # category ~ P(l | d) by the alias method of dataset d
        width = groups_in[d]
        x = u_category * width
        j = min(int(x), width - 1)
        g = first_group[d] + j
        if not x - j < keep_within[g]:
            g = alias_within[g]
        # next utterance of the group, round-robin
        group = members[g]
        draws.append(group[pointer[g] % len(group)])
        pointer[g] += 1
    bins = sampler.table.bins.tolist()
    starts, ends, size, total = [], [], 0, 0.0
    for n, i in enumerate(draws):
        if (total > sampler.batch_bins and size >= sampler.min_batch_size) or (
            sampler.max_batch_size is not None and size >= sampler.max_batch_size
        ):
            starts.append(n - size)
            ends.append(n)
            size, total = 0, 0.0
        size += 1
        total += bins[i]
    complete = total > sampler.batch_bins and size >= sampler.min_batch_size
    if size and (complete or not sampler.drop_last):
        starts.append(len(draws) - size)
        ends.append(len(draws))
    return draws, starts, ends


def vectorised_plan(sampler, epoch):
    sampler._plan_cache = None  # time the full computation every call
    return sampler._uniform_plan(epoch)


def same_plan(vectorised, loop):
    return all(
        np.array_equal(a, np.asarray(b)) for a, b in zip(vectorised, loop, strict=True)
    )


def best_of(fn, repeats):
    """Best wall time, best CPU time of this process, all wall times, result."""
    walls, cpus, result = [], [], None
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        result = fn()
        cpus.append(time.process_time() - cpu)
        walls.append(time.perf_counter() - wall)
    return min(walls), min(cpus), walls, result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", nargs="+", type=float, default=[1e5, 1e6])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    rows = []
    for n in (int(s) for s in args.sizes):
        start = time.perf_counter()
        sampler = make_sampler(n)
        setup = time.perf_counter() - start
        vec_best, vec_cpu, vec_times, vec_batches = best_of(
            lambda s=sampler: vectorised_plan(s, EPOCH), args.repeats
        )
        loop_repeats = 1 if n >= 10**6 else args.repeats
        loop_best, loop_cpu, loop_times, loop_batches = best_of(
            lambda s=sampler: loop_plan(s, EPOCH), loop_repeats
        )
        identical = same_plan(vec_batches, loop_batches)
        if not identical:
            raise SystemExit(f"n={n}: vectorised and loop plans differ")
        rows.append(
            {
                "utterances": n,
                "draws": sampler.num_draws,
                "batches": len(vec_batches[1]),
                "groups": len(sampler.groups),
                "setup_s": setup,
                "vectorised_s": vec_best,
                "vectorised_runs_s": vec_times,
                "loop_s": loop_best,
                "loop_runs_s": loop_times,
                "speedup": loop_best / vec_best,
                "vectorised_cpu_s": vec_cpu,
                "loop_cpu_s": loop_cpu,
                "speedup_cpu": loop_cpu / vec_cpu,
                "load_average_1min": os.getloadavg()[0],
                "identical_batches": identical,
            }
        )

    header = (
        f"{'utterances':>10} {'draws':>9} {'batches':>8} {'vectorised s':>13} "
        f"{'loop s':>8} {'speedup':>8} {'speedup (CPU time)':>19} {'load':>5}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['utterances']:>10} {r['draws']:>9} {r['batches']:>8} "
            f"{r['vectorised_s']:>13.3f} {r['loop_s']:>8.3f} {r['speedup']:>7.1f}x "
            f"{r['speedup_cpu']:>18.1f}x {r['load_average_1min']:>5.1f}"
        )
    print(
        "(best of the runs, wall clock and process CPU time; load = 1-min load "
        "average;\n both plans checked identical; constructor time in the JSON)"
    )
    out = Path(__file__).with_suffix(".json")
    out.write_text(
        json.dumps(
            {
                "benchmark": "catpow epoch plan",
                "python": platform.python_version(),
                "numpy": np.__version__,
                "machine": platform.machine(),
                "cpu_count_note": "shared 2-core machine; other jobs may run",
                "batch_bins": BATCH_BINS,
                "rows": rows,
            },
            indent=2,
        )
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
