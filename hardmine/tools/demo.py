"""Baseline against ISBL on the embedded default set (``make demo``).

Runs the WSJ0Mix separation recipe twice with the CPU-sized SepFormer
(the overrides ``hardmine.tasks.separation.TINY_OVERRIDES["sepformer"]``):
once with ``hparams/sepformer.yaml`` (SpeechBrain's own threshold and
loss-limit policies) and once with
``hparams/sepformer_isbl.yaml`` (the same plus the ISBL loss-driven sampler).
Both runs share the seed, the batch size, the number of epochs and hence the
number of optimizer steps. Their test results are then printed side by side:
mean, median and the 5th/10th percentiles of SI-SNR improvement and SDR
improvement over the test mixtures (the low percentiles show what happens to
the hardest mixtures).

Usage::

    python -m hardmine.tools.demo                 # about 16 minutes on 2 idle CPU cores
    python -m hardmine.tools.demo --epochs 2      # a quicker look
    python -m hardmine.tools.demo --fresh         # discard earlier demo runs

Outputs go to ``results/demo/{baseline,isbl}/`` (each a normal recipe output
folder: train_log.txt, test_results.csv, test_summary.json, checkpoints) and
``results/demo/comparison.json``. An interrupted demo resumes from its
checkpoints when started again.

Example
-------
>>> rows = {"baseline": [{"snt_id": "a", "si-snr_i": 4.0, "sdr_i": 5.0}],
...         "isbl": [{"snt_id": "a", "si-snr_i": 6.0, "sdr_i": 6.5}]}
>>> table = comparison_table(summarize_runs(rows))
>>> print(table.splitlines()[2])
SI-SNRi mean (dB)         4.00      6.00   +2.00
"""

import argparse
import csv
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from hardmine.tasks.sep_metrics import summarize

__all__ = ["VARIANTS", "summarize_runs", "comparison_table", "main"]

logger = logging.getLogger("hardmine.tools.demo")

RECIPE_DIR = Path(__file__).resolve().parents[2] / "recipes" / "WSJ0Mix" / "separation"
#: Demo run name -> hparams file of the WSJ0Mix recipe.
VARIANTS = {"baseline": "sepformer.yaml", "isbl": "sepformer_isbl.yaml"}
#: (column of test_results.csv, label, statistics shown)
ROWS = (
    ("si-snr_i", "SI-SNRi", ("mean", "median", "p5", "p10")),
    ("sdr_i", "SDRi", ("mean", "median", "p5", "p10")),
)
#: Child log lines worth echoing as progress.
PROGRESS_MARKS = ("Going into epoch", "train_logger", "Generating", "Loading a checkp")


def read_test_rows(csv_path):
    """Per-utterance rows of a recipe's ``test_results.csv`` (no avg row)."""
    with open(csv_path, newline="", encoding="utf-8") as fin:
        return [row for row in csv.DictReader(fin) if row["snt_id"] != "avg"]


def summarize_runs(rows_by_run):
    """Statistics of each run's test metrics.

    Arguments
    ---------
    rows_by_run : dict
        Run name -> list of per-utterance dicts (values may be strings).

    Returns
    -------
    dict
        Run name -> metric -> ``sep_metrics.summarize`` output.
    """
    return {
        run: {
            metric: summarize(float(row[metric]) for row in rows)
            for metric, _, _ in ROWS
        }
        for run, rows in rows_by_run.items()
    }


def comparison_table(summaries):
    """Format the summaries as a text table, one column per run.

    With exactly two runs a third column gives the difference (second minus
    first).

    Arguments
    ---------
    summaries : dict
        Output of :func:`summarize_runs`.

    Returns
    -------
    str
    """
    runs = list(summaries)
    diff = len(runs) == 2
    header = f"{'':20}" + "".join(f"{run:>10}" for run in runs)
    header += f"{'diff':>8}" if diff else ""
    lines = [header, "-" * len(header)]
    for metric, label, stats in ROWS:
        for stat in stats:
            values = [summaries[run][metric][stat] for run in runs]
            line = f"{label + ' ' + stat + ' (dB)':20}"
            line += "".join(f"{v:10.2f}" for v in values)
            if diff:
                line += f"{values[1] - values[0]:+8.2f}"
            lines.append(line)
    counts = [summaries[run][ROWS[0][0]]["count"] for run in runs]
    lines.append(f"{'test mixtures':20}" + "".join(f"{c:10d}" for c in counts))
    return "\n".join(lines)


def _run_variant(name, hparams_file, out, args):
    from hardmine.tasks.separation import TINY_OVERRIDES

    cmd = [
        sys.executable,
        "train.py",
        f"hparams/{hparams_file}",
        *TINY_OVERRIDES["sepformer"],
        "--output_folder",
        str(out),
        "--seed",
        str(args.seed),
        "--N_epochs",
        str(args.epochs),
        "--batch_size",
        str(args.batch_size),
        "--lr",
        str(args.lr),
        "--training_signal_len",
        str(args.signal_len),
        "--num_workers",
        "0",
        "--noprogressbar",
    ]
    if args.data_folder is not None:
        cmd += ["--data_folder", str(args.data_folder)]
    logger.info("[%s] %s", name, " ".join(cmd[1:]))
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        cwd=RECIPE_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
    )
    tail = []
    for line in proc.stdout:
        line = line.rstrip()
        tail = (tail + [line])[-40:]
        if any(mark in line for mark in PROGRESS_MARKS):
            logger.info("[%s] %s", name, line)
    if proc.wait() != 0:
        raise RuntimeError(
            f"the {name} run failed (exit code {proc.returncode}); last output:\n"
            + "\n".join(tail)
            + f"\nfull log: {out / 'log.txt'}"
        )
    logger.info("[%s] done in %.0f s", name, time.perf_counter() - start)


def _optimizer_steps(out):
    """Optimizer steps taken, as recorded after the last training epoch."""
    path = out / "mining_stats.jsonl"
    if not path.exists():
        return None
    records = [json.loads(line) for line in path.read_text().splitlines() if line]
    return records[-1]["optimizer_step"] if records else None


def main(argv=None):
    """Run both variants and print their test results side by side."""
    parser = argparse.ArgumentParser(
        prog="python -m hardmine.tools.demo", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--output", default="results/demo", type=Path)
    parser.add_argument("--epochs", default=6, type=int)
    # The recipe's 1.5e-4 suits the full SepFormer over 200 epochs; the tiny
    # model barely separates at it within the demo's 600 steps.
    parser.add_argument("--lr", default=1e-3, type=float)
    parser.add_argument("--batch_size", default=4, type=int)
    parser.add_argument(
        "--signal_len", default=16000, type=int, help="training crop in samples"
    )
    parser.add_argument("--seed", default=1234, type=int)
    parser.add_argument(
        "--data_folder",
        default=None,
        help="WSJ0-2mix-layout folder (default: the embedded default set)",
    )
    parser.add_argument("--fresh", action="store_true", help="discard earlier runs")
    args = parser.parse_args(argv)
    for name in ("epochs", "batch_size", "signal_len"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1")
    if not args.lr > 0:
        parser.error("--lr must be > 0")

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S"
    )
    output = args.output.resolve()
    if args.data_folder is None:
        from hardmine.synthetic.layouts import default_wsj0mix

        logger.info("Preparing the embedded default set (generated once, cached)")
        args.data_folder = default_wsj0mix()
    runs = {}
    for name, hparams_file in VARIANTS.items():
        out = output / name
        if args.fresh and out.exists():
            shutil.rmtree(out)
        elif (out / "save").exists():
            logger.info("[%s] resuming from the checkpoints in %s", name, out)
        _run_variant(name, hparams_file, out, args)
        runs[name] = out

    summaries = summarize_runs(
        {name: read_test_rows(out / "test_results.csv") for name, out in runs.items()}
    )
    steps = {name: _optimizer_steps(out) for name, out in runs.items()}
    table = comparison_table(summaries)
    report = {
        "settings": {
            "model_size": "tiny",
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "signal_len": args.signal_len,
            "seed": args.seed,
            "data_folder": str(args.data_folder),
        },
        "optimizer_steps": steps,
        "test": summaries,
    }
    os.makedirs(output, exist_ok=True)
    with open(output / "comparison.json", "w", encoding="utf-8") as fout:
        json.dump(report, fout, indent=2)
    print()
    print("Test results, tiny SepFormer, same seed and step budget")
    print(f"(optimizer steps: {', '.join(f'{k} {v}' for k, v in steps.items())})")
    print(table)
    print(f"\nPer-utterance results: {output}/<run>/test_results.csv")
    print(f"Summary: {output / 'comparison.json'}")
    return report


if __name__ == "__main__":
    main()
