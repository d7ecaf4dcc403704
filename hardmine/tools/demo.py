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

It is a fixed use of the general tools: :mod:`hardmine.tools.variants` runs
the two trainings one after the other (console output of each run in
``variants_console.txt`` and ``run_info.json``), and
:mod:`hardmine.tools.compare` reads the runs, makes the side-by-side table
and writes its report (tables, CDF, training-curve and mining-distribution
plots, hardest training mixtures).

Usage::

    python -m hardmine.tools.demo                 # about 15 minutes on 2 CPU cores
    python -m hardmine.tools.demo --epochs 2      # a quicker look
    python -m hardmine.tools.demo --fresh         # discard earlier demo runs

Outputs go to ``results/demo/{baseline,isbl}/`` (each a normal recipe output
folder: train_log.txt, test_results.csv, test_summary.json, checkpoints),
``results/demo/comparison.json`` and ``results/demo/compare/`` (the
:mod:`~hardmine.tools.compare` report). An interrupted demo resumes from its
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
import json
import logging
import os
import shutil
from pathlib import Path

from hardmine.tools import compare, variants

__all__ = ["VARIANTS", "summarize_runs", "comparison_table", "main"]

logger = logging.getLogger("hardmine.tools.demo")

RECIPE_DIR = Path(__file__).resolve().parents[2] / "recipes" / "WSJ0Mix" / "separation"
#: Demo run name -> hparams file of the WSJ0Mix recipe.
VARIANTS = {"baseline": "sepformer.yaml", "isbl": "sepformer_isbl.yaml"}
#: Child log lines worth echoing as progress.
PROGRESS_MARKS = ("Going into epoch", "train_logger", "Generating", "Loading a checkp")


def summarize_runs(rows_by_run):
    """Statistics of each run's test metrics.

    Arguments
    ---------
    rows_by_run : dict
        Run name -> list of per-utterance dicts (values may be strings).

    Returns
    -------
    dict
        Run name -> metric -> ``sep_metrics.summarize`` output
        (:func:`hardmine.tools.compare.separation_summary`).
    """
    return {run: compare.separation_summary(rows) for run, rows in rows_by_run.items()}


def comparison_table(summaries):
    """Format the summaries as a text table, one column per run.

    With exactly two runs a third column gives the difference (second minus
    first); :func:`hardmine.tools.compare.side_by_side_table`.

    Arguments
    ---------
    summaries : dict
        Output of :func:`summarize_runs`.

    Returns
    -------
    str
    """
    return compare.side_by_side_table(summaries)


def _tiny_model():
    from hardmine.tasks.separation import TINY_OVERRIDES

    return list(TINY_OVERRIDES["sepformer"])


def _plan(output, args):
    """The two runs, through the variants runner: ``<output>/<run name>``."""
    extra = _tiny_model() + [
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
        extra += ["--data_folder", str(args.data_folder)]
    return variants.plan_runs(
        str(RECIPE_DIR / "train.py"),
        [str(RECIPE_DIR / "hparams" / f) for f in VARIANTS.values()],
        [args.seed],
        str(output),
        epochs=args.epochs,
        extra=extra,
        names=list(VARIANTS),
        seed_folders=False,
    )


def _progress(spec, line):
    if any(mark in line for mark in PROGRESS_MARKS):
        logger.info("[%s] %s", spec.variant, line)


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
    # The runs start in the recipe's folder: a relative path would move.
    args.data_folder = os.path.abspath(args.data_folder)
    plan = _plan(output, args)
    for spec in plan:
        if args.fresh and os.path.exists(spec.output_folder):
            shutil.rmtree(spec.output_folder)
        elif os.path.exists(os.path.join(spec.output_folder, "save")):
            logger.info(
                "[%s] resuming from the checkpoints in %s",
                spec.variant,
                spec.output_folder,
            )
    # Every run is started even if it has test results: SpeechBrain resumes
    # it from its checkpoints (a finished run only repeats its test stage).
    for spec, outcome in zip(
        plan,
        variants.run_variants(plan, rerun=True, echo=logger.info, progress=_progress),
    ):
        if outcome["status"] == "failed":
            console = os.path.join(spec.output_folder, "variants_console.txt")
            raise RuntimeError(
                f"the {spec.variant} run failed (exit code {outcome['returncode']}); "
                f"last output:\n{variants.console_tail(console, 40)}"
                f"full log: {os.path.join(spec.output_folder, 'log.txt')}"
            )
    runs = {spec.variant: spec.output_folder for spec in plan}

    # The comparison tool's report (tables, plots, hardest mixtures) ...
    report_dir = output / "compare"
    report_text = []
    compared = compare.compare(
        list(runs.values()), str(report_dir), echo=report_text.append
    )
    with open(report_dir / "report.txt", "w", encoding="utf-8") as fout:
        fout.write("\n".join(report_text) + "\n")
    # ... and its side-by-side table of the two runs.
    summaries = summarize_runs(
        {name: compare.read_test_rows(out) for name, out in runs.items()}
    )
    steps = {}
    for run in compared["runs"]:
        value = run.metrics.get("steps")
        steps[run.variant] = int(value) if value == value else None  # NaN: unknown
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
    with open(output / "comparison.json", "w", encoding="utf-8") as fout:
        json.dump(report, fout, indent=2)
    print()
    print("Test results, tiny SepFormer, same seed and step budget")
    print(f"(optimizer steps: {', '.join(f'{k} {v}' for k, v in steps.items())})")
    print(table)
    print(f"\nPer-utterance results: {output}/<run>/test_results.csv")
    print(f"Summary: {output / 'comparison.json'}")
    print(f"Plots, tables and hardest mixtures: {report_dir}")
    return report


if __name__ == "__main__":
    main()
