"""Throughput of the dynamic-mixing training loader against the training step.

Dynamic mixing makes every training mixture in the loader: it reads the
sources, levels, cuts and sums them (:mod:`hardmine.tasks.dynamic_mixing`).
It must keep up with training. This benchmark

1. generates (once, cached) a WSJ0-2mix-layout set of 20,000 training
   mixtures with :func:`hardmine.synthetic.layouts.make_wsj0mix`, prepared by
   the recipe's ``prepare_wsj0mix.py``: 40,000 sources of 2 s at 8 kHz;
2. builds the dynamic-mixing training set from
   ``recipes/WSJ0Mix/separation/hparams/sepformer_dm.yaml`` (its
   ``training_signal_len``) with the CPU-sized SepFormer of
   ``TINY_OVERRIDES["sepformer"]``;
3. measures the mixtures per second of the recipe's training loader
   (``SeparationBrain.make_dataloader``, batches of 4) with ``num_workers`` 0
   and 2, plain (slot mixtures) and with the source sampler (``--sampler
   isbl``); the first batch (worker start-up) is timed apart;
4. measures, in the same run, the training step rate of the tiny SepFormer
   (``fit_batch``: forward, loss, backward, Adam) on batches of that loader,
   as mixtures per second;
5. prints a table and writes ``dm_loader_bench.json`` (next to this script
   unless ``--out`` says otherwise; not committed).

The loader and the step are timed one after the other, not together: on a
machine with few cores the workers of a real run share the CPU with the
step. The step runs with one torch thread (``--threads``), its fastest on a
2-core machine shared with other work, which makes the comparison harder
for the loader. The target is a loader at least twice as fast as the step with
``num_workers`` 2.

The set goes to ``$HARDMINE_CACHE/dm-bench-wsj0mix`` or, without that
variable, ``results/cache/dm-bench-wsj0mix`` (never committed); generating it
takes about 15-25 minutes on a loaded 2-core machine.

Usage::

    python benchmarks/dm_loader_bench.py            # the full benchmark
    python benchmarks/dm_loader_bench.py --quick    # tiny set, a few batches

``--quick`` generates 16 mixtures of 0.25 s in a temporary folder, times
2 batches per loader and 1 step: it checks that everything runs and the JSON
is written, not the speed.
"""

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "WSJ0Mix" / "separation"
HPARAMS = RECIPE / "hparams" / "sepformer_dm.yaml"
BATCH_SIZE = 4
FULL = {"mixtures": 20000, "seconds": 2.0, "batches": 60, "step_batches": 8}
QUICK = {"mixtures": 16, "seconds": 0.25, "batches": 2, "step_batches": 1}
TARGET_RATIO = 2.0
SEED = 1234
GENERATION_FILE = "generation_time.json"


def cache_folder():
    """Where the generated set is kept (``$HARDMINE_CACHE`` or results/cache)."""
    base = os.environ.get("HARDMINE_CACHE")
    return Path(base) if base else ROOT / "results" / "cache"


def generate(mixtures, seconds, cache_dir=None):
    """The benchmark's WSJ0-2mix-layout set (cached); returns ``(root, seconds spent)``."""
    from hardmine.synthetic.cache import cached_dataset
    from hardmine.synthetic.layouts import GENERATOR_VERSION, make_wsj0mix

    spec = {
        "generator_version": GENERATOR_VERSION,
        "layout": "wsj0-2mix",
        "sizes": {"tr": mixtures, "cv": 0, "tt": 0},
        "seconds": seconds,
        "seed": SEED,
    }
    spent = {"s": 0.0}

    def build(folder):
        start = time.perf_counter()
        make_wsj0mix(folder, sizes=spec["sizes"], seconds=seconds, seed=SEED)
        spent["s"] = time.perf_counter() - start
        Path(folder, GENERATION_FILE).write_text(json.dumps({"seconds": spent["s"]}))

    root = cached_dataset(
        f"dm-bench-wsj0mix-{mixtures}-{seconds:g}s",
        build,
        spec,
        cache_dir=str(cache_dir or cache_folder()),
        description=f"dynamic-mixing benchmark set ({mixtures} mixtures of {seconds} s)",
    )
    if not spent["s"]:  # cached: the time of the run that generated it
        try:
            spent["s"] = json.loads(Path(root, GENERATION_FILE).read_text())["seconds"]
        except (OSError, ValueError, KeyError):
            spent["s"] = None
    return str(root), spent["s"]


def write_train_csv(root, path):
    """The training list of the generated set (the recipe's columns)."""
    import csv

    train = Path(root, "wav8k", "min", "tr")
    names = sorted(os.listdir(train / "mix"))
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["ID", "mix_wav", "s1_wav", "s2_wav"])
        for name in names:
            writer.writerow(
                [name[:-4]] + [str(train / sub / name) for sub in ("mix", "s1", "s2")]
            )
    return str(path), len(names)


def load_hparams(work_dir, sampler):
    """sepformer_dm.yaml with the tiny SepFormer, as train.py loads it."""
    import speechbrain as sb
    import yaml
    from hyperpyyaml import load_hyperpyyaml

    from hardmine.tasks.separation import TINY_OVERRIDES, check_hparams

    _, _, tiny = sb.parse_arguments([str(HPARAMS), *TINY_OVERRIDES["sepformer"]])
    overrides = {
        **yaml.safe_load(tiny),
        "output_folder": str(Path(work_dir, sampler)),
        "batch_size": BATCH_SIZE,
        "num_workers": 0,
        "sampler": sampler,
        "seed": SEED,
    }
    with open(HPARAMS, encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    check_hparams(hparams)
    return hparams


def make_brain(hparams):
    import speechbrain as sb

    from hardmine.tasks.separation import SeparationBrain

    brain = SeparationBrain(
        modules=hparams["modules"],
        opt_class=hparams["optimizer"],
        hparams=hparams,
        run_opts={"device": "cpu", "noprogressbar": True},
    )
    brain.on_fit_start()
    return brain, sb.Stage.TRAIN


def time_loader(brain, stage, dataset, workers, batches, with_sampler):
    """Mixtures per second of the training loader (first batch timed apart)."""
    factory = brain.sampler_factory
    if not with_sampler:
        brain.sampler_factory = None
    loader = brain.make_dataloader(
        dataset, stage, batch_size=BATCH_SIZE, num_workers=workers
    )
    brain.sampler_factory = factory
    if hasattr(loader, "batch_sampler") and hasattr(loader.batch_sampler, "set_epoch"):
        loader.batch_sampler.set_epoch(1)
    brain.on_stage_start(stage, 1)  # gives the dataset its epoch
    start = time.perf_counter()
    iterator = iter(loader)
    first = next(iterator)
    first_s = time.perf_counter() - start
    start = time.perf_counter()
    mixtures, kept = 0, []
    for _ in range(batches):
        batch = next(iterator)
        mixtures += len(batch.id)
        if len(kept) < 16:
            kept.append(batch)
    elapsed = time.perf_counter() - start
    problems = sum(bool(p) for p in first.audio_problem)
    del iterator
    return {
        "num_workers": workers,
        "sampler": "isbl (sources)" if with_sampler else "none",
        "first_batch_s": first_s,
        "batches": batches,
        "mixtures": mixtures,
        "seconds": elapsed,
        "mixtures_per_s": mixtures / elapsed,
        "first_batch_problems": problems,
        "samples_per_mixture": int(first.mix_sig.data.shape[1]),
    }, kept


def time_steps(brain, batches, count, warm_up=True):
    """Training steps per second of the tiny SepFormer on the loader's batches."""
    brain.modules.train()
    if warm_up:
        brain.fit_batch(batches[0])
    start = time.perf_counter()
    mixtures = 0
    for i in range(count):
        batch = batches[(i + 1) % len(batches)]
        brain.fit_batch(batch)
        mixtures += len(batch.id)
    elapsed = time.perf_counter() - start
    return {
        "steps": count,
        "seconds": elapsed,
        "steps_per_s": count / elapsed,
        "mixtures_per_s": mixtures / elapsed,
    }


def main(argv=None):
    """Run the benchmark; returns the record written to the JSON file."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny set, few batches")
    parser.add_argument("--out", default=str(Path(__file__).parent))
    parser.add_argument("--batches", type=int, help="loader batches timed")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads of the step (default 1)"
    )
    args = parser.parse_args(argv)
    size = dict(QUICK if args.quick else FULL)
    if args.batches:
        size["batches"] = args.batches
    torch.set_num_threads(args.threads)

    from hardmine.tasks.dynamic_mixing import build_dm_train_set

    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp, "cache") if args.quick else None
        root, generation_s = generate(size["mixtures"], size["seconds"], cache)
        csv_path, n_train = write_train_csv(root, Path(tmp, "train.csv"))
        rows, kept = [], None
        # One brain built as with --sampler isbl; the plain loader leaves
        # its sampler factory out.
        hparams = load_hparams(tmp, "isbl")
        dataset = build_dm_train_set(hparams, csv_path)
        brain, stage = make_brain(hparams)
        for sampler in ("none", "isbl"):
            for workers in (0, 2):
                row, batches = time_loader(
                    brain, stage, dataset, workers, size["batches"], sampler == "isbl"
                )
                rows.append(row)
                print(
                    f"loader  sampler={row['sampler']:<15} workers={workers}: "
                    f"{row['mixtures_per_s']:8.1f} mixtures/s "
                    f"(first batch {row['first_batch_s']:.2f} s)",
                    flush=True,
                )
                if sampler == "none" and workers == 0:
                    kept = batches
        step = time_steps(brain, kept, size["step_batches"], not args.quick)
    print(f"step    tiny SepFormer, batch {BATCH_SIZE}: "
          f"{step['mixtures_per_s']:8.1f} mixtures/s ({step['steps_per_s']:.2f} steps/s)")  # fmt: skip
    plain_w2 = next(r for r in rows if r["sampler"] == "none" and r["num_workers"] == 2)
    ratio = plain_w2["mixtures_per_s"] / step["mixtures_per_s"]
    record = {
        "command": "python benchmarks/dm_loader_bench.py"
        + (" --quick" if args.quick else ""),
        "quick": args.quick,
        "set": {
            "train_mixtures": n_train,
            "sources": len(dataset.sources),
            "speakers": len(dataset.sources.speaker_names),
            "seconds_per_file": size["seconds"],
            "sample_rate": 8000,
            "generation_s": generation_s,
        },
        "batch_size": BATCH_SIZE,
        "training_signal_len": hparams["training_signal_len"],
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "loader": rows,
        "step": step,
        "ratio_loader_w2_to_step": ratio,
        "target_ratio": TARGET_RATIO,
        "target_met": ratio >= TARGET_RATIO,
    }
    print()
    print(f"{'loader':<30}{'workers':>8}{'mixtures/s':>12}{'x step':>9}")
    for row in rows:
        print(
            f"{'DM, sampler ' + row['sampler']:<30}{row['num_workers']:>8}"
            f"{row['mixtures_per_s']:>12.1f}"
            f"{row['mixtures_per_s'] / step['mixtures_per_s']:>9.1f}"
        )
    print(f"{'tiny SepFormer training step':<30}{'':>8}{step['mixtures_per_s']:>12.1f}")
    print(f"target: loader (workers 2) >= {TARGET_RATIO:g} x step: "
          f"{'met' if record['target_met'] else 'NOT met'} ({ratio:.1f} x)")  # fmt: skip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "dm_loader_bench.json", "w", encoding="utf-8") as handle:
        json.dump(record, handle, indent=2)
    return record


if __name__ == "__main__":
    if sys.argv[1:] == ["--generate-only"]:
        print(generate(FULL["mixtures"], FULL["seconds"]))
    else:
        main()
