"""Comparing variants for quality: paired differences, DET curve, subgroup bars.

The run folders are written by the recipes' own writers (``KWSResults``,
``write_test_results``, the Brain's statistics writer) through the helpers
of ``test_compare.py``.
"""

import csv
import json
import math
import re

import matplotlib.colors
import numpy as np
import pytest
from matplotlib.container import BarContainer
from scipy import stats
from test_compare import BASE, band_limits, mining_records, sep_run, write_hparams

from hardmine.tasks.kws_metrics import KWSResults, frr_at_far
from hardmine.tools import compare
from hardmine.tools.stats import seed_difference

# ------------------------------------------------------------- separation
# SI-SNRi of seed s = BASE + SHIFT[s] (+ the variant's gain on that seed).
SHIFT = {"0": 0.2, "1": 0.0, "2": 0.5, "3": -0.3}
GAIN = {
    "base": {"1": 0.0, "2": 0.0, "3": 0.0},
    # Better than the reference on every seed, by different amounts.
    "better": {"1": 1.0, "2": 2.0, "3": 0.5},
    # Better on two seeds, worse on one; seed 0 has no reference run (and
    # comes first, so that pairing by position would pair the wrong runs).
    "mixed": {"0": 3.0, "1": 2.0, "2": -1.0, "3": 0.5},
}
# Optimizer steps of the last epoch, per variant and seed.
STEPS = {
    "base": {"1": 30, "2": 30, "3": 30},
    "better": {"1": 32, "2": 34, "3": 33},
    "mixed": {"0": 35, "1": 29, "2": 31, "3": 30},
}
SUBGROUPS = ("close pitch", "level difference", "rest")


def sisnri(variant, seed):
    return BASE + SHIFT[seed] + GAIN[variant][seed]


def subgroup_of(index, seed):
    """Subgroup of test mixture ``index``; seed 2's runs file one more as "rest"."""
    if seed == "2" and index == 0:
        return "rest"
    return SUBGROUPS[index % 3]


def add_subgroup_column(folder, seed):
    """The separation CSV with a ``subgroup`` column (empty on the avg row)."""
    path = folder / "test_results.csv"
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        fields = list(reader.fieldnames) + ["subgroup"]
        rows = list(reader)
    for i, row in enumerate(rows):
        row["subgroup"] = "" if row["snt_id"] == "avg" else subgroup_of(i, seed)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def make_sep_variants(root, subgroups=False):
    for variant, gains in GAIN.items():
        for seed in gains:
            folder = root / variant / seed
            sep_run(
                folder,
                int(seed),
                sisnri(variant, seed),
                [-1.0, -2.0, -3.0],
                mining_records([10, 20, STEPS[variant][seed]], [0, 1, 0], [0, 0, 1]),
            )
            if subgroups:
                add_subgroup_column(folder, seed)
    return root


@pytest.fixture
def sep_variants(tmp_path):
    return make_sep_variants(tmp_path / "results")


def per_seed(variant, column):
    """The table's per-seed values, computed here from the written numbers."""
    out = {}
    for seed in GAIN[variant]:
        values = sisnri(variant, seed)
        out[seed] = {
            "si-snr_i_mean": float(np.mean(values)),
            "si-snr_i_median": float(np.median(values)),
            "si-snr_i_p5": float(np.percentile(values, 5)),
            "si-snr_i_p10": float(np.percentile(values, 10)),
            "sdr_i_mean": float(np.mean(values + 0.5)),
            "steps": float(STEPS[variant][seed]),
            "epochs": 3.0,
            "examples_filtered": 1.0,
            "batches_skipped": 1.0,
            "examples_bad_audio": 0.0,
        }[column]
    return out


def difference_block(text, reference):
    """Header words and the following lines of the printed difference table."""
    lines = text.split(f"Difference to {reference}, paired by seed")[1].splitlines()
    return lines[1].split(), lines[2:]


def cells_of(lines, label):
    """Cells of the difference-table row ``label`` (separated by 2+ spaces)."""
    (line,) = [line for line in lines if line.startswith(label + "  ")]
    return re.split(r" {2,}", line[len(label) :].strip())


def expected_cell(d, digits=2, scale=1.0):
    mean, low, high = (scale * d[k] for k in ("mean", "low", "high"))
    text = f"{mean:+.{digits}f} [{low:+.{digits}f}, {high:+.{digits}f}]"
    return text + (" *" if d["excludes_zero"] else "")


def test_difference_column_is_the_paired_seed_difference(sep_variants, tmp_path):
    printed = []
    out = tmp_path / "cmp"
    result = compare.compare(
        [str(sep_variants)], str(out), with_hardest=False, echo=printed.append
    )
    text = "\n".join(printed)
    (diff,) = result["differences"]
    assert diff["task"] == "separation" and diff["reference"] == "base"
    assert list(diff["variants"]) == ["better", "mixed"]
    better, mixed = diff["variants"]["better"], diff["variants"]["mixed"]
    assert better["paired_seeds"] == ["1", "2", "3"] and better["only_variant"] == []
    assert mixed["paired_seeds"] == ["1", "2", "3"] and mixed["only_variant"] == ["0"]

    # Every column of the table has its difference ...
    table_columns = list(compare.SEP_COLUMNS) + list(compare.COMMON_COLUMNS)
    assert list(better["metrics"]) == table_columns
    for variant in ("better", "mixed"):
        for column in table_columns:
            got = diff["variants"][variant]["metrics"][column]
            if column == "wall_time_s":  # no wall time in these runs
                assert got["n"] == 0 and math.isnan(got["mean"])
                continue
            mine, ref = per_seed(variant, column), per_seed("base", column)
            seeds = ["1", "2", "3"]
            want = seed_difference([mine[s] for s in seeds], [ref[s] for s in seeds])
            for key in ("mean", "low", "high"):
                assert got[key] == pytest.approx(want[key]), (variant, column, key)
            assert (got["n"], got["excludes_zero"]) == (3, want["excludes_zero"])

    # ... the fixture's point: better on every seed, mixed not.
    mean_better = better["metrics"]["si-snr_i_mean"]
    mean_mixed = mixed["metrics"]["si-snr_i_mean"]
    assert mean_better["excludes_zero"] and mean_better["low"] > 0
    assert not mean_mixed["excludes_zero"] and mean_mixed["low"] < 0
    assert mean_mixed["mean"] == pytest.approx((2.0 - 1.0 + 0.5) / 3)

    # The printed table: one line per column of the comparison table, one
    # column per variant, the numbers above with * exactly where the interval
    # excludes 0.
    header, lines = difference_block(text, "base")
    assert header == ["difference", "better", "mixed", "†"]  # mixed: unpaired seed
    assert cells_of(lines, "paired seeds") == ["3", "3"]
    for column in table_columns:
        want = []
        for variant in ("better", "mixed"):
            d = diff["variants"][variant]["metrics"][column]
            digits = 2 if column in compare.SEP_COLUMNS else 1
            want.append(expected_cell(d, digits) if d["n"] else "-")
        assert cells_of(lines, compare._label(column)) == want, column
    assert cells_of(lines, "SI-SNRi mean")[0].endswith("] *")
    assert cells_of(lines, "SI-SNRi mean")[1].endswith("]")
    assert "† seed 0 only in mixed: left out of the pairing mixed - base" in text

    # The JSON report carries the same intervals.
    summary = json.loads((out / "summary.json").read_text())
    (saved,) = summary["differences"]
    assert saved["reference"] == "base" and saved["confidence"] == 0.95
    for variant in ("better", "mixed"):
        for column in ("si-snr_i_mean", "si-snr_i_p10", "steps"):
            got = saved["variants"][variant]["metrics"][column]
            want = diff["variants"][variant]["metrics"][column]
            for key in ("mean", "low", "high"):
                assert got[key] == pytest.approx(want[key])
            assert (got["n"], got["excludes_zero"]) == (3, want["excludes_zero"])
    assert saved["variants"]["mixed"]["only_variant"] == ["0"]
    assert saved["variants"]["better"]["metrics"]["wall_time_s"]["mean"] is None


def test_reference_option_changes_the_reference(sep_variants, tmp_path, capsys):
    out = tmp_path / "cli"
    argv = [str(sep_variants), "--out", str(out), "--no-hardest"]
    assert compare.main(argv + ["--reference", "mixed"]) == 0
    text = capsys.readouterr().out
    assert "Difference to mixed, paired by seed" in text
    assert "Difference to base" not in text
    (saved,) = json.loads((out / "summary.json").read_text())["differences"]
    assert saved["reference"] == "mixed"
    assert list(saved["variants"]) == ["base", "better"]
    base = saved["variants"]["base"]
    assert base["paired_seeds"] == ["1", "2", "3"] and base["only_reference"] == ["0"]
    seeds = ["1", "2", "3"]
    mine, ref = per_seed("base", "si-snr_i_mean"), per_seed("mixed", "si-snr_i_mean")
    want = seed_difference([mine[s] for s in seeds], [ref[s] for s in seeds])
    got = base["metrics"]["si-snr_i_mean"]
    assert got["mean"] == pytest.approx(want["mean"]) and want["mean"] < 0
    assert (got["low"], got["high"]) == pytest.approx((want["low"], want["high"]))
    assert "† seed 0 only in mixed: left out of the pairing base - mixed" in text

    # The Python function's argument does the same. Against "better", the
    # baseline is worse on every seed: an interval below 0, marked too.
    printed = []
    result = compare.compare(
        [str(sep_variants)],
        str(tmp_path / "py"),
        with_hardest=False,
        echo=printed.append,
        reference="better",
    )
    (diff,) = result["differences"]
    assert diff["reference"] == "better" and list(diff["variants"]) == ["base", "mixed"]
    worse = diff["variants"]["base"]["metrics"]["si-snr_i_mean"]
    assert worse["high"] < 0 and worse["excludes_zero"]
    _header, lines = difference_block("\n".join(printed), "better")
    assert cells_of(lines, "SI-SNRi mean")[0] == expected_cell(worse)
    assert cells_of(lines, "SI-SNRi mean")[0].endswith("] *")
    # An unknown name is an error, not a silent default.
    assert compare.main(argv + ["--reference", "nope"]) == 2
    assert "--reference nope: not a variant" in capsys.readouterr().err


# -------------------------------------------------------------------- KWS
CLASSES = ["yes", "no", "_silence_", "_unknown_"]
# Variant -> seed -> how far the true class's logit is raised.
SKILL = {
    "kws_base": {"1": 1.0, "2": 1.5, "3": 0.7},
    "kws_isbl": {"1": 2.0, "2": 1.2},
}


def kws_scored_run(folder, seed, skill):
    """A KWS run with varied detection scores (80 utterances, 40 keywords)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(100 * int(seed) + int(10 * skill))
    labels = np.array([0, 1, 2, 3] * 20)
    logits = rng.normal(size=(80, 4))
    logits[np.arange(80), labels] += skill
    post = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    res = KWSResults(CLASSES, keywords=["yes", "no"], far_targets=[0.01, 0.05])
    res.append([f"u{i:02d}" for i in range(80)], post, labels)
    res.write(str(folder))
    write_hparams(folder, int(seed))


@pytest.fixture
def kws_variants(tmp_path):
    root = tmp_path / "kws"
    for variant, seeds in SKILL.items():
        for seed, skill in seeds.items():
            kws_scored_run(root / variant / seed, seed, skill)
    return root


def scores_from_csv(folder):
    """Keyword and non-keyword detection scores, read here from the run's files."""
    classes = json.loads((folder / "test_summary.json").read_text())["classes"]
    keywords = {c for c in classes if c not in ("_unknown_", "_silence_")}
    with open(folder / "test_results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    targets = [float(r["score"]) for r in rows if r["label"] in keywords]
    negatives = [float(r["score"]) for r in rows if r["label"] not in keywords]
    return targets, negatives


def test_det_curve_is_the_seed_mean_with_a_min_max_band(kws_variants, tmp_path):
    out = tmp_path / "cmp"
    printed = []
    result = compare.compare(
        [str(kws_variants)], str(out), with_hardest=False, echo=printed.append
    )
    assert (out / "det.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert str(out / "det.png") in result["files"]
    (ax,) = result["figures"]["det"].axes
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    lines = ax.get_lines()
    labels = [line.get_label() for line in lines]
    assert labels == ["kws_base (3 seeds)", "kws_isbl (2 seeds)"]
    assert len(ax.collections) == 2  # one band per variant (both have seeds)
    grid = lines[0].get_xdata()
    # From one false alarm in the 40 negative utterances to every one.
    assert grid[0] == pytest.approx(1 / 40) and grid[-1] == pytest.approx(1.0)
    assert len(grid) == compare.DET_POINTS
    assert ax.get_xlim()[0] == pytest.approx(1 / 40)
    for line, band, variant in zip(lines, ax.collections, SKILL):
        assert list(line.get_xdata()) == list(grid)
        frr = np.array(
            [
                [
                    frr_at_far(*scores_from_csv(kws_variants / variant / seed), far)[
                        "frr"
                    ]
                    for far in grid
                ]
                for seed in SKILL[variant]
            ]
        )
        assert frr.min() < frr.max()  # the seeds differ somewhere
        assert line.get_ydata() == pytest.approx(frr.mean(axis=0)), variant
        xs, lower, upper = band_limits(band)
        assert xs == pytest.approx(sorted(set(grid.tolist())))
        assert lower == pytest.approx(frr.min(axis=0)), variant
        assert upper == pytest.approx(frr.max(axis=0)), variant
        assert np.allclose(
            band.get_facecolor()[0][:3], matplotlib.colors.to_rgb(line.get_color())
        )
    # The table's accuracy difference is in percentage points.
    text = "\n".join(printed)
    (diff,) = result["differences"]
    assert diff["task"] == "kws" and diff["reference"] == "kws_base"
    acc = diff["variants"]["kws_isbl"]["metrics"]["accuracy"]
    assert acc["n"] == 2 and "accuracy (points)" in text
    _header, lines = difference_block(text, "kws_base")
    assert cells_of(lines, "accuracy (points)") == [expected_cell(acc, scale=100.0)]
    assert (
        "† seed 3 only in kws_base: left out of the pairing kws_isbl - kws_base" in text
    )
    # No separation runs, no subgroup figure.
    assert "subgroups" not in result["figures"]


def test_det_frr_matches_frr_at_far():
    rng = np.random.default_rng(0)
    pos, neg = rng.random(37), rng.random(23)
    neg[:4] = neg[4]  # ties among the negatives
    pos[:3] = neg[4]  # and targets scored exactly like them
    pos[3] = np.nextafter(neg[7], np.inf)  # a target exactly at a threshold
    fars = np.concatenate([[0.0, 1.0], np.arange(1, 24) / 23, rng.random(50)])
    want = [frr_at_far(pos, neg, f)["frr"] for f in fars]
    assert compare.det_frr(pos, neg, fars).tolist() == pytest.approx(want)


# -------------------------------------------------------------- subgroups
def test_subgroup_bars_are_seed_means_with_bootstrap_intervals(tmp_path):
    root = make_sep_variants(tmp_path / "results", subgroups=True)
    out = tmp_path / "cmp"
    result = compare.compare(
        [str(root)], str(out), with_hardest=False, echo=lambda s: None
    )
    assert (out / "subgroups.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (ax,) = result["figures"]["subgroups"].axes
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert [t.split("\n")[0] for t in ticks] == list(SUBGROUPS)
    # Seed 2 files one mixture more under "rest": 7 or 6 of the 20.
    assert ticks[0].split("\n")[1] == "(6-7 mixtures)"
    assert ticks[2].split("\n")[1] == "(6-7 mixtures)"
    bars = [c for c in ax.containers if isinstance(c, BarContainer)]
    assert [b.get_label() for b in bars] == [
        "base (3 seeds)",
        "better (3 seeds)",
        "mixed (4 seeds)",
    ]
    centres = []
    for bar, variant in zip(bars, GAIN):
        assert len(bar.patches) == len(SUBGROUPS)
        per_seed_means = {
            name: [
                float(
                    np.mean(
                        [
                            v
                            for i, v in enumerate(sisnri(variant, seed))
                            if subgroup_of(i, seed) == name
                        ]
                    )
                )
                for seed in GAIN[variant]
            ]
            for name in SUBGROUPS
        }
        heights = [p.get_height() for p in bar.patches]
        want = [np.mean(per_seed_means[name]) for name in SUBGROUPS]
        assert heights == pytest.approx(want), variant
        # Whiskers: percentile bootstrap over the seed means.
        segments = bar.errorbar.lines[2][0].get_segments()
        for name, segment in zip(SUBGROUPS, segments):
            boot = stats.bootstrap(
                (np.array(per_seed_means[name]),),
                np.mean,
                method="percentile",
                n_resamples=9999,
                rng=np.random.default_rng(0),
            ).confidence_interval
            ys = sorted(segment[:, 1])
            assert ys == pytest.approx([boot.low, boot.high]), (variant, name)
        centres.append([p.get_x() + p.get_width() / 2 for p in bar.patches])
    # One group per subgroup: the variants' bars side by side around each tick.
    centres = np.array(centres)
    assert np.all(np.diff(centres, axis=0) > 0)
    assert centres.mean(axis=0) == pytest.approx(ax.get_xticks())
    assert np.all(centres.max(axis=0)[:-1] < centres.min(axis=0)[1:])
    # The means differ from the mean over all mixtures of all seeds pooled.
    pooled = np.mean(
        [
            v
            for seed in GAIN["mixed"]
            for i, v in enumerate(sisnri("mixed", seed))
            if subgroup_of(i, seed) == "rest"
        ]
    )
    assert bars[2].patches[2].get_height() != pytest.approx(pooled)
    saved = json.loads((out / "summary.json").read_text())["subgroups"]
    assert saved["subgroups"] == list(SUBGROUPS)
    assert saved["variants"]["better"]["rest"]["mean"] == pytest.approx(
        bars[1].patches[2].get_height()
    )


def test_no_subgroup_figure_without_the_column(sep_variants, tmp_path):
    out = tmp_path / "cmp"
    result = compare.compare(
        [str(sep_variants)], str(out), with_hardest=False, echo=lambda s: None
    )
    assert "subgroups" not in result["figures"] and "det" not in result["figures"]
    assert not (out / "subgroups.png").exists() and not (out / "det.png").exists()
    assert json.loads((out / "summary.json").read_text())["subgroups"] is None
