"""Baseline against ISBL keyword spotting, over seeds, with intervals (``make demo``).

Trains the Google Speech Commands recipe on the KWS benchmark set
(:mod:`hardmine.synthetic.hard_gsc`: low-SNR clips, rare keywords and a few
mislabelled clips, generated once and cached) with ``hparams/kws.yaml`` and
``hparams/kws_isbl.yaml``, three seeds each, every run under the same budget,
through the quality ruler (:mod:`hardmine.tools.ruler`). It then prints the
two side by side — test accuracy, rare-keyword and low-SNR accuracy, the
false-reject rate at 1 % and 5 % false alarms — with the paired difference
and its 95 % interval (over seeds, and over test utterances), and one
sentence on what the numbers show and what they do not. The
:mod:`~hardmine.tools.compare` report (table, DET curves, training curves,
mining distribution) goes to ``<output>/compare``.

Usage::

    python -m hardmine.tools.demo               # about 8 minutes on 2 CPU cores
    python -m hardmine.tools.demo --seeds 5     # a finer ruler
    python -m hardmine.tools.demo --fresh       # discard earlier demo runs

A finished run is not repeated, so an interrupted demo continues.

Example
-------
>>> record = {"seeds": [1, 2, 3], "paired": {"isbl": {
...     "accuracy": {"utterances": {"mean": 0.012, "low": -0.004, "high": 0.03,
...                                 "excludes_zero": False}},
...     "frr@0.01": {"utterances": {"mean": -0.08, "low": -0.15, "high": -0.01,
...                                 "excludes_zero": True}}}}}
>>> print(conclusion(record))  # doctest: +NORMALIZE_WHITESPACE
Over 3 seeds, isbl changed test accuracy by +1.2 points [-0.4, +3.0] (not told apart
from the baseline) and the false-reject rate at 1 % false alarms by -8.0 points
[-15.0, -1.0] (an interval that excludes 0); this is a small synthetic set and a
small budget, so it says nothing about real speech, longer training or larger models.
"""

import argparse
import logging
import shutil
from pathlib import Path

from hardmine.tools import compare, ruler

__all__ = ["conclusion", "main"]

logger = logging.getLogger("hardmine.tools.demo")


def _points(d):
    return (
        f"{100 * d['mean']:+.1f} points [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]"
        + (
            " (an interval that excludes 0)"
            if d["excludes_zero"]
            else " (not told apart from the baseline)"
        )
    )


def conclusion(record, variant="isbl"):
    """One sentence: what the demo's numbers show, and what they do not."""
    paired = record["paired"][variant]
    acc = paired["accuracy"]["utterances"]
    frr = paired["frr@0.01"]["utterances"]
    return (
        f"Over {len(record['seeds'])} seeds, {variant} changed test accuracy by "
        f"{_points(acc)} and the false-reject rate at 1 % false alarms by "
        f"{_points(frr)}; this is a small synthetic set and a small budget, so it "
        "says nothing about real speech, longer training or larger models."
    )


def main(argv=None):
    """Train both variants over the seeds and print them side by side."""
    parser = argparse.ArgumentParser(
        prog="python -m hardmine.tools.demo", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--output", default="results/demo", type=Path)
    parser.add_argument("--seeds", default=3, type=int)
    parser.add_argument("--epochs", default=4, type=int)
    parser.add_argument(
        "--variant", default="isbl", help="variant set against the baseline"
    )
    parser.add_argument(
        "--data_folder", help="KWS benchmark set (default: generated, cached)"
    )
    parser.add_argument("--fresh", action="store_true", help="discard earlier runs")
    args, extra = parser.parse_known_args(argv)
    if args.seeds < 2:
        parser.error("--seeds must be >= 2 (an interval needs pairs)")
    if args.epochs < 1:
        parser.error("--epochs must be >= 1")
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S"
    )
    output = args.output.resolve()
    if args.fresh and output.exists():
        shutil.rmtree(output)
    ruler_argv = ["kws", "--seeds", str(args.seeds), "--epochs", str(args.epochs)]
    ruler_argv += ["--variants", args.variant, "--out", str(output)]
    if args.data_folder:
        ruler_argv += ["--data_folder", args.data_folder]
    command = " ".join(["python -m hardmine.tools.demo", *(argv or [])])
    record = ruler.run(ruler.parse(ruler_argv + extra), command, echo=logger.info)
    ruler.write(record, output / "comparison.json")

    folders = [
        str(ruler.run_folder(output, v, s))
        for v in record["variants"]
        for s in record["seeds"]
    ]
    report = []
    compare.compare(folders, str(output / "compare"), echo=report.append)
    (output / "compare" / "report.txt").write_text("\n".join(report) + "\n")
    print()
    print(record["report"])
    print()
    print(conclusion(record, args.variant))
    print(f"\nRuns: {output}/<variant>/<seed>; plots and tables: {output}/compare")
    return record


if __name__ == "__main__":
    main()
