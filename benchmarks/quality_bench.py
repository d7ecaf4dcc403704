"""The quality ruler: mining variants against the baseline, paired over seeds.

Runs :mod:`hardmine.tools.ruler` (what it trains and measures is described
there): every variant x seed is the recipe's own ``train.py`` under the same
budget; the statistics against the baseline are a bootstrap 95 % interval and
a Wilcoxon p over seeds, and a paired bootstrap over test utterances.

Usage (niced; a finished run is not repeated, so an interrupted benchmark
continues where it stopped)::

    nice -n 5 .venv/bin/python benchmarks/quality_bench.py kws            # 5 seeds
    nice -n 5 .venv/bin/python benchmarks/quality_bench.py kws --variants baseline isbl
    nice -n 5 .venv/bin/python benchmarks/quality_bench.py sep   # 5 seeds
    .venv/bin/python benchmarks/quality_bench.py kws --quick --out /tmp/q  # a check
    # a variant against its own control instead of the baseline
    nice -n 5 .venv/bin/python benchmarks/quality_bench.py kws --variants negatives_sub_hard \
        --reference negatives_sub_uniform

Prints the table and writes ``quality_bench_<task>.json`` next to this
script (into the ``--out`` folder when one is given) and the table as
Markdown to ``--report`` (default ``docs/results/quality_<task>.md``; no
Markdown with ``--quick`` unless ``--report`` asks for it)::

    nice -n 5 .venv/bin/python benchmarks/quality_bench.py sep --epochs 24 \
        --out results/quality/sep24 --report docs/results/quality_sep_24.md
"""

import sys
from pathlib import Path

from hardmine.tools import ruler

HERE = Path(__file__).resolve().parent


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = ruler.parse(argv)
    record = ruler.run(args, " ".join(["benchmarks/quality_bench.py", *argv]))
    print(record["report"])
    # With --out the JSON stays beside its runs, so that a second run folder
    # (another budget, say) does not overwrite the first one's figures.
    json_dir = Path(args.out) if args.out else HERE
    report = args.report
    if report is None and not args.quick:
        report = ruler.ROOT / "docs" / "results" / f"quality_{args.task}.md"
    ruler.write(record, json_dir / f"quality_bench_{args.task}.json", report)
    return record


if __name__ == "__main__":
    main()
