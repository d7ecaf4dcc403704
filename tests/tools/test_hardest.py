"""Hardest-examples report: ranking, CSV joins, reading saved sampler checkpoints."""

import csv
import math
import os
import textwrap

import numpy as np
import pytest
import yaml
from hyperpyyaml import resolve_references
from scipy.stats import chisquare
from speechbrain.dataio.dataset import DynamicItemDataset

from hardmine.isbl import ISBLSampler
from hardmine.tools import hardest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def write_sep_csv(path, ids, root="/corpus/wav8k/min/tr"):
    """A training list in the WSJ0-mix preparation layout."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            ["ID", "duration", "mix_wav", "mix_wav_format", "mix_wav_opts"]
            + ["s1_wav", "s1_wav_format", "s1_wav_opts"]
            + ["s2_wav", "s2_wav_format", "s2_wav_opts"]
        )
        for uid in ids:
            row = [uid, "1.5", f"{root}/mix/{uid}.wav", "wav", ""]
            row += [
                f"{root}/s1/{uid}.wav",
                "wav",
                "",
                f"{root}/s2/{uid}.wav",
                "wav",
                "",
            ]
            writer.writerow(row)
    return path


def write_kws_csv(path, rows):
    """A Speech Commands training list: ID, duration, wav, start, stop, command, pool."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["ID", "duration", "wav", "start", "stop", "command", "pool"])
        for uid, command in rows:
            pool = "negatives" if command.startswith("_") else "targets"
            writer.writerow(
                [uid, "1.0", f"$data_root/{command}/{uid}.wav", 0, 16000, command, pool]
            )
    return path


def sep_sampler(csv_path, **kwargs):
    dataset = DynamicItemDataset.from_csv(csv_path)
    options = dict(batch_size=2, alpha=1.0, transform="db_to_power", seed=3)
    options.update(kwargs)
    return ISBLSampler(dataset, **options), dataset


def run_epoch(sampler, epoch, losses):
    """Draw an epoch and feed back the fixed per-example losses of ``losses``."""
    sampler.set_epoch(epoch)
    for batch in sampler:
        ids = [sampler.ids[i] for i in batch]
        sampler.observe(ids, np.array([losses[u] for u in ids]))


def saved_hparams(run_dir, sampler_lines, seed=7):
    """Write hyperparams.yaml the way SpeechBrain does: references resolved."""
    recipe = os.path.join(run_dir, "recipe.yaml")
    with open(recipe, "w") as f:
        f.write(
            textwrap.dedent(
                f"""\
                seed: {seed}
                batch_size: 2
                output_folder: !ref results/isbl/<seed>
                isbl_alpha: 1.0
                mining_sampler: !include:{REPO}/hparams/isbl.yaml
                """
            )
            + textwrap.indent(sampler_lines, "    ")
        )
    with open(recipe) as f:
        resolved = resolve_references(f, {}).getvalue()
    os.remove(recipe)
    with open(os.path.join(run_dir, "hyperparams.yaml"), "w") as f:
        f.write("# Generated from: recipe.yaml\n# yamllint disable\n" + resolved)


def save_checkpoint(sampler, run_dir, name, unixtime):
    folder = os.path.join(run_dir, "save", name)
    os.makedirs(folder, exist_ok=True)
    sampler._save(os.path.join(folder, "mining_sampler.ckpt"))
    with open(os.path.join(folder, "CKPT.yaml"), "w") as f:
        yaml.safe_dump({"end-of-epoch": True, "unixtime": unixtime}, f)


SEP_SAMPLER = """\
alpha: !ref <isbl_alpha>
transform: db_to_power
batch_size: !ref <batch_size>
seed: !ref <seed>
"""


def sep_run_folder(tmp_path, n):
    """A run folder with saved ISBL hparams and a training list of ``n`` mixtures."""
    run = tmp_path / "run"
    (run / "save").mkdir(parents=True)
    ids = [f"m{i}" for i in range(n)]
    train_csv = write_sep_csv(run / "save" / "train.csv", ids)
    saved_hparams(str(run), SEP_SAMPLER)
    return run, ids, train_csv


def test_rank_orders_by_latest_loss_and_joins_paths(tmp_path):
    ids = [f"mix{i:02d}" for i in range(12)]
    csv_path = write_sep_csv(tmp_path / "wsj_tr.csv", ids)
    sampler, dataset = sep_sampler(csv_path, epoch_length=200)
    rng = np.random.default_rng(0)
    # Negative SI-SNR in dB: the later loss of each example is what counts.
    run_epoch(sampler, 1, {u: 0.0 for u in ids})
    latest = {u: float(v) for u, v in zip(ids, rng.uniform(-25, 5, len(ids)))}
    run_epoch(sampler, 2, latest)

    rows = hardest.rank_examples(sampler, table=dataset.data)
    assert [r["id"] for r in rows] == sorted(ids, key=lambda u: -latest[u])
    assert [r["rank"] for r in rows] == list(range(1, 13))
    for row in rows:
        assert row["status"] == "trained"
        assert row["loss"] == pytest.approx(latest[row["id"]], abs=1e-9)
        assert row["mix_wav"] == f"/corpus/wav8k/min/tr/mix/{row['id']}.wav"
        assert row["s2_wav"] == f"/corpus/wav8k/min/tr/s2/{row['id']}.wav"
        assert "mix_wav_format" not in row
        assert row["duration"] == 1.5
    probs = sampler.draw_probabilities()
    counts = sampler.draw_counts
    for row in rows:
        i = ids.index(row["id"])
        assert row["prob"] == pytest.approx(probs[i], rel=1e-12)
        assert row["draws"] == counts[i]
    assert sum(r["draws"] for r in rows) == 400
    # Same top-k as the sampler's own ranking.
    assert [r["id"] for r in rows[:5]] == [h["id"] for h in sampler.hardest(5)]


def test_broken_first_and_never_drawn_last(tmp_path):
    ids = [f"u{i}" for i in range(30)]
    csv_path = write_sep_csv(tmp_path / "train.csv", ids)
    sampler, dataset = sep_sampler(csv_path, epoch_length=6)
    sampler.set_epoch(1)
    drawn = set()
    for batch in sampler:
        names = [sampler.ids[i] for i in batch]
        drawn.update(names)
        losses = [float("nan") if n == sorted(drawn)[0] else -10.0 for n in names]
        sampler.observe(names, np.array(losses))
    rows = hardest.rank_examples(sampler, table=dataset.data)
    status = [r["status"] for r in rows]
    n_broken = int(sampler.table.n_quarantined)
    assert n_broken >= 1
    assert status[:n_broken] == ["broken"] * n_broken
    never = [u for u in ids if sampler.draw_counts[ids.index(u)] == 0]
    assert len(never) >= 20
    assert status[-len(never) :] == ["not drawn"] * len(never)
    # Unknown losses stay empty (NaN); never-drawn rows keep the CSV order.
    assert all(math.isnan(r["loss"]) for r in rows if r["status"] != "trained")
    assert [r["id"] for r in rows[-len(never) :]] == never
    for row in rows:
        if row["status"] == "broken":
            assert row["score"] == 0.0 and row["prob"] < 1e-6


def test_report_from_saved_checkpoint_equals_live_report(tmp_path):
    run = tmp_path / "results" / "isbl" / "7"
    (run / "save").mkdir(parents=True)
    ids = [f"mix{i:02d}" for i in range(20)]
    train_csv = write_sep_csv(run / "save" / "z_set.csv", ids)
    # Same size, other IDs: must be rejected by the checkpoint's ID checksum.
    write_sep_csv(run / "save" / "a_cv.csv", [f"cv{i:02d}" for i in range(20)])
    write_sep_csv(run / "save" / "tt.csv", [f"tt{i:02d}" for i in range(5)])
    saved_hparams(str(run), SEP_SAMPLER)

    sampler, dataset = sep_sampler(train_csv, seed=7, epoch_length=200)
    losses = {u: -30.0 + 1.5 * i for i, u in enumerate(ids)}
    run_epoch(sampler, 1, {u: 0.0 for u in ids})
    save_checkpoint(sampler, str(run), "CKPT+old", unixtime=100.0)
    run_epoch(sampler, 2, losses)
    save_checkpoint(sampler, str(run), "CKPT+new", unixtime=200.0)
    live = hardest.rank_examples(sampler, table=dataset.data)

    report = hardest.report_for_run(str(run))
    assert report.checkpoint.endswith(os.path.join("CKPT+new", "mining_sampler.ckpt"))
    assert os.path.basename(report.train_csv) == "z_set.csv"
    assert [r["id"] for r in report.rows] == [r["id"] for r in live]
    assert all(r["status"] == "trained" for r in live)
    for got, want in zip(report.rows, live):
        assert got["loss"] == pytest.approx(want["loss"], abs=1e-9)
        assert got["prob"] == pytest.approx(want["prob"], rel=1e-12)
        assert got["draws"] == want["draws"]
        assert got["mix_wav"] == want["mix_wav"]
    assert report.rows[0]["id"] == "mix19"  # largest negative SI-SNR

    old = hardest.report_for_run(
        str(run), checkpoint=str(run / "save" / "CKPT+old" / "mining_sampler.ckpt")
    )
    assert {r["loss"] for r in old.rows if r["status"] == "trained"} == {0.0}

    with pytest.raises(ValueError, match="different training set"):
        hardest.report_for_run(str(run), train_csv=str(run / "save" / "a_cv.csv"))


def test_last_epoch_shows_how_old_each_loss_is(tmp_path):
    """The epoch of each example's latest loss, live and from a checkpoint."""
    run, ids, train_csv = sep_run_folder(tmp_path, 8)
    sampler, dataset = sep_sampler(train_csv, seed=7, epoch_length=40)
    run_epoch(sampler, 1, {u: -5.0 for u in ids})
    # Epoch 2 observes only (drawn clips of) the first half: the rest keep
    # epoch 1's loss.
    sampler.set_epoch(2)
    fresh = set()
    for batch in sampler:
        names = [sampler.ids[i] for i in batch if sampler.ids[i] in ids[:4]]
        sampler.observe(names, np.full(len(names), -1.0))
        fresh.update(names)
    assert 0 < len(fresh) <= 4
    live = {r["id"]: r for r in hardest.rank_examples(sampler, table=dataset.data)}
    assert {u: live[u]["last_epoch"] for u in ids} == {
        u: 2 if u in fresh else 1 for u in ids
    }
    save_checkpoint(sampler, str(run), "CKPT+e2", unixtime=100.0)
    saved = {r["id"]: r["last_epoch"] for r in hardest.report_for_run(str(run)).rows}
    assert saved == {u: live[u]["last_epoch"] for u in ids}
    assert "last_epoch" in hardest.format_rows(list(live.values())).splitlines()[0]
    # Never observed: -1.
    unseen, _ = sep_sampler(train_csv, seed=7)
    assert {r["last_epoch"] for r in hardest.rank_examples(unseen)} == {-1}


def test_loss_column_is_the_latest_loss_not_the_capped_score(tmp_path):
    """The noise guard caps a flagged example's score; the report keeps its loss."""
    run, ids, train_csv = sep_run_folder(tmp_path, 12)
    guard = dict(score_clip_quantile=0.5, persistent_visits=2, refresh_every=1)
    sampler, dataset = sep_sampler(train_csv, seed=7, epoch_length=120, **guard)
    losses = {u: -20.0 for u in ids}
    losses["m3"] = 5.0  # never learned: flagged, its draws' score capped
    run_epoch(sampler, 1, losses)
    run_epoch(sampler, 2, losses)
    assert sampler.persistently_hard[ids.index("m3")]
    rows = hardest.rank_examples(sampler, table=dataset.data)
    assert rows[0]["id"] == "m3" and rows[0]["persistently_hard"] == 1
    assert rows[0]["loss"] == pytest.approx(5.0)
    assert rows[0]["score"] < 10 ** (5.0 / 10) / 100  # capped near the others
    assert sampler.hardest(1)[0]["id"] == "m3"
    save_checkpoint(sampler, str(run), "CKPT+e2", unixtime=100.0)
    saved = hardest.report_for_run(str(run)).rows
    assert saved[0]["id"] == "m3" and saved[0]["loss"] == pytest.approx(5.0)


def test_report_probabilities_are_the_draw_frequencies(tmp_path):
    """Chi-square: draws of the reloaded sampler follow the reported probabilities."""
    run, ids, train_csv = sep_run_folder(tmp_path, 10)
    sampler, _ = sep_sampler(train_csv, seed=7)
    run_epoch(sampler, 1, {u: -20.0 + 2.0 * i for i, u in enumerate(ids)})
    save_checkpoint(sampler, str(run), "CKPT+1", unixtime=1.0)

    report = hardest.report_for_run(str(run))
    probs = {r["id"]: r["prob"] for r in report.rows}
    reloaded, _ = hardest.load_sampler(
        report.checkpoint,
        report.train_csv,
        hardest.sampler_config(
            hardest.read_saved_hparams(str(run / "hyperparams.yaml"))
        ),
    )
    reloaded.set_epoch(5)
    counts = np.zeros(len(ids))
    for b in range(1000):
        np.add.at(counts, reloaded.draw_global_batch(b, world=1), 1)
    expected = np.array([probs[u] for u in reloaded.ids]) * counts.sum()
    assert expected.min() > 5
    assert chisquare(counts, expected).pvalue > 1e-3
    # A flat distribution is clearly rejected at this sample size.
    flat = np.full(len(ids), counts.sum() / len(ids))
    assert chisquare(counts, flat).pvalue < 1e-6


def test_kws_report_substitutes_data_root_and_shows_pools(tmp_path):
    run = tmp_path / "kws_isbl" / "1986"
    (run / "save").mkdir(parents=True)
    words = ["yes", "no", "_unknown_", "_silence_"]
    rows = [(f"c{i:02d}", words[i % 4]) for i in range(16)]
    train_csv = write_kws_csv(run / "save" / "train.csv", rows)
    saved_hparams(
        str(run),
        "batch_size: 4\npool_field: pool\npool_mix: uniform\nalpha: 1.0\n",
        seed=1986,
    )
    dataset = DynamicItemDataset.from_csv(
        str(train_csv), replacements={"data_root": "X"}
    )
    sampler = ISBLSampler(
        dataset, batch_size=4, pool_field="pool", pool_mix="uniform", alpha=1.0
    )
    # A mislabelled clip keeps a high NLL; the rest are learned.
    nll = {uid: 0.05 for uid, _ in rows}
    nll["c05"] = 4.0
    run_epoch(sampler, 1, nll)
    save_checkpoint(sampler, str(run), "CKPT+1", unixtime=1.0)

    report = hardest.report_for_run(str(run), data_root="/gsc")
    top = report.rows[0]
    assert top["id"] == "c05"
    assert top["wav"] == "/gsc/no/c05.wav"
    assert top["command"] == "no" and top["pool"] == "targets"
    assert {r["pool"] for r in report.rows} == {"targets", "negatives"}
    # Without a data root the placeholder stays visible.
    plain = hardest.report_for_run(str(run))
    assert plain.rows[0]["wav"] == "$data_root/no/c05.wav"


def test_command_line_writes_csv_and_prints_top(tmp_path, capsys):
    run = tmp_path / "run"
    (run / "save").mkdir(parents=True)
    ids = [f"mix{i}" for i in range(8)]
    train_csv = write_sep_csv(run / "save" / "train.csv", ids)
    saved_hparams(str(run), SEP_SAMPLER)
    sampler, _ = sep_sampler(train_csv, seed=7, epoch_length=80)
    run_epoch(sampler, 1, {u: -5.0 * i for i, u in enumerate(ids)})
    save_checkpoint(sampler, str(run), "CKPT+1", unixtime=1.0)

    out = tmp_path / "report.csv"
    assert hardest.main([str(run), "--top", "3", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    body = printed.splitlines()
    header = next(i for i, line in enumerate(body) if line.startswith("rank"))
    assert [line.split()[1] for line in body[header + 1 : header + 4]] == [
        "mix0",
        "mix1",
        "mix2",
    ]
    with open(out, newline="") as f:
        written = list(csv.DictReader(f))
    assert [r["id"] for r in written] == ids
    assert {r["status"] for r in written} == {"trained"}
    assert float(written[2]["loss"]) == pytest.approx(-10.0)
    assert written[0]["s1_wav"].endswith("/s1/mix0.wav")


def test_runs_without_sampler(tmp_path, capsys):
    run = tmp_path / "baseline" / "1"
    run.mkdir(parents=True)
    (run / "hyperparams.yaml").write_text("seed: 1\nthreshold: -30\n")
    assert hardest.report_for_run(str(run)) is None
    assert hardest.main([str(run)]) == 1
    assert "no mining sampler checkpoint" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="does not exist"):
        hardest.report_for_run(str(tmp_path / "missing"))


def test_bad_sampler_entry_names_the_field(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "hyperparams.yaml").write_text(
        "mining_sampler: !new:hardmine.isbl.ISBLSampler\n  batch_size: 2\n"
    )
    with pytest.raises(
        hardest.ConfigError, match="^mining_sampler: expected a '!name:'"
    ):
        hardest.report_for_run(str(run))


def test_kws_reference_call_in_saved_hparams_is_evaluated(tmp_path):
    # kws_isbl.yaml passes the sampler's `reference` through a small hardmine
    # function, which a saved hyperparams.yaml keeps as an !apply: call.
    path = tmp_path / "hyperparams.yaml"
    for epochs, expected in ((0, None), (5, "/r/ref.csv")):
        path.write_text(
            "mining_sampler: !name:hardmine.isbl.ISBLSampler\n"
            "  batch_size: 2\n"
            "  reference: !apply:hardmine.tasks.kws_reference.reference_file\n"
            f"  - {epochs}\n"
            "  - /r/ref.csv\n"
        )
        config = hardest.sampler_config(hardest.read_saved_hparams(str(path)))
        assert config[1] == {"batch_size": 2, "reference": expected}
    # A call with a reference left in it still names the field.
    path.write_text(
        "mining_sampler: !name:hardmine.isbl.ISBLSampler\n"
        "  reference: !apply:hardmine.tasks.kws_reference.reference_file\n"
        "  - !ref <isbl_reference_epochs>\n"
        "  - /r/ref.csv\n"
    )
    with pytest.raises(hardest.ConfigError, match="^mining_sampler.reference: "):
        hardest.sampler_config(hardest.read_saved_hparams(str(path)))


def test_noise_guard_flags_reach_the_report():
    import numpy as np
    from speechbrain.dataio.dataset import DynamicItemDataset

    from hardmine.isbl import ISBLSampler
    from hardmine.tools.hardest import format_rows, rank_examples

    data = {f"u{i}": {"lab": "a"} for i in range(20)}
    sampler = ISBLSampler(
        DynamicItemDataset(data),
        batch_size=4,
        alpha=1.0,
        score_clip_quantile=0.8,
        persistent_visits=2,
        refresh_every=1,
    )
    sampler.set_epoch(1)
    rng = np.random.default_rng(0)
    for _ in range(12):  # u0 and u1 stay hard while the others fall
        ids = [f"u{i}" for i in range(20)]
        losses = np.where(np.arange(20) < 2, 9.0, rng.uniform(0.1, 1.0, 20))
        sampler.observe(ids, losses)
    rows = rank_examples(sampler)
    flagged = {r["id"] for r in rows if r["persistently_hard"]}
    assert flagged == {"u0", "u1"}
    assert "persistently_hard" in format_rows(rows).splitlines()[0]
    assert {r["id"] for r in rows if r["ever_persistently_hard"]} >= {"u0", "u1"}
    # u0 is learned at last: its flag lifts, the column of the run's record keeps it.
    sampler.observe(["u0"], [0.01])
    rows = {r["id"]: r for r in rank_examples(sampler)}
    assert rows["u0"]["persistently_hard"] == 0
    assert rows["u0"]["ever_persistently_hard"] == 1
    assert "ever_persistently_hard" in format_rows(list(rows.values())).splitlines()[0]
    # Without the guard there is no such column.
    plain = ISBLSampler(DynamicItemDataset(data), batch_size=4)
    assert "persistently_hard" not in rank_examples(plain)[0]
