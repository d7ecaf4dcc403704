"""Comparing recipe variants: run discovery, table values, figures, variants runner."""

import csv
import json
import math
import os
import re
import shlex
import subprocess
import sys
import textwrap
import time
import types
from pathlib import Path

import matplotlib.colors
import numpy as np
import pytest
import yaml
from hyperpyyaml import resolve_references
from speechbrain.dataio.dataset import DynamicItemDataset
from speechbrain.utils.train_logger import FileTrainLogger

from hardmine.brain import HardMiningBrain
from hardmine.isbl import ISBLSampler
from hardmine.tasks.kws_metrics import KWSResults
from hardmine.tasks.sep_metrics import write_test_results
from hardmine.tools import compare, variants

ROOT = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------ fake outputs
def write_mining_stats(folder, records, epoch_seconds=None):
    """mining_stats.jsonl through HardMiningBrain's own writer.

    With ``epoch_seconds`` each epoch is logged as having trained that long
    (the writer adds it up into ``wall_time_s``); without, the records carry
    no training time, as a run from before that field would.
    """
    for record in records:
        fake = types.SimpleNamespace(
            hparams=types.SimpleNamespace(output_folder=str(folder)),
            mining_stats={k: v for k, v in record.items() if k != "optimizer_step"},
            optimizer_step=record["optimizer_step"],
        )
        if epoch_seconds is not None:
            fake._epoch_started = time.time() - epoch_seconds
        HardMiningBrain._write_statistics(
            fake, record["epoch"] if "epoch" in record else 1
        )


def write_train_log(folder, train, valid, key):
    logger = FileTrainLogger(str(folder / "train_log.txt"))
    for epoch, (t, v) in enumerate(zip(train, valid), start=1):
        logger.log_stats(
            stats_meta={"epoch": epoch, "lr": 1.5e-4},
            train_stats={key: t, "batches": 10, "examples_filtered": 1},
            valid_stats={key: v},
            verbose=False,
        )
    logger.log_stats(
        stats_meta={"epoch loaded": len(train)},
        test_stats={key: valid[-1]},
        verbose=False,
    )


def write_hparams(folder, seed, sampler=False):
    """hyperparams.yaml as SpeechBrain saves it (references resolved)."""
    text = f"seed: {seed}\nbatch_size: 2\nthreshold: -30\n"
    if sampler:
        text += textwrap.dedent(
            f"""\
            mining_sampler: !include:{ROOT}/hparams/isbl.yaml
                batch_size: !ref <batch_size>
                transform: db_to_power
                seed: !ref <seed>
            """
        )
    recipe = folder / "recipe.yaml"
    recipe.write_text(text)
    with open(recipe) as f:
        resolved = resolve_references(f, {}).getvalue()
    recipe.unlink()
    (folder / "hyperparams.yaml").write_text("# yamllint disable\n" + resolved)


def sep_run(folder, seed, sisnri, curve, mining, sampler_ids=None, epoch_seconds=None):
    folder.mkdir(parents=True)
    rows = [
        {
            "snt_id": f"tt{i:03d}",
            "sdr": v + 1.0,
            "sdr_i": v + 0.5,
            "si-snr": v - 2.0,
            "si-snr_i": float(v),
        }
        for i, v in enumerate(sisnri)
    ]
    write_test_results(rows, folder / "test_results.csv", folder / "test_summary.json")
    write_train_log(folder, curve, [c - 1.0 for c in curve], "si-snr")
    write_mining_stats(folder, mining, epoch_seconds)
    if epoch_seconds is None:  # as if written before wall_time_s existed
        lines = (folder / "mining_stats.jsonl").read_text().splitlines()
        stripped = []
        for line in lines:
            record = json.loads(line)
            record.pop("wall_time_s"), record.pop("epoch_time_s")
            stripped.append(json.dumps(record))
        (folder / "mining_stats.jsonl").write_text("\n".join(stripped) + "\n")
    write_hparams(folder, seed, sampler=sampler_ids is not None)
    if sampler_ids is not None:
        save = folder / "save"
        save.mkdir()
        train_csv = save / "wsj_tr.csv"
        with open(train_csv, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["ID", "duration", "mix_wav", "s1_wav", "s2_wav"])
            for uid in sampler_ids:
                writer.writerow(
                    [uid, 1.0] + [f"/d/{s}/{uid}.wav" for s in ("mix", "s1", "s2")]
                )
        sampler = ISBLSampler(
            DynamicItemDataset.from_csv(str(train_csv)),
            batch_size=2,
            transform="db_to_power",
            epoch_length=100,
            seed=seed,
        )
        sampler.set_epoch(1)
        for batch in sampler:
            names = [sampler.ids[i] for i in batch]
            sampler.observe(names, [-float(sampler_ids.index(n)) for n in names])
        ckpt = save / "CKPT+2024-01-01+00-00-00+00"
        ckpt.mkdir()
        sampler._save(str(ckpt / "mining_sampler.ckpt"))
        (ckpt / "CKPT.yaml").write_text(yaml.safe_dump({"unixtime": 1.0}))


def mining_records(steps, filtered, skipped, entropy=None, weights_ess=None):
    out = []
    for e, (s, f, k) in enumerate(zip(steps, filtered, skipped), start=1):
        record = {
            "epoch": e,
            "optimizer_step": s,
            "batches": 10,
            "examples": 20,
            "examples_filtered": f,
            "examples_bad_audio": 0,
            "batches_skipped": k,
            "weights_ess": 2.0 - 0.1 * e if weights_ess is None else weights_ess[e - 1],
        }
        if entropy is not None:
            record["sampler_draw_entropy"] = entropy[e - 1]
            record["sampler_draw_ess_frac"] = entropy[e - 1] / 2
        out.append(record)
    return out


BASE = np.arange(20, dtype=float)  # SI-SNRi 0 .. 19 dB

# Per-epoch series of the two seeds of each variant. They differ, so that the
# plotted line (the mean over seeds) and the min-max band are both tested;
# their means are -2, -4, -5 (baseline) and -3, -5, -7 (ISBL) for the
# training curves, 2 - 0.1 e for the baseline's weight ESS, 1, 2, 3
# (baseline) and 2, 2, 2 (ISBL) examples filtered, 0.9, 0.8, 0.7 for the
# ISBL sampler entropy.
SEED_SERIES = {
    "sepformer_baseline": {
        "curve": {1: [-2.5, -5.0, -5.25], 2: [-1.5, -3.0, -4.75]},
        "weights_ess": {1: [1.8, 1.9, 1.5], 2: [2.0, 1.7, 1.9]},
        "filtered": {1: [0, 2, 4], 2: [2, 2, 2]},
    },
    "sepformer_isbl": {
        "curve": {1: [-4.0, -5.5, -9.0], 2: [-2.0, -4.5, -5.0]},
        "weights_ess": {1: [1.0, 1.3, 0.9], 2: [1.4, 0.9, 1.3]},
        "filtered": {1: [1, 2, 3], 2: [3, 2, 1]},
        "entropy": {1: [0.95, 0.85, 0.6], 2: [0.85, 0.75, 0.8]},
    },
}


@pytest.fixture
def sep_results(tmp_path):
    root = tmp_path / "results"
    ids = [f"mix{i}" for i in range(6)]
    base, isbl = SEED_SERIES["sepformer_baseline"], SEED_SERIES["sepformer_isbl"]
    for seed, shift in ((1, 0.0), (2, 1.0)):
        sep_run(
            root / "sepformer_baseline" / str(seed),
            seed,
            BASE + shift,
            base["curve"][seed],
            mining_records(
                [10, 20, 30],
                base["filtered"][seed],
                [0, 1, 0],
                weights_ess=base["weights_ess"][seed],
            ),
        )
        sep_run(
            root / "sepformer_isbl" / str(seed),
            seed,
            BASE + 3.0 + shift,
            isbl["curve"][seed],
            mining_records(
                [10, 20, 29 + seed],
                isbl["filtered"][seed],
                [1, 1, 1],
                isbl["entropy"][seed],
                weights_ess=isbl["weights_ess"][seed],
            ),
            sampler_ids=ids,
            epoch_seconds=7.0,
        )
    # Wall time from the variants runner for one run, from log.txt for another;
    # the ISBL runs have their training time in mining_stats.jsonl.
    (root / "sepformer_baseline" / "1" / "run_info.json").write_text(
        json.dumps({"wall_time_s": 12.5})
    )
    (root / "sepformer_baseline" / "2" / "log.txt").write_text(
        "2024-05-01 10:00:00,000 - speechbrain.core - INFO - start\n"
        "a traceback line without a time stamp\n"
        "2024-05-01 10:00:20,500 - speechbrain.core - INFO - end\n"
    )
    return root


# ------------------------------------------------------------------ tests
def test_discovery_names_bothand_seeds(sep_results, tmp_path):
    runs = compare.find_runs([str(sep_results)])
    labels = [compare.load_run(r, with_hardest=False).label for r in runs]
    assert labels == [
        "sepformer_baseline/1",
        "sepformer_baseline/2",
        "sepformer_isbl/1",
        "sepformer_isbl/2",
    ]
    # A run folder not named after its seed is its own variant.
    solo = tmp_path / "my_try"
    sep_run(solo, 5, BASE, [-1.0], mining_records([3], [0], [0]))
    run = compare.load_run(str(solo), with_hardest=False)
    assert (run.variant, run.seed, run.task) == ("my_try", "5", "separation")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        compare.find_runs([str(tmp_path / "nowhere")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no run output"):
        compare.find_runs([str(tmp_path / "empty")])


def test_table_values_from_known_results(sep_results, tmp_path):
    printed = []
    out = tmp_path / "cmp"
    result = compare.compare([str(sep_results)], str(out), echo=printed.append)
    text = "\n".join(printed)
    lines = {line.split()[0]: line for line in text.splitlines() if line.strip()}

    # Per-run means 9.5 and 10.5 -> 10.00 ± 0.71 across seeds; ISBL +3 dB.
    assert "10.00 ± 0.71" in lines["sepformer_baseline"]
    assert "13.00 ± 0.71" in lines["sepformer_isbl"]
    rows = {r["variant"]: r for r in result["rows"]}
    base = rows["sepformer_baseline"]
    assert base["n_seeds"] == 2 and base["seeds"] == ["1", "2"]
    assert base["si-snr_i_mean"]["mean"] == pytest.approx(10.0)
    assert base["si-snr_i_mean"]["std"] == pytest.approx(math.sqrt(0.5))
    p5 = [np.percentile(BASE, 5), np.percentile(BASE + 1, 5)]
    assert base["si-snr_i_p5"]["values"] == pytest.approx(p5)
    assert base["si-snr_i_p10"]["mean"] == pytest.approx(
        np.mean([np.percentile(BASE + s, 10) for s in (0, 1)])
    )
    assert base["si-snr_i_median"]["mean"] == pytest.approx(10.0)
    assert base["sdr_i_mean"]["mean"] == pytest.approx(10.5)
    # Counts from mining_stats.jsonl: last optimizer step, sums over epochs.
    assert base["steps"]["values"] == [30.0, 30.0]
    assert rows["sepformer_isbl"]["steps"]["values"] == [30.0, 31.0]
    assert base["examples_filtered"]["mean"] == 6.0
    assert base["batches_skipped"]["mean"] == 1.0
    assert rows["sepformer_isbl"]["batches_skipped"]["mean"] == 3.0
    # Wall time: run_info.json (12.5 s) and the log.txt span (20.5 s).
    assert base["wall_time_s"]["values"] == pytest.approx([12.5, 20.5])
    # 3 epochs of 7 s each, summed by the Brain's statistics writer.
    assert rows["sepformer_isbl"]["wall_time_s"]["values"] == pytest.approx(
        [21.0, 21.0], abs=0.2
    )
    assert "16.5 ± 5.7" in lines["sepformer_baseline"]

    # CSV and JSON carry the same numbers.
    with open(out / "summary.csv", newline="") as f:
        table = {r["variant"]: r for r in csv.DictReader(f)}
    assert float(table["sepformer_isbl"]["si-snr_i_mean_mean"]) == pytest.approx(13.0)
    assert float(table["sepformer_isbl"]["si-snr_i_mean_std"]) == pytest.approx(
        0.707107
    )
    summary = json.loads((out / "summary.json").read_text())
    assert [v["variant"] for v in summary["variants"]] == [
        "sepformer_baseline",
        "sepformer_isbl",
    ]
    with open(out / "runs.csv", newline="") as f:
        per_run = list(csv.DictReader(f))
    assert [float(r["si-snr_i_mean"]) for r in per_run] == [9.5, 10.5, 12.5, 13.5]


def test_figures_carry_one_series_per_variant(sep_results, tmp_path):
    out = tmp_path / "cmp"
    result = compare.compare([str(sep_results)], str(out), echo=lambda s: None)
    for name in ("cdf", "curves", "mining"):
        png = out / f"{name}.png"
        assert png.stat().st_size > 5000
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    figs = result["figures"]

    (cdf_ax,) = figs["cdf"].axes
    lines = cdf_ax.get_lines()
    assert [line.get_label() for line in lines] == [
        "sepformer_baseline",
        "sepformer_isbl",
    ]
    # Seeds pooled: 40 utterances per variant, the CDF ends at 1.
    x, y = lines[0].get_data()
    assert list(x[1:]) == sorted(np.concatenate([BASE, BASE + 1]))
    assert (x[0], y[0], y[-1]) == (0.0, 0.0, 1.0)
    assert y[20] == pytest.approx(0.5)  # half of the mixtures at or below x[20]

    (curve_ax,) = figs["curves"].axes
    labels = [line.get_label() for line in curve_ax.get_lines()]
    assert labels == [
        "sepformer_baseline train",
        "sepformer_baseline valid",
        "sepformer_isbl train",
        "sepformer_isbl valid",
    ]
    train = curve_ax.get_lines()[2]
    assert list(train.get_xdata()) == [1, 2, 3]
    assert list(train.get_ydata()) == pytest.approx([-3.0, -5.0, -7.0])

    entropy, ess, weights, filtered = figs["mining"].axes
    # Only the ISBL variant logs a sampler distribution.
    assert [line.get_label() for line in entropy.get_lines()] == ["sepformer_isbl"]
    assert list(entropy.get_lines()[0].get_ydata()) == pytest.approx([0.9, 0.8, 0.7])
    assert list(ess.get_lines()[0].get_ydata()) == pytest.approx([0.45, 0.4, 0.35])
    assert [line.get_label() for line in weights.get_lines()] == [
        "sepformer_baseline",
        "sepformer_isbl",
    ]
    # weights_ess / (examples / batches) = (2 - 0.1 e) / 2
    assert list(weights.get_lines()[0].get_ydata()) == pytest.approx([0.95, 0.9, 0.85])
    assert list(filtered.get_lines()[0].get_ydata()) == pytest.approx([0.05, 0.1, 0.15])
    # ... and the ISBL variant's own weights and filtered shares.
    assert list(weights.get_lines()[1].get_ydata()) == pytest.approx([0.6, 0.55, 0.55])
    assert list(filtered.get_lines()[1].get_ydata()) == pytest.approx([0.1, 0.1, 0.1])
    assert [line.get_label() for line in filtered.get_lines()] == [
        "sepformer_baseline",
        "sepformer_isbl",
    ]

    # Every line is the mean of the variant's two seeds, with a band from
    # the lower to the higher seed at each epoch.
    def seeds(variant, key, scale=1.0, offset=0.0):
        series = SEED_SERIES[variant][key]
        return [[v * scale + offset for v in series[seed]] for seed in (1, 2)]

    assert_seed_bands(
        curve_ax,
        [
            (f"{variant} {split}", seeds(variant, "curve", offset=offset))
            for variant in ("sepformer_baseline", "sepformer_isbl")
            for split, offset in (("train", 0.0), ("valid", -1.0))
        ],
    )
    assert_seed_bands(entropy, [("sepformer_isbl", seeds("sepformer_isbl", "entropy"))])
    assert_seed_bands(
        ess, [("sepformer_isbl", seeds("sepformer_isbl", "entropy", scale=0.5))]
    )
    both = ("sepformer_baseline", "sepformer_isbl")
    # examples / batches = 2 per batch; 20 examples per epoch
    assert_seed_bands(weights, [(v, seeds(v, "weights_ess", scale=0.5)) for v in both])
    assert_seed_bands(filtered, [(v, seeds(v, "filtered", scale=1 / 20)) for v in both])


def band_limits(band):
    """Epochs and the lower and upper edges of a ``fill_between`` band."""
    (path,) = band.get_paths()
    xy = np.asarray(path.vertices)
    xs = sorted(set(xy[:, 0].tolist()))
    lower = [float(xy[xy[:, 0] == x, 1].min()) for x in xs]
    upper = [float(xy[xy[:, 0] == x, 1].max()) for x in xs]
    return xs, lower, upper


def assert_seed_bands(ax, expected):
    """Lines of ``ax`` are the seed means, its bands the seeds' min-max range.

    ``expected`` lists ``(label, per-seed values by epoch 1, 2, ...)`` in
    plotting order.
    """
    lines = ax.get_lines()
    assert [line.get_label() for line in lines] == [label for label, _ in expected]
    assert len(ax.collections) == len(expected)  # one band per line
    for line, band, (label, per_seed) in zip(lines, ax.collections, expected):
        values = np.asarray(per_seed, dtype=float)
        epochs = list(range(1, values.shape[1] + 1))
        assert list(line.get_xdata()) == epochs, label
        assert list(line.get_ydata()) == pytest.approx(values.mean(axis=0)), label
        xs, lower, upper = band_limits(band)
        assert xs == epochs, label
        assert lower == pytest.approx(values.min(axis=0)), label
        assert upper == pytest.approx(values.max(axis=0)), label
        assert np.allclose(
            band.get_facecolor()[0][:3], matplotlib.colors.to_rgb(line.get_color())
        ), label


def _fake_run(variant, seed, weights_ess, train_loss):
    run = compare.Run(f"/r/{variant}/{seed}", variant, str(seed))
    run.mining = [
        {"epoch": e, "batches": 4, "examples": 8, "weights_ess": w}
        for e, w in enumerate(weights_ess, start=1)
    ]
    run.epochs = [
        {
            "meta": {"epoch": e},
            "train": {"loss": v},
            "valid": {"loss": v + 1},
            "test": {},
        }
        for e, v in enumerate(train_loss, start=1)
    ]
    return run


def test_seed_band_is_the_mean_and_range_over_the_seeds_present():
    """Three seeds, one of them stopped after two epochs: the line is the mean
    of the seeds that reached each epoch, the band their min and max (not a
    midpoint, the last seed or a standard-deviation band)."""
    runs = [
        _fake_run("isbl", 1, [1.0, 1.0, 2.0], [3.0, 2.0, 1.0]),
        _fake_run("isbl", 2, [2.0, 1.5, 4.0], [4.0, 2.5, 2.0]),
        _fake_run("isbl", 3, [6.0, 3.5], [8.0, 6.0]),
        _fake_run("plain", 1, [1.2, 1.4, 1.6], [5.0, 4.0, 3.0]),
    ]
    weights = compare.plot_mining(runs).axes[2]
    lines = weights.get_lines()
    assert [line.get_label() for line in lines] == ["isbl", "plain"]
    # weights_ess * batches / examples = weights_ess / 2
    assert list(lines[0].get_ydata()) == pytest.approx([1.5, 1.0, 1.5])
    assert list(lines[1].get_ydata()) == pytest.approx([0.6, 0.7, 0.8])
    assert len(weights.collections) == 1  # a single seed has no band
    xs, lower, upper = band_limits(weights.collections[0])
    assert xs == [1, 2, 3]
    assert lower == pytest.approx([0.5, 0.5, 1.0])
    assert upper == pytest.approx([3.0, 1.75, 2.0])

    (curves,) = compare.plot_curves(runs).axes
    train = curves.get_lines()[0]
    assert train.get_label() == "isbl train"
    assert list(train.get_ydata()) == pytest.approx([5.0, 3.5, 1.5])
    xs, lower, upper = band_limits(curves.collections[0])
    assert (lower, upper) == ([3.0, 2.0, 1.0], [8.0, 6.0, 2.0])


def test_compare_shows_hardest_examples(sep_results, tmp_path):
    printed = []
    out = tmp_path / "cmp"
    compare.compare([str(sep_results)], str(out), top=2, echo=printed.append)
    text = "\n".join(printed)
    assert "Hardest training examples, sepformer_isbl/1" in text
    assert "Hardest training examples, sepformer_baseline" not in text
    with open(out / "hardest_sepformer_isbl_2.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    # Losses were -index: mix0 is the hardest.
    trained = [r for r in rows if r["status"] == "trained"]
    assert [r["id"] for r in trained] == sorted(
        (r["id"] for r in trained), key=lambda u: int(u[3:])
    )
    assert rows[0]["mix_wav"] == f"/d/mix/{rows[0]['id']}.wav"
    block = text.split("Hardest training examples, sepformer_isbl/1")[1]
    shown = [line.split()[1] for line in block.splitlines()[2:4]]
    assert shown == [trained[0]["id"], trained[1]["id"]]


def kws_run(folder, seed, correct_mask, frr_pair):
    """A KWS run written with KWSResults (the recipe's writer)."""
    folder.mkdir(parents=True)
    classes = ["yes", "no", "_silence_", "_unknown_"]
    res = KWSResults(classes, keywords=["yes", "no"], far_targets=[0.01, 0.05])
    labels = np.array([0, 1, 2, 3] * 5)
    post = np.full((20, 4), 0.1)
    for i, (lab, ok) in enumerate(zip(labels, correct_mask)):
        post[i, lab if ok else (lab + 1) % 4] = 0.7
    res.append([f"k{i:02d}" for i in range(20)], post, labels)
    res.write(str(folder))
    write_hparams(folder, seed)
    logger = FileTrainLogger(str(folder / "train_log.txt"))
    for epoch, acc in ((1, 0.6), (2, 0.8)):
        valid = {"loss": 1.2 / epoch, "error": 1 - acc, "accuracy": acc}
        valid.update({"frr@far0.01": 0.5 / epoch, "frr@far0.05": 0.4 / epoch})
        logger.log_stats(
            {"epoch": epoch, "lr": 0.002},
            train_stats={"loss": 1.0 / epoch, "batches": 3},
            valid_stats=valid,
            verbose=False,
        )
    return res.summary()


def test_kws_accuracy_and_false_rejects(tmp_path):
    root = tmp_path / "results"
    s1 = kws_run(root / "kws_baseline" / "1986", 1986, [True] * 16 + [False] * 4, None)
    s2 = kws_run(root / "kws_isbl" / "1986", 1986, [True] * 19 + [False], None)
    printed = []
    result = compare.compare([str(root)], str(tmp_path / "cmp"), echo=printed.append)
    rows = {r["variant"]: r for r in result["rows"]}
    assert rows["kws_baseline"]["accuracy"]["mean"] == pytest.approx(0.8)
    assert rows["kws_isbl"]["accuracy"]["mean"] == pytest.approx(0.95)
    for row, summary in ((rows["kws_baseline"], s1), (rows["kws_isbl"], s2)):
        for far in ("0.01", "0.05"):
            assert row[f"frr@far{far}"]["mean"] == pytest.approx(
                summary["frr_at_far"][far]["frr"]
            )
    text = "\n".join(printed)
    assert "Keyword spotting" in text and "80.00%" in text and "95.00%" in text
    assert "FRR@FA 1%" in text
    # Keyword-utterance score CDF per variant; curves for loss, error, ...
    (ax,) = result["figures"]["cdf"].axes
    assert [line.get_label() for line in ax.get_lines()] == ["kws_baseline", "kws_isbl"]
    assert len(ax.get_lines()[0].get_xdata()) == 11  # 10 yes/no utterances + start
    curve_axes = result["figures"]["curves"].axes
    # error = 1 - accuracy is left out; the next four validation metrics shown.
    titles = [ax.get_title() for ax in curve_axes]
    assert titles == ["loss", "accuracy", "frr@far0.01", "frr@far0.05"]
    acc = curve_axes[1].get_lines()
    assert [line.get_label() for line in acc] == [
        "kws_baseline valid",
        "kws_isbl valid",
    ]
    assert list(acc[0].get_ydata()) == pytest.approx([0.6, 0.8])


def test_train_log_with_mining_stats_and_resume(tmp_path):
    path = tmp_path / "train_log.txt"
    logger = FileTrainLogger(str(path))
    for epoch in (1, 2, 2):  # epoch 2 logged again after a resume
        logger.log_stats(
            {"epoch": epoch, "lr": 1.5e-4},
            train_stats={
                "si-snr": -1.0 * epoch,
                "sampler_draw_entropy": 0.5,
                "batches": 4,
            },
            valid_stats={"si-snr": -2.0 * epoch},
            verbose=False,
        )
    logger.log_stats({"epoch loaded": 2}, test_stats={"si-snr": -4.5}, verbose=False)
    records = compare.parse_train_log(str(path))
    assert len(records) == 4
    assert records[0]["train"] == {
        "si-snr": -1.0,
        "sampler_draw_entropy": 0.5,
        "batches": 4,
    }
    assert records[0]["meta"] == {"epoch": 1, "lr": 1.5e-4}
    assert records[3]["test"] == {"si-snr": -4.5}
    assert records[3]["meta"] == {"epoch loaded": 2}


def test_command_line(sep_results, tmp_path, capsys):
    out = tmp_path / "cli"
    assert compare.main([str(sep_results / "sepformer_isbl"), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert (
        "sepformer_isbl" in text
        and "sepformer_baseline" not in text.split("Hardest")[0]
    )
    assert (out / "summary.csv").exists()
    assert compare.main([str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


# --------------------------------------------------------------- variants
FAKE_RECIPE = '''\
"""Stand-in recipe: honours overrides like train.py, writes the recipes' files.

Torch-free so that it starts fast; the real writers are exercised above.
"""
import csv, json, os, sys
from hyperpyyaml import load_hyperpyyaml

args = sys.argv[1:]
yaml_file, rest = args[0], args[1:]
overrides, run_opts = {}, {}
for key, value in zip(rest[::2], rest[1::2]):
    key = key[2:]
    target = run_opts if key == "optimizer_step_limit" else overrides
    target[key] = value if key == "output_folder" else json.loads(value)
with open(yaml_file) as f:
    h = load_hyperpyyaml(f, overrides)
if h["fail"]:
    sys.exit("this variant is broken on purpose")
out = h["output_folder"]
os.makedirs(out, exist_ok=True)
if h.get("template"):  # files of a real run (sampler checkpoint ...) to start from
    import shutil
    shutil.copytree(h["template"], out, dirs_exist_ok=True)
with open(os.path.join(out, "seen.json"), "w") as f:
    json.dump({"cwd": os.getcwd(), "run_opts": run_opts, "epochs": h["n_ep"],
               "seed": h["seed"], "extra": h["extra"]}, f)
with open(os.path.join(out, "train_log.txt"), "w") as f:
    for epoch in range(1, h["n_ep"] + 1):
        f.write(f"epoch: {epoch} - train si-snr: {-epoch:.2e} - "
                f"valid si-snr: {-1.5 * epoch:.2e}\\n")
values = [h["quality"] + h["seed"] + i for i in range(3)]
with open(os.path.join(out, "test_results.csv"), "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["snt_id", "sdr", "sdr_i", "si-snr", "si-snr_i"])
    for i, v in enumerate(values):
        writer.writerow([f"t{i}", 0.0, 0.0, 0.0, v])
    writer.writerow(["avg", 0.0, 0.0, 0.0, sum(values) / 3])
print("trained", h["quality"], h["seed"])
'''

VARIANT_YAML = """\
seed: 1
quality: {quality}
fail: {fail}
extra: 0
n_ep: 5
output_folder: !ref results/fake/<seed>
counter: !new:collections.Counter
epoch_counter: !new:collections.OrderedDict
    limit: !ref <n_ep>
"""


@pytest.fixture
def fake_recipe(tmp_path):
    recipe = tmp_path / "recipe"
    (recipe / "hparams").mkdir(parents=True)
    (recipe / "train.py").write_text(FAKE_RECIPE)
    for name, quality, fail in (("plain", 0, "false"), ("mined", 10, "false")):
        (recipe / "hparams" / f"{name}.yaml").write_text(
            VARIANT_YAML.format(quality=quality, fail=fail)
        )
    (recipe / "hparams" / "broken.yaml").write_text(
        VARIANT_YAML.format(quality=0, fail="true")
    )
    return recipe


def test_comparison_reports_are_skipped_not_runs(sep_results, tmp_path, capsys):
    report = sep_results / "compare"
    assert compare.main([str(sep_results), "--out", str(report)]) == 0
    assert compare.is_report(str(report))
    capsys.readouterr()
    # As a shell glob such as results/*/ would give them, the report included.
    paths = sorted(str(p) for p in sep_results.iterdir())
    assert str(report) in paths
    out = tmp_path / "again"
    assert compare.main([*paths, "--out", str(out)]) == 0
    assert (
        f"Skipped (comparison reports, not runs): {report}" in capsys.readouterr().out
    )
    with open(out / "runs.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 4
    # Only reports: nothing to compare.
    assert compare.main([str(report), "--out", str(tmp_path / "x")]) == 2
    assert "comparison report(s), no run output" in capsys.readouterr().err


def test_plan_names_and_flat_folders(fake_recipe, tmp_path):
    train = str(fake_recipe / "train.py")
    files = ["hparams/plain.yaml", "hparams/mined.yaml"]
    plan = variants.plan_runs(
        train, files, [4], str(tmp_path), names=["a", "b"], seed_folders=False
    )
    assert [(r.variant, r.output_folder) for r in plan] == [
        ("a", str(tmp_path / "a")),
        ("b", str(tmp_path / "b")),
    ]
    with pytest.raises(variants.ConfigError, match="^--seeds: several seeds"):
        variants.plan_runs(train, files, [1, 2], str(tmp_path), seed_folders=False)
    with pytest.raises(variants.ConfigError, match="^names: 1 names for 2"):
        variants.plan_runs(train, files, [1], str(tmp_path), names=["a"])


def test_progress_gets_each_console_line(fake_recipe, tmp_path):
    plan = variants.plan_runs(
        str(fake_recipe / "train.py"), ["hparams/plain.yaml"], [1], str(tmp_path)
    )
    lines = []
    (outcome,) = variants.run_variants(
        plan, echo=lambda text: None, progress=lambda spec, line: lines.append(line)
    )
    assert outcome["status"] == "done" and lines == ["trained 0 1"]
    console = tmp_path / "plain" / "1" / "variants_console.txt"
    assert console.read_text() == "trained 0 1\n"
    assert variants.console_tail(str(console)) == "trained 0 1\n"


def test_epoch_field_follows_the_counter(fake_recipe, tmp_path):
    assert variants.epoch_field(str(fake_recipe / "hparams" / "plain.yaml")) == "n_ep"
    real = ROOT / "recipes" / "WSJ0Mix" / "separation" / "hparams" / "sepformer.yaml"
    if real.exists():
        assert variants.epoch_field(str(real)) == "N_epochs"
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: 0.1\n")
    with pytest.raises(variants.ConfigError, match="^--epochs"):
        variants.epoch_field(str(bad))


def test_plan_checks_its_inputs(fake_recipe, tmp_path):
    train = str(fake_recipe / "train.py")
    with pytest.raises(variants.ConfigError, match="^--seeds: repeated"):
        variants.plan_runs(train, ["hparams/plain.yaml"], [1, 1], str(tmp_path))
    with pytest.raises(variants.ConfigError, match="^--step-budget"):
        variants.plan_runs(
            train, ["hparams/plain.yaml"], [1], str(tmp_path), step_budget=0
        )
    with pytest.raises(variants.ConfigError, match="share the folder plain/"):
        variants.plan_runs(
            train,
            ["hparams/plain.yaml", str(tmp_path / "plain.yaml")],
            [1],
            str(tmp_path),
        )
    with pytest.raises(FileNotFoundError, match="variant YAML hparams/nope.yaml"):
        variants.plan_runs(train, ["hparams/nope.yaml"], [1], str(tmp_path))
    with pytest.raises(FileNotFoundError, match="recipe script"):
        variants.plan_runs(str(tmp_path / "no.py"), ["x.yaml"], [1], str(tmp_path))


def test_bothruns_each_seed_then_compares(fake_recipe, tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    out = tmp_path / "out"
    printed = []
    argv = [str(fake_recipe / "train.py"), "hparams/plain.yaml", "hparams/mined.yaml"]
    argv += ["hparams/broken.yaml", "--seeds", "1", "2", "--step-budget", "7"]
    argv += ["--epochs", "3", "--out", str(out), "--", "--extra", "4"]
    code = variants.main(argv, echo=printed.append)
    text = "\n".join(printed)
    assert code == 1, text  # the broken variant failed, the others ran
    assert "[1/6] plain seed 1: training" in text
    assert "[5/6] broken seed 1: FAILED" in text and "broken on purpose" in text
    for name in ("plain", "mined"):
        for seed in (1, 2):
            seen = json.loads((out / name / str(seed) / "seen.json").read_text())
            assert seen == {
                "cwd": str(fake_recipe),
                "run_opts": {"optimizer_step_limit": 7},
                "epochs": 3,
                "seed": seed,
                "extra": 4,
            }
            info = json.loads((out / name / str(seed) / "run_info.json").read_text())
            assert info["returncode"] == 0 and info["wall_time_s"] > 0
    assert json.loads((out / "broken" / "1" / "run_info.json").read_text())[
        "returncode"
    ]
    # The comparison covers the successful runs: means (0+1+2)/3 + quality + seed.
    with open(out / "compare" / "summary.csv", newline="") as f:
        table = {r["variant"]: r for r in csv.DictReader(f)}
    assert set(table) == {"plain", "mined"}
    assert float(table["plain"]["si-snr_i_mean_mean"]) == pytest.approx(2.5)
    assert float(table["mined"]["si-snr_i_mean_mean"]) == pytest.approx(12.5)
    assert float(table["mined"]["wall_time_s_mean"]) > 0
    assert (out / "compare" / "curves.png").exists()

    # A second call skips the finished runs.
    printed.clear()
    argv2 = [str(fake_recipe / "train.py"), "hparams/plain.yaml", "--seeds", "1"]
    assert variants.main(argv2 + ["--out", str(out)], echo=printed.append) == 0
    assert "already has test results" in printed[0]


def test_dry_run_prints_commands(fake_recipe, tmp_path):
    printed = []
    argv = [str(fake_recipe / "train.py"), "hparams/plain.yaml", "--seeds", "3"]
    argv += ["--out", str(tmp_path / "o"), "--dry-run", "--", "--lr", "0.1"]
    assert variants.main(argv, echo=printed.append) == 0
    (line,) = printed
    assert f"--seed 3 --output_folder {tmp_path / 'o' / 'plain' / '3'}" in line
    assert line.endswith("--lr 0.1)")
    assert not (tmp_path / "o").exists()


def readme_commands(section):
    """The first ```bash block of one ``## section`` of README.md."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    body = re.search(rf"^## {re.escape(section)}\n(.*?)(?=^## )", text, re.M | re.S)
    return re.search(r"^```bash\n(.*?)^```", body.group(1), re.M | re.S).group(1)


@pytest.mark.slow
def test_readme_comparing_variants_commands_work_as_written(tmp_path):
    """README "Comparing variants", run as written on a stand-in recipe.

    Only the recipe folder changes (a fast fake with the same hparams file
    names and fields); seeds, budget, folders, the shell glob and the
    overrides are the README's.
    """
    commands = readme_commands("Comparing variants")
    real = "recipes/WSJ0Mix/separation/"
    assert real in commands
    recipe = tmp_path / "recipe"
    (recipe / "hparams").mkdir(parents=True)
    (recipe / "train.py").write_text(FAKE_RECIPE)
    # Every override after "--" is a field of the recipe's YAML files.
    overrides = shlex.split(commands.replace("\\\n", " "))
    overrides = overrides[overrides.index("--") + 1 :]
    overrides = (
        overrides[: overrides.index("python")] if "python" in overrides else overrides
    )
    fields = "".join(f"{k[2:]}: 0\n" for k in overrides[::2])
    # The ISBL variant's runs start from the files of a run with a sampler
    # checkpoint, for the hardest-examples command.
    template = tmp_path / "template"
    ids = [f"mix{i}" for i in range(6)]
    sep_run(
        template,
        1,
        BASE,
        [-1.0, -2.0],
        mining_records([5, 10], [0, 0], [0, 0]),
        sampler_ids=ids,
    )
    for name, quality, start in (
        ("sepformer", 0, "null"),
        ("sepformer_isbl", 5, template),
    ):
        (recipe / "hparams" / f"{name}.yaml").write_text(
            VARIANT_YAML.format(quality=quality, fail="false")
            + f"template: {start}\n"
            + fields
        )
    script = "set -e\n" + commands.replace(real, f"{recipe}/")
    script = re.sub(r"^python ", f"{shlex.quote(sys.executable)} ", script, flags=re.M)
    work = tmp_path / "work"
    work.mkdir()
    done = subprocess.run(
        ["bash", "-c", script], cwd=work, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]

    results = work / "results" / "compare"
    seen = json.loads((results / "sepformer_isbl" / "2" / "seen.json").read_text())
    assert seen["epochs"] == 5 and seen["seed"] == 2  # --epochs 5, --seeds 1 2 3
    assert sorted(os.listdir(results / "sepformer")) == ["1", "2", "3"]
    # The variants runner's own report, then the documented second comparison,
    # which skipped that report among the glob's folders.
    for report in ("compare", "report"):
        with open(results / report / "summary.csv", newline="") as f:
            rows = {r["variant"]: r for r in csv.DictReader(f)}
        assert set(rows) == {"sepformer", "sepformer_isbl"}
        assert {r["n_seeds"] for r in rows.values()} == {"3"}
        assert float(rows["sepformer_isbl"]["si-snr_i_mean_mean"]) == pytest.approx(8.0)
    assert (
        "Skipped (comparison reports, not runs): results/compare/compare/"
        in done.stdout
    )
    # hardmine.tools.hardest on the ISBL run of seed 1: the sampler's ranking.
    assert "checkpoint: results/compare/sepformer_isbl/1/save/CKPT+" in done.stdout
    assert "mix5" in done.stdout.split("checkpoint:")[-1]


@pytest.mark.slow
def test_real_recipe_bothcompare_and_hardest(tmp_path):
    """Two variants of the WSJ0Mix recipe on generated data, compared end to end."""
    from hardmine.synthetic.layouts import make_wsj0mix
    from hardmine.tasks.separation import TINY_OVERRIDES
    from hardmine.tools import hardest

    data = make_wsj0mix(
        str(tmp_path / "data"), sizes={"tr": 6, "cv": 2, "tt": 3}, seconds=0.5
    )
    recipe = ROOT / "recipes" / "WSJ0Mix" / "separation"
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "hardmine.tools.variants", str(recipe / "train.py")]
    cmd += ["hparams/sepformer.yaml", "hparams/sepformer_isbl.yaml", "--seeds", "3"]
    cmd += ["--epochs", "1", "--out", str(out), "--", *TINY_OVERRIDES["sepformer"]]
    cmd += ["--data_folder", data, "--num_workers", "0", "--noprogressbar"]
    proc = subprocess.run(
        cmd, cwd=str(tmp_path), capture_output=True, text=True, timeout=400
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    text = proc.stdout
    assert "Separation (2 runs" in text
    with open(out / "compare" / "runs.csv", newline="") as f:
        runs = {r["variant"]: r for r in csv.DictReader(f)}
    assert set(runs) == {"sepformer", "sepformer_isbl"}
    for variant, run in runs.items():
        folder = out / variant / "3"
        with open(folder / "test_results.csv", newline="") as f:
            utts = [r for r in csv.DictReader(f) if r["snt_id"] != "avg"]
        assert len(utts) == 3
        mean = np.mean([float(r["si-snr_i"]) for r in utts])
        assert float(run["si-snr_i_mean"]) == pytest.approx(mean, rel=1e-5)
        # --epochs reached the recipe's N_epochs: one epoch of 6 mixtures.
        assert float(run["steps"]) == 6 and float(run["epochs"]) == 1
    # ISBL run: hardest examples from its saved sampler and training list.
    report = hardest.report_for_run(str(out / "sepformer_isbl" / "3"))
    assert report is not None and len(report) == 6
    assert os.path.basename(report.train_csv) == "wsj_tr.csv"
    assert all(r["mix_wav"].startswith(data) for r in report.rows)
    assert "Hardest training examples, sepformer_isbl/3" in text
    assert (out / "compare" / "hardest_sepformer_isbl_3.csv").exists()
    assert hardest.report_for_run(str(out / "sepformer" / "3")) is None
