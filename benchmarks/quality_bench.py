"""Test quality of the separation mining variants on the embedded data set.

Trains the WSJ0Mix recipe's tiny SepFormer (``--model_size tiny``) on the
embedded default WSJ0-2mix-style set (400 training mixtures of 2 s at 8 kHz)
with four YAML files of the recipe:

* ``baseline``: ``hparams/sepformer.yaml`` (threshold -30 and loss limit);
* ``isbl``: ``hparams/sepformer_isbl.yaml`` (plus the ISBL sampler);
* ``robust``: ``hparams/sepformer_robust.yaml`` (plus robust reweighting);
* ``curriculum``: ``hparams/sepformer_curriculum.yaml`` (plus curriculum
  reweighting).

Every variant runs once per seed with the same budget (``--epochs`` epochs,
which is also passed as ``--step-budget`` = epochs x batches per epoch), the
same batch size, crop length and thread count, one run after the other,
through :mod:`hardmine.tools.variants` (the commands are the recipe's own
``train.py`` command lines). Each run ends with the recipe's test on the
100 test mixtures.

Reported per variant: the test SI-SNRi mean and 10th percentile of each run,
then their mean ± standard deviation and min..max across seeds.
:func:`hardmine.tools.compare.compare` is run on the outputs (table, CDF, curves
and mining plots in ``<out>/compare``); the table, ``cdf.png`` and
``mining.png`` are copied to ``docs/results/``.

Writes ``quality_bench.json`` next to this script. Run it niced, e.g.::

    nice -n 5 .venv/bin/python benchmarks/quality_bench.py --epochs 2 --seeds 1 2 3

A run whose test results already exist is not repeated (``--rerun`` forces
it), so an interrupted benchmark continues where it stopped.
"""

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

from hardmine.tools import compare as compare_mod
from hardmine.tools import variants

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "WSJ0Mix" / "separation"
#: Variant label -> YAML file of the recipe.
VARIANTS = {
    "baseline": "hparams/sepformer.yaml",
    "isbl": "hparams/sepformer_isbl.yaml",
    "robust": "hparams/sepformer_robust.yaml",
    "curriculum": "hparams/sepformer_curriculum.yaml",
}
TRAIN_MIXTURES = 400  # size of the embedded training set
METRICS = (("si-snr_i", "mean"), ("si-snr_i", "p10"), ("sdr_i", "mean"))


def read_summary(run_folder):
    """The recipe's ``test_summary.json`` of one run."""
    path = Path(run_folder) / "test_summary.json"
    with open(path, encoding="utf-8") as fin:
        return json.load(fin)


def last_mining_record(run_folder):
    path = Path(run_folder) / "mining_stats.jsonl"
    if not path.is_file():
        return {}
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    return json.loads(lines[-1]) if lines else {}


def spread(values):
    """Mean, sample sd, min and max of per-seed values."""
    values = [float(v) for v in values]
    return {
        "mean": statistics.mean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
        "per_seed": values,
    }


def cell(stats):
    return (
        f"{stats['mean']:.2f} ± {stats['std']:.2f} "
        f"({stats['min']:.2f}..{stats['max']:.2f})"
    )


def markdown_table(results, seeds, settings):
    lines = [
        "| variant | runs | SI-SNRi mean (dB) | SI-SNRi p10 (dB) | SDRi mean (dB) "
        "| optimizer steps | wall time / run (s) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['runs']} | {cell(r['si-snr_i_mean'])} "
            f"| {cell(r['si-snr_i_p10'])} | {cell(r['sdr_i_mean'])} "
            f"| {r['steps']['mean']:.0f} | {r['wall_time_s']['mean']:.0f} |"
        )
    lines.append("")
    lines.append(
        f"Mean ± sd across seeds {', '.join(map(str, seeds))} (min..max in "
        "brackets); each run's value is over the 100 test mixtures. Tiny "
        f"SepFormer, {settings['step_budget']} optimizer steps per run "
        f"({settings['batches_per_epoch']} batches of {settings['batch_size']} "
        f"x {settings['signal_len'] / 8000:g} s per epoch), synthetic data."
    )
    lines.append("")
    lines.append(
        "Read with care: a tiny model, a small synthetic set, a short budget and "
        "3 seeds. A difference between variants within the seed spread is not "
        "evidence that one is better, and nothing here speaks for full-size "
        "models trained to convergence on WSJ0-2mix."
    )
    return "\n".join(lines)


def text_table(results):
    header = (
        f"{'variant':<11}{'runs':>5}  {'SI-SNRi mean':>28}  {'SI-SNRi p10':>28}"
        f"  {'steps':>6}  {'s/run':>6}"
    )
    lines = [header, "-" * len(header)]
    for name, r in results.items():
        lines.append(
            f"{name:<11}{r['runs']:>5}  {cell(r['si-snr_i_mean']):>28}  "
            f"{cell(r['si-snr_i_p10']):>28}  {r['steps']['mean']:>6.0f}  "
            f"{r['wall_time_s']['mean']:>6.0f}"
        )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--epochs", type=int, default=2, help="epochs per run")
    parser.add_argument(
        "--step-budget",
        type=int,
        default=None,
        help="optimizer steps per run (default: epochs x batches per epoch; "
        "smaller values are for checking the set-up)",
    )
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument(
        "--signal-len", type=int, default=16000, help="training crop (samples)"
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="OMP/MKL threads of each run"
    )
    parser.add_argument(
        "--variants",
        nargs="+",
        default=list(VARIANTS),
        choices=list(VARIANTS),
        help="variants to run",
    )
    parser.add_argument("--out", default=str(ROOT / "results" / "quality_bench"))
    parser.add_argument(
        "--docs", default=str(ROOT / "docs" / "results"), help="artefact folder"
    )
    parser.add_argument("--rerun", action="store_true")
    args = parser.parse_args(argv)
    for name in ("epochs", "batch_size", "signal_len", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")

    batches_per_epoch = -(-TRAIN_MIXTURES // args.batch_size)
    step_budget = args.step_budget or args.epochs * batches_per_epoch
    if step_budget < 1:
        parser.error("--step-budget must be >= 1")
    extra = [
        "--model_size",
        "tiny",
        "--batch_size",
        str(args.batch_size),
        "--training_signal_len",
        str(args.signal_len),
        "--num_workers",
        "0",
        "--noprogressbar",
    ]
    out = Path(args.out).resolve()
    # Run folders are named after the variant label (the folder name is what
    # hardmine.tools.compare shows), so the YAML files are given through links.
    links = out / "yaml"
    links.mkdir(parents=True, exist_ok=True)
    files = []
    for name in args.variants:
        link = links / f"{name}.yaml"
        source = RECIPE / VARIANTS[name]
        # A copy would break the YAML's relative !include paths; a link keeps
        # them relative to the recipe (hyperpyyaml resolves the real path).
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(source)
        files.append(str(link))
    plan = variants.plan_runs(
        str(RECIPE / "train.py"),
        files,
        args.seeds,
        str(out),
        step_budget=step_budget,
        epochs=args.epochs,
        extra=extra,
    )
    env = dict(os.environ)
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[key] = str(args.threads)
    print(
        f"{len(plan)} runs, {step_budget} optimizer steps each; log per run in "
        f"<run>/variants_console.txt",
        flush=True,
    )
    start = time.perf_counter()
    outcomes = variants.run_variants(
        plan, rerun=args.rerun, echo=lambda s: print(s, flush=True), env=env
    )
    total_wall = time.perf_counter() - start
    failed = [o for o in outcomes if o["status"] == "failed"]
    if failed:
        print(
            "Failed runs: "
            + ", ".join(f"{o['variant']} seed {o['seed']}" for o in failed),
            file=sys.stderr,
        )

    results = {}
    runs = []
    for spec in plan:
        folder = Path(spec.output_folder)
        if not (folder / "test_summary.json").is_file():
            continue
        summary = read_summary(folder)
        record = last_mining_record(folder)
        info_path = folder / "run_info.json"
        info = json.loads(info_path.read_text()) if info_path.is_file() else {}
        runs.append(
            {
                "variant": spec.variant,
                "seed": spec.seed,
                "folder": str(folder),
                "si-snr_i_mean": summary["si-snr_i"]["mean"],
                "si-snr_i_p10": summary["si-snr_i"]["p10"],
                "sdr_i_mean": summary["sdr_i"]["mean"],
                "test_count": summary.get("count"),
                "optimizer_steps": record.get("optimizer_step"),
                "examples_filtered_last_epoch": record.get("examples_filtered"),
                "batches_skipped_last_epoch": record.get("batches_skipped"),
                "wall_time_s": info.get("wall_time_s"),
                "command": info.get("command"),
            }
        )
    for name in args.variants:
        mine = [r for r in runs if r["variant"] == name]
        if not mine:
            continue
        results[name] = {
            "runs": len(mine),
            "seeds": [r["seed"] for r in mine],
            **{
                f"{metric}_{stat}": spread(r[f"{metric}_{stat}"] for r in mine)
                for metric, stat in METRICS
            },
            "steps": spread(r["optimizer_steps"] or 0 for r in mine),
            "wall_time_s": spread(r["wall_time_s"] or 0.0 for r in mine),
        }
    if not results:
        raise SystemExit("no run produced test results")

    settings = {
        "model_size": "tiny",
        "epochs": args.epochs,
        "step_budget": step_budget,
        "batches_per_epoch": batches_per_epoch,
        "batch_size": args.batch_size,
        "signal_len": args.signal_len,
        "threads": args.threads,
        "seeds": args.seeds,
        "variant_files": {n: VARIANTS[n] for n in args.variants},
        "extra_overrides": extra,
    }
    print()
    print(
        f"Test SI-SNRi (dB) on 100 mixtures, mean ± sd (min..max) over "
        f"{len(args.seeds)} seeds; {step_budget} steps per run"
    )
    table = text_table(results)
    print(table)

    compare_dir = out / "compare"
    lines = []
    compare_mod.compare(
        [spec.output_folder for spec in plan if Path(spec.output_folder).is_dir()],
        str(compare_dir),
        echo=lines.append,
    )
    compare_text = "\n".join(lines)

    docs = Path(args.docs)
    docs.mkdir(parents=True, exist_ok=True)
    for name in ("cdf.png", "mining.png"):
        if (compare_dir / name).is_file():
            shutil.copyfile(compare_dir / name, docs / name)
    table_md = markdown_table(results, args.seeds, settings)
    sep_block = compare_text.split("\n\n")[0]  # the separation table
    (docs / "quality.md").write_text(
        "# Mining variants on the embedded WSJ0-2mix-style set\n\n"
        + table_md
        + "\n\nTable printed by `python -m hardmine.tools.compare` on the same runs:\n\n"
        + "```\n"
        + sep_block
        + "\n```\n\n"
        + "![Test SI-SNRi CDF per variant](cdf.png)\n\n"
        + "![Mining statistics per epoch](mining.png)\n"
    )

    payload = {
        "benchmark": "separation mining variants, tiny SepFormer, embedded data",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count_note": "shared 2-core machine; other jobs may run",
        "settings": settings,
        "total_wall_s": total_wall,
        "failed": [{"variant": o["variant"], "seed": o["seed"]} for o in failed],
        "variants": results,
        "runs": runs,
        "compare_folder": str(compare_dir),
        "compare_output": compare_text,
    }
    json_path = Path(__file__).with_suffix(".json")
    json_path.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"\nwrote {json_path}, {docs / 'quality.md'}, {docs}/cdf.png, mining.png")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
