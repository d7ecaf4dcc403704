"""Speech Commands preparation on a corpus with broken files: report, strict mode, skip."""

import csv
import importlib.util
import io
import json
import os
import pathlib

import numpy as np
import pytest
import soundfile as sf
from conftest import KWS_TINY_MODEL
from speechbrain.augment.freq_domain import RandomShift
from speechbrain.augment.time_domain import AddNoise, AddReverb, SpeedPerturb

from hardmine.synthetic.gsc import generate_gsc
from hardmine.tasks.kws import build_augmenter, check_augment_files
from hardmine.tasks.prep_report import PrepError
from hardmine.validation import ConfigError

RECIPE = (
    pathlib.Path(__file__).resolve().parents[2] / "recipes/GoogleSpeechCommands/kws"
)


def _module(name, filename):
    spec = importlib.util.spec_from_file_location(name, RECIPE / filename)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


prep = _module("prepare_gsc_report", "prepare_gsc.py")


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def damaged(tmp_path_factory):
    """A tiny corpus with four bad entries; returns (root, {path: reason part})."""
    root = pathlib.Path(
        generate_gsc(
            str(tmp_path_factory.mktemp("damaged") / "gsc"),
            words=("yes", "no", "cat"),
            n_speakers=4,
            repetitions=2,
            valid_speakers=1,
            test_speakers=1,
            background_seconds=6.0,
            seed=9,
        )
    )
    garbage = root / "yes" / "0badf00d_nohash_0.wav"
    garbage.write_bytes(b"this is not a RIFF header" * 40)
    empty = root / "no" / "0e0e0e0e_nohash_0.wav"
    sf.write(str(empty), np.zeros(0, dtype=np.float32), 16000)
    slow = root / "cat" / "08080808_nohash_0.wav"
    sf.write(str(slow), 0.1 * np.ones(8000, dtype=np.float32), 8000)
    with open(root / "validation_list.txt", "a") as f:
        f.write("yes/deadbeef_nohash_3.wav\n")
    expected = {
        str(garbage): "unreadable",
        str(empty): "zero-length",
        str(slow): "sample rate 8000 Hz",
        str(root / "yes" / "deadbeef_nohash_3.wav"): "missing file (listed in",
    }
    return str(root), expected


def test_bad_files_are_reported_once_and_left_out(damaged, tmp_path):
    root, expected = damaged
    csvs = prep.prepare_gsc(root, str(tmp_path))
    report = _rows(tmp_path / "prep_report.csv")
    assert sorted(r["path"] for r in report) == sorted(expected)
    for row in report:
        assert expected[row["path"]] in row["reason"]
    ids = {r["ID"] for path in csvs.values() for r in _rows(path)}
    for path in expected:
        word, name = pathlib.Path(path).parts[-2:]
        assert f"{word}_{name[:-4]}" not in ids
    # Every good clip is still there.
    n_good = sum(
        1
        for word in ("yes", "no", "cat")
        for name in os.listdir(os.path.join(root, word))
        if os.path.join(root, word, name) not in expected
    )
    assert len([i for i in ids if not i.startswith("silence_")]) == n_good


def test_bad_noise_file_is_reported_and_skipped(damaged, tmp_path):
    root, _ = damaged
    # A copy of the corpus with one broken background-noise file.
    copy = _linked_copy(root, tmp_path / "copy")
    broken = copy / "_background_noise_" / "broken.wav"
    broken.write_bytes(b"\x00" * 64)
    prep.prepare_gsc(str(copy), str(tmp_path / "save"))
    report = {r["path"]: r["reason"] for r in _rows(tmp_path / "save/prep_report.csv")}
    assert len(report) == 5 and "unreadable" in report[str(broken)]
    noises = {r["wav"] for r in _rows(tmp_path / "save/train.csv")}
    assert "$data_root/_background_noise_/broken.wav" not in noises
    pieces = _rows(tmp_path / "save" / prep.NOISE_CSV)
    assert pieces and not any(r["ID"].startswith("broken") for r in pieces)


def _linked_copy(root, target):
    for folder, _, files in os.walk(root):
        dest = target / os.path.relpath(folder, root)
        dest.mkdir(parents=True, exist_ok=True)
        for name in files:
            os.link(os.path.join(folder, name), dest / name)
    return target


def test_no_usable_noise_file(damaged, tmp_path):
    root, expected = damaged
    copy = _linked_copy(root, tmp_path / "copy")
    noise_dir = copy / "_background_noise_"
    broken = []
    for path in sorted(noise_dir.glob("*.wav")):
        path.unlink()  # a hard link: replace, never write through
        path.write_bytes(b"garbage" * 10)
        broken.append(str(path))
    # The silence class needs them: one error, after the report is written.
    with pytest.raises(FileNotFoundError, match="no usable background-noise"):
        prep.prepare_gsc(str(copy), str(tmp_path / "t12"))
    report = _rows(tmp_path / "t12" / "prep_report.csv")
    assert sorted(r["path"] for r in report) == sorted([*broken, *expected_in(copy)])
    # Task 35 has no silence class: preparation goes on, without noise pieces,
    # and noise augmentation is refused before training.
    prep.prepare_gsc(str(copy), str(tmp_path / "t35"), task="35")
    assert not (tmp_path / "t35" / prep.NOISE_CSV).exists()
    augmenter = build_augmenter(noise_csv=str(tmp_path / "t35" / prep.NOISE_CSV))
    with pytest.raises(ConfigError, match="^augment_noise: .*--augment_noise False"):
        check_augment_files(augmenter)


def expected_in(copy):
    """The four bad entries of the damaged corpus, under ``copy``."""
    return [
        str(copy / "yes" / "0badf00d_nohash_0.wav"),
        str(copy / "no" / "0e0e0e0e_nohash_0.wav"),
        str(copy / "cat" / "08080808_nohash_0.wav"),
        str(copy / "yes" / "deadbeef_nohash_3.wav"),
    ]


def test_strict_mode_names_every_bad_file_in_one_error(damaged, tmp_path):
    root, expected = damaged
    with pytest.raises(PrepError) as info:
        prep.prepare_gsc(root, str(tmp_path), strict_prep=True)
    assert info.value.entries.keys() == expected.keys()
    message = str(info.value)
    assert message.splitlines()[0] == "4 bad audio files (strict_prep is on):"
    assert all(path in message for path in expected)
    assert not (tmp_path / "train.csv").exists()
    # After a good preparation, a strict one that fails leaves no options
    # behind, so the old CSVs are not taken as prepared by the next run.
    prep.prepare_gsc(root, str(tmp_path))
    with pytest.raises(PrepError):
        prep.prepare_gsc(root, str(tmp_path), strict_prep=True)
    assert not (tmp_path / "prepare_gsc.json").exists()
    with pytest.raises(ConfigError, match="^strict_prep"):
        prep.prepare_gsc(root, str(tmp_path), strict_prep="yes")


def test_strict_mode_from_the_command_line_prints_the_list(damaged, tmp_path):
    root, expected = damaged
    train = _module("kws_train_report", "train.py")
    err = io.StringIO()
    argv = [
        str(RECIPE / "hparams" / "kws.yaml"),
        "--data_folder",
        root,
        "--output_folder",
        str(tmp_path / "out"),
        "--strict_prep",
        "True",
    ]
    with pytest.raises(SystemExit) as info:
        train.run(argv, stream=err)
    assert info.value.code == 2
    lines = err.getvalue().splitlines()
    assert lines[0] == "error: 4 bad audio files (strict_prep is on):"
    assert sorted(line.strip().split(": ")[0] for line in lines[1:5]) == sorted(
        expected
    )
    assert lines[5].startswith("(also listed in") and len(lines) == 6


def test_prep_is_skipped_for_the_same_options_and_rebuilt_otherwise(
    damaged, tmp_path, monkeypatch
):
    root, _ = damaged
    csvs = prep.prepare_gsc(root, str(tmp_path))
    stamp = os.path.getmtime(csvs["train"]) - 100
    os.utime(csvs["train"], (stamp, stamp))

    def no_scan(*args, **kwargs):
        raise AssertionError("the corpus was scanned again")

    with monkeypatch.context() as patch:
        patch.setattr(prep, "checked_frames", no_scan)
        assert prep.prepare_gsc(root, str(tmp_path)) == csvs
    assert os.path.getmtime(csvs["train"]) == stamp
    saved = json.loads((tmp_path / "prepare_gsc.json").read_text())
    assert saved["strict_prep"] is False and saved["silence_per_split"] == 0.1
    # A changed option rebuilds.
    prep.prepare_gsc(root, str(tmp_path), silence_per_split=0.5)
    assert os.path.getmtime(csvs["train"]) != stamp
    n_words = len([r for r in _rows(csvs["train"]) if r["command"] != "_silence_"])
    n_silence = len(_rows(csvs["train"])) - n_words
    assert n_silence == round(0.5 * n_words)


@pytest.mark.slow
def test_recipe_trains_on_the_damaged_corpus(damaged, tmp_path, monkeypatch):
    """One tiny epoch with augmentation (reverberation too), no loader workers."""
    root, expected = damaged
    calls = {}

    def counting(cls):
        forward = cls.forward

        def with_lengths(self, waveforms, lengths):
            calls[cls.__name__] = calls.get(cls.__name__, 0) + 1
            return forward(self, waveforms, lengths)

        def without(self, waveforms):
            calls[cls.__name__] = calls.get(cls.__name__, 0) + 1
            return forward(self, waveforms)

        return with_lengths if cls in (AddNoise, RandomShift) else without

    for cls in (AddNoise, AddReverb, SpeedPerturb, RandomShift):
        counted = counting(cls)
        monkeypatch.setattr(cls, "forward", counted)
    rirs = tmp_path / "rirs" / "hall"
    rirs.mkdir(parents=True)
    rir = np.exp(-np.arange(2000) / 300.0).astype(np.float32)
    sf.write(str(rirs / "decay.wav"), rir * np.sign(np.sin(np.arange(2000))), 16000)
    out = tmp_path / "out"
    train = _module("kws_train_damaged", "train.py")
    train.run(
        [
            str(RECIPE / "hparams" / "kws.yaml"),
            "--data_folder",
            root,
            "--output_folder",
            str(out),
            "--number_of_epochs",
            "1",
            "--n_classes",
            "4",  # yes, no, _unknown_, _silence_
            *KWS_TINY_MODEL,
            "--num_workers",
            "0",
            "--rir_folder",
            str(tmp_path / "rirs"),
            "--augment_prob",
            "1.0",
            "--noprogressbar",
        ]
    )
    # Every training batch went through the whole chain; no other batch did.
    n_batches = -(-len(_rows(out / "save" / "train.csv")) // 8)
    assert calls == dict.fromkeys(
        ["AddNoise", "AddReverb", "SpeedPerturb", "RandomShift"], n_batches
    )
    assert len(_rows(out / "save" / "prep_report.csv")) == len(expected)
    assert len(_rows(out / "save" / "rir.csv")) == 1
    log = (out / "train_log.txt").read_text()
    assert "epoch: 1" in log and "train examples_bad_audio: 0" in log
    loss = float(log.split("train loss: ")[1].split(",")[0])
    assert np.isfinite(loss)
    summary = json.loads((out / "test_summary.json").read_text())
    assert summary["n_examples"] == len(_rows(out / "save" / "test.csv"))
