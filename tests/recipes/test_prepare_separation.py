"""Separation data preparation on tiny data sets written in the real layouts."""

import csv
import doctest
import importlib.util
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import hardmine.synthetic.layouts as layouts
from hardmine.synthetic.layouts import default_wsj0mix, make_librimix, make_wsj0mix
from hardmine.tasks.manifest import LayoutError
from hardmine.validation import ConfigError

ROOT = Path(__file__).resolve().parents[2]
WSJ_SCRIPT = ROOT / "recipes" / "WSJ0Mix" / "separation" / "prepare_wsj0mix.py"
LIBRI_SCRIPT = ROOT / "recipes" / "LibriMix" / "separation" / "prepare_librimix.py"
TINY_WSJ = {"tr": 2, "cv": 1, "tt": 2}
TINY_LIBRI = {"train": 2, "dev": 1, "test": 2}
SECONDS = 0.25


def _load(path, name):
    """Import a recipe script under a name of its own (registered, so that
    doctest finds its objects even if other tests import the same file)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


wsj = _load(WSJ_SCRIPT, "test_prepare_separation_wsj0mix")
libri = _load(LIBRI_SCRIPT, "test_prepare_separation_librimix")


def _rows(path):
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        return reader.fieldnames, list(reader)


def _read_int(path):
    data, sr = sf.read(path, dtype="int16")
    return data.astype(np.int64), sr


def _expected_fields(n_spks, noise=False):
    fields = ["ID", "duration"]
    for p in ["mix"] + [f"s{i}" for i in range(1, n_spks + 1)]:
        fields += [f"{p}_wav", f"{p}_wav_format", f"{p}_wav_opts"]
    if noise:
        fields += ["noise_wav", "noise_wav_format", "noise_wav_opts"]
    return fields


@pytest.mark.parametrize(
    "n_spks, version, fs",
    [(2, "min", 8000), (3, "min", 16000), (2, "max", 16000), (3, "max", 8000)],
)
def test_wsj0mix_layout_and_manifests(tmp_path, n_spks, version, fs):
    root = make_wsj0mix(
        tmp_path / "data", n_spks, fs, version, sizes=TINY_WSJ, seconds=SECONDS
    )
    base = tmp_path / "data" / f"wav{fs // 1000}k" / version
    for split in ("tr", "cv", "tt"):
        folders = sorted(os.listdir(base / split))
        assert folders == ["mix"] + [f"s{i}" for i in range(1, n_spks + 1)]
    out = wsj.prepare_wsjmix(root, tmp_path / "save", n_spks, fs, version)
    assert {k: os.path.basename(v) for k, v in out.items()} == {
        "train": "wsj_tr.csv",
        "valid": "wsj_cv.csv",
        "test": "wsj_tt.csv",
    }
    info = list(csv.DictReader(open(base / "mixture_info.csv")))
    overlaps = {r["name"]: float(r["overlap"]) for r in info}
    checked_levels = 0
    name_re = r"[0-9a-z]{3}[cao][0-9a-f]{4}_-?\d+\.\d{4}"
    name_re = re.compile("_".join([name_re] * n_spks))
    for key, split in (("train", "tr"), ("valid", "cv"), ("test", "tt")):
        fields, rows = _rows(out[key])
        assert fields == _expected_fields(n_spks)
        assert len(rows) == TINY_WSJ[split]
        assert sorted(r["ID"] + ".wav" for r in rows) == sorted(
            os.listdir(base / split / "mix")
        )
        for row in rows:
            assert name_re.fullmatch(row["ID"]), row["ID"]
            gains = [float(g) for g in row["ID"].split("_")[1::2]]
            assert len(gains) == n_spks
            mix, sr = _read_int(row["mix_wav"])
            assert (
                sr == fs and row["mix_wav_format"] == "wav" and not row["mix_wav_opts"]
            )
            assert float(row["duration"]) == pytest.approx(len(mix) / fs)
            sources = [_read_int(row[f"s{i}_wav"])[0] for i in range(1, n_spks + 1)]
            for i, src in enumerate(sources, start=1):
                assert os.path.basename(row[f"s{i}_wav"]) == row["ID"] + ".wav"
                assert len(src) == len(mix)
            assert np.array_equal(np.sum(sources, axis=0), mix)  # exact sum
            if version == "min":
                assert len(mix) == int(SECONDS * fs)
            overlap = overlaps[row["ID"] + ".wav"]
            if version == "min" and overlap == 1.0:
                # Stored levels follow the gains in the name (checked only
                # where no source is partly silent).
                level = [
                    10 * np.log10(np.mean(src.astype(float) ** 2)) for src in sources
                ]
                assert level[0] - level[1] == pytest.approx(
                    gains[0] - gains[1], abs=0.05
                )
                checked_levels += 1
        assert {r["name"] for r in info if r["split"] == split} == {
            r["ID"] + ".wav" for r in rows
        }
    assert checked_levels > 0 or version == "max"


def test_wsj0mix_max_pads_sources_with_zeros(tmp_path):
    root = make_wsj0mix(
        tmp_path, 2, 8000, "max", sizes={"tr": 12, "cv": 0, "tt": 0}, seconds=0.5
    )
    base = Path(root) / "wav8k" / "max" / "tr"
    trailing = []
    for name in os.listdir(base / "mix"):
        for s in ("s1", "s2"):
            src, _ = _read_int(base / s / name)
            nz = np.flatnonzero(src)
            trailing.append(len(src) - 1 - nz[-1])
    # Some sources end well before the mixture (zero padding at the end).
    assert max(trailing) > 0.2 * 4000


def test_wsj0mix_is_reproducible_and_speakers_are_split(tmp_path):
    a = make_wsj0mix(tmp_path / "a", sizes={"tr": 3, "cv": 1, "tt": 3}, seconds=0.2)
    b = make_wsj0mix(tmp_path / "b", sizes={"tr": 3, "cv": 1, "tt": 3}, seconds=0.2)
    tr_a = sorted(os.listdir(Path(a) / "wav8k/min/tr/mix"))
    assert tr_a == sorted(os.listdir(Path(b) / "wav8k/min/tr/mix"))
    for name in tr_a:
        assert np.array_equal(
            _read_int(Path(a) / "wav8k/min/tr/mix" / name)[0],
            _read_int(Path(b) / "wav8k/min/tr/mix" / name)[0],
        )
    tt = os.listdir(Path(a) / "wav8k/min/tt/mix")
    spk = {n[:3] for name in tr_a for n in name.split("_")[::2]}
    spk_tt = {n[:3] for name in tt for n in name.split("_")[::2]}
    assert spk and spk_tt and not spk & spk_tt  # unseen test speakers


def test_close_pitch_mixtures_have_close_speakers(tmp_path):
    make_wsj0mix(tmp_path, sizes={"tr": 60, "cv": 0, "tt": 0}, seconds=0.05, seed=3)
    info = list(csv.DictReader(open(tmp_path / "wav8k/min/mixture_info.csv")))
    close = [float(r["f0_gap_st"]) for r in info if r["close_pitch"] == "1"]
    far = [float(r["f0_gap_st"]) for r in info if r["close_pitch"] == "0"]
    assert close and far
    assert max(close) < 2.0 <= min(far)


def test_wsj0mix_accepts_the_min_folder_and_skips_when_current(tmp_path, caplog):
    root = make_wsj0mix(tmp_path / "data", sizes=TINY_WSJ, seconds=SECONDS)
    save = tmp_path / "save"
    out = wsj.prepare_wsjmix(root, save)
    direct = wsj.prepare_wsjmix(tmp_path / "data" / "wav8k" / "min", tmp_path / "save2")
    assert _rows(out["train"]) == _rows(direct["train"])
    stamps = {k: os.path.getmtime(v) for k, v in out.items()}
    with caplog.at_level(logging.INFO):
        wsj.prepare_wsjmix(root, save)
    assert "skipping" in caplog.text
    assert stamps == {k: os.path.getmtime(v) for k, v in out.items()}
    # New data (a folder's content changes) makes the manifests stale.
    tr_mix = tmp_path / "data" / "wav8k" / "min" / "tr"
    extra = "000c9999_0.0000_001c9998_0.0000.wav"
    for folder in ("mix", "s1", "s2"):
        sf.write(tr_mix / folder / extra, np.zeros(int(SECONDS * 8000)), 8000)
    os.utime(tr_mix / "mix", (stamps["train"] + 5, stamps["train"] + 5))
    wsj.prepare_wsjmix(root, save)
    assert len(_rows(out["train"])[1]) == TINY_WSJ["tr"] + 1
    # skip_prep only reports the paths.
    assert wsj.prepare_wsjmix("/nonexistent", save, skip_prep=True) == out


def _expect_layout_error(func, path_part, *args, **kwargs):
    with pytest.raises(LayoutError) as info:
        func(*args, **kwargs)
    assert str(path_part) in str(info.value), str(info.value)
    return info.value


def test_wsj0mix_errors_name_the_path(tmp_path):
    root = make_wsj0mix(tmp_path / "d", sizes=TINY_WSJ, seconds=SECONDS)
    base = tmp_path / "d" / "wav8k" / "min"
    save = tmp_path / "save"

    _expect_layout_error(wsj.prepare_wsjmix, tmp_path / "nope", tmp_path / "nope", save)
    # Wrong sample rate: the wav16k folder does not exist.
    _expect_layout_error(wsj.prepare_wsjmix, "wav16k/min", root, save, fs=16000)
    # Pointed at the 8 kHz folder with fs=16000: the folder name says so.
    _expect_layout_error(wsj.prepare_wsjmix, base, base, save, fs=16000)
    # Asking for 3 speakers on 2-speaker data: s3 is missing.
    _expect_layout_error(wsj.prepare_wsjmix, base / "tr" / "s3", root, save, n_spks=3)

    # A split holding no mixture at all.
    tt_mix = base / "tt" / "mix"
    tt_mix.rename(tmp_path / "tt_mix")
    tt_mix.mkdir()
    _expect_layout_error(wsj.prepare_wsjmix, tt_mix, root, save)
    tt_mix.rmdir()
    (tmp_path / "tt_mix").rename(tt_mix)
    # A split whose only mixtures are all bad: the split is named, and the
    # report lists the file.
    backup = {p: p.read_bytes() for p in (base / "cv" / "s2").iterdir()}
    for path in backup:
        path.write_bytes(b"")
    err = _expect_layout_error(wsj.prepare_wsjmix, base / "cv", root, save)
    assert "'valid'" in str(err) and "prep_report.csv" in str(err)
    assert not (save / "wsj_tr.csv").exists()
    assert len(_rows(save / "prep_report.csv")[1]) == TINY_WSJ["cv"]
    shutil.rmtree(save)
    for path, data in backup.items():
        path.write_bytes(data)
    # A missing split.
    (base / "cv").rename(tmp_path / "cv")
    _expect_layout_error(wsj.prepare_wsjmix, base / "cv", root, save)
    # Nothing was written by any failed run.
    assert not save.exists() or not os.listdir(save)
    (tmp_path / "cv").rename(base / "cv")
    assert os.path.isfile(wsj.prepare_wsjmix(root, save)["valid"])


def test_bad_arguments_name_the_field(tmp_path):
    with pytest.raises(ConfigError, match="n_spks"):
        wsj.prepare_wsjmix(tmp_path, tmp_path, n_spks=4)
    with pytest.raises(ConfigError, match="version"):
        wsj.prepare_wsjmix(tmp_path, tmp_path, version="mid")
    with pytest.raises(ConfigError, match="mixture"):
        libri.prepare_librimix(tmp_path, tmp_path, mixture="noisy")
    with pytest.raises(ConfigError, match="train_set"):
        libri.prepare_librimix(tmp_path, tmp_path, train_set="train-500")
    with pytest.raises(ConfigError, match="fs"):
        make_wsj0mix(tmp_path, fs=44100)
    with pytest.raises(ConfigError, match="sizes"):
        make_librimix(tmp_path, sizes={"tr": 1})


@pytest.mark.parametrize(
    "n_spks, version, fs, mixture, train_set, with_metadata",
    [
        (2, "min", 8000, "both", "train-360", True),
        (2, "min", 8000, "clean", "train-360", True),
        (2, "max", 16000, "both", "train-100", False),
        (3, "min", 8000, "both", "train-360", False),
        (3, "max", 8000, "clean", "train-100", True),
    ],
)
def test_librimix_layout_and_manifests(
    tmp_path, n_spks, version, fs, mixture, train_set, with_metadata, caplog
):
    root = make_librimix(
        tmp_path / "data",
        n_spks,
        fs,
        version,
        sizes=TINY_LIBRI,
        seconds=SECONDS,
        with_metadata=with_metadata,
        train_set=train_set,
    )
    base = tmp_path / "data" / f"wav{fs // 1000}k" / version
    srcs = [f"s{i}" for i in range(1, n_spks + 1)]
    for split in (train_set, "dev", "test"):
        assert sorted(os.listdir(base / split)) == sorted(
            ["mix_both", "mix_clean", "noise"] + srcs
        )
    assert (base / "metadata").is_dir() == with_metadata
    with caplog.at_level(logging.INFO):
        out = libri.prepare_librimix(
            root, tmp_path / "save", n_spks, fs, version, mixture, train_set
        )
    assert ("metadata" in caplog.text) and (
        ("Reading mixtures" in caplog.text) == with_metadata
    )
    names = {"train": "train", "valid": "dev", "test": "test"}
    for key, split_key in names.items():
        assert os.path.basename(out[key]) == f"libri{n_spks}mix_{split_key}.csv"
        fields, rows = _rows(out[key])
        assert fields == _expected_fields(n_spks, noise=True)
        assert len(rows) == TINY_LIBRI[split_key]
        for row in rows:
            assert re.fullmatch(r"\d+-\d+-\d{4}(_\d+-\d+-\d{4})+", row["ID"])
            assert f"/mix_{mixture}/" in row["mix_wav"]
            mix, sr = _read_int(row["mix_wav"])
            assert sr == fs
            assert float(row["duration"]) == pytest.approx(len(mix) / fs)
            speech = sum(_read_int(row[f"{s}_wav"])[0] for s in srcs)
            noise = _read_int(row["noise_wav"])[0]
            assert np.any(noise != 0)
            expected = speech + noise if mixture == "both" else speech
            assert np.array_equal(mix, expected)


def test_librimix_metadata_format_and_errors(tmp_path):
    root = make_librimix(tmp_path / "d", sizes=TINY_LIBRI, seconds=SECONDS)
    meta = tmp_path / "d" / "wav8k" / "min" / "metadata"
    assert sorted(os.listdir(meta)) == sorted(
        f"mixture_{s}_mix_{k}.csv"
        for s in ("train-360", "dev", "test")
        for k in ("clean", "both")
    )
    fields, rows = _rows(meta / "mixture_dev_mix_both.csv")
    assert fields == [
        "mixture_ID",
        "mixture_path",
        "source_1_path",
        "source_2_path",
        "noise_path",
        "length",
    ]
    assert _rows(meta / "mixture_dev_mix_clean.csv")[0] == [
        "mixture_ID",
        "mixture_path",
        "source_1_path",
        "source_2_path",
        "length",
    ]
    for row in rows:
        assert os.path.isabs(row["mixture_path"])
        assert sf.info(row["mixture_path"]).frames == int(row["length"])

    save = tmp_path / "save"
    test_meta = meta / "mixture_test_mix_both.csv"
    rows = _rows(test_meta)[1]

    def report():
        """The report's entries; each step corrupts exactly one file."""
        rows = _rows(save / "prep_report.csv")[1]
        assert len(rows) == 1, rows
        return {row["path"]: row["reason"] for row in rows}

    # Metadata pointing at a file that is gone: reported, its mixture left out.
    target = Path(rows[0]["source_2_path"])
    target.rename(tmp_path / "gone.wav")
    out = libri.prepare_librimix(root, save)
    reason = report()[str(target)]
    assert reason.startswith("missing file") and "mixture_test_mix_both.csv" in reason
    assert [r["ID"] for r in _rows(out["test"])[1]] == [rows[1]["mixture_ID"]]
    (tmp_path / "gone.wav").rename(target)
    # Metadata length that disagrees with the audio.
    text = test_meta.read_text()
    test_meta.write_text(text.replace(f",{rows[0]['length']}\n", ",17\n", 1))
    libri.prepare_librimix(root, save)
    assert "says 17" in report()[rows[0]["mixture_path"]]
    test_meta.write_text(text)
    # Metadata for the wrong number of speakers.
    _expect_layout_error(
        libri.prepare_librimix, "mixture_train-360", root, save, n_spks=3
    )
    shutil.rmtree(save)
    # Without metadata, a missing noise folder is reported.
    for f in os.listdir(meta):
        os.remove(meta / f)
    noise = tmp_path / "d" / "wav8k" / "min" / "test" / "noise"
    noise.rename(tmp_path / "noise")
    _expect_layout_error(libri.prepare_librimix, noise, root, save)
    (tmp_path / "noise").rename(noise)
    assert not save.exists() or not os.listdir(save)
    # Length mismatch when scanning (min version).
    name = sorted(os.listdir(noise))[0]
    data, _ = sf.read(noise / name, dtype="int16")
    sf.write(noise / name, data[:-1], 8000, subtype="PCM_16")
    libri.prepare_librimix(root, save)
    assert report()[str(noise / name)].startswith(f"length {len(data) - 1} samples")


def test_scripts_run_from_the_command_line(tmp_path):
    data = make_wsj0mix(tmp_path / "w", sizes=TINY_WSJ, seconds=SECONDS)
    ldata = make_librimix(tmp_path / "l", sizes=TINY_LIBRI, seconds=SECONDS)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    ok = subprocess.run(
        [sys.executable, str(WSJ_SCRIPT), data, str(tmp_path / "s1")],
        capture_output=True,
        text=True,
        env=env,
    )
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "s1" / "wsj_tt.csv").is_file()
    ok = subprocess.run(
        [
            sys.executable,
            str(LIBRI_SCRIPT),
            ldata,
            str(tmp_path / "s2"),
            "--mixture",
            "clean",
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert ok.returncode == 0, ok.stderr
    assert (
        "/mix_clean/" in _rows(tmp_path / "s2" / "libri2mix_dev.csv")[1][0]["mix_wav"]
    )
    bad = subprocess.run(
        [
            sys.executable,
            str(WSJ_SCRIPT),
            str(tmp_path / "missing"),
            str(tmp_path / "s3"),
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert bad.returncode == 1 and str(tmp_path / "missing") in bad.stderr


def test_script_doctests():
    for module in (wsj, libri):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0


def _tiny_default(monkeypatch, tmp_path):
    monkeypatch.setattr(layouts, "DEFAULT_SIZES", {"tr": 2, "cv": 1, "tt": 1})
    return tmp_path / "cache"


def test_default_set_is_generated_once_and_cached(monkeypatch, tmp_path, caplog):
    cache = _tiny_default(monkeypatch, tmp_path)
    with caplog.at_level(logging.INFO):
        root = default_wsj0mix(cache)
    assert "Generating" in caplog.text
    assert root == str(cache / "wsj0mix-default")
    marker = json.loads((Path(root) / "hardmine-dataset.json").read_text())
    assert marker["generator_version"] == layouts.GENERATOR_VERSION
    out = wsj.prepare_wsjmix(root, tmp_path / "save")
    assert len(_rows(out["train"])[1]) == 2
    stamp = os.path.getmtime(Path(root) / "hardmine-dataset.json")
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert default_wsj0mix(cache) == root
    assert "cached" in caplog.text and "Generating" not in caplog.text
    assert os.path.getmtime(Path(root) / "hardmine-dataset.json") == stamp
    # No temporary folders are left next to the set.
    assert sorted(os.listdir(cache)) == ["wsj0mix-default", "wsj0mix-default.lock"]


def test_default_set_location_from_environment(monkeypatch, tmp_path):
    _tiny_default(monkeypatch, tmp_path)
    monkeypatch.setenv("HARDMINE_CACHE", str(tmp_path / "env"))
    assert default_wsj0mix() == str(tmp_path / "env" / "wsj0mix-default")


def test_half_written_or_stale_sets_are_rebuilt(monkeypatch, tmp_path):
    cache = _tiny_default(monkeypatch, tmp_path)
    root = cache / "wsj0mix-default"
    # A folder without a marker (e.g. copied half-way) is not trusted.
    (root / "wav8k" / "min" / "tr" / "mix").mkdir(parents=True)
    default_wsj0mix(cache)
    assert len(os.listdir(root / "wav8k" / "min" / "tr" / "mix")) == 2
    # A marker from an older generator triggers a rebuild.
    marker = root / "hardmine-dataset.json"
    old = json.loads(marker.read_text())
    marker.write_text(json.dumps({**old, "generator_version": 0}))
    default_wsj0mix(cache)
    assert json.loads(marker.read_text()) == old


def test_crash_during_generation_leaves_nothing_complete(monkeypatch, tmp_path):
    cache = _tiny_default(monkeypatch, tmp_path)
    real = layouts.make_wsj0mix

    def crashing(root, **kwargs):
        real(root, **{**kwargs, "sizes": {"tr": 1, "cv": 0, "tt": 0}})
        raise KeyboardInterrupt("simulated crash")

    monkeypatch.setattr(layouts, "make_wsj0mix", crashing)
    with pytest.raises(KeyboardInterrupt):
        default_wsj0mix(cache)
    assert not (cache / "wsj0mix-default").exists()
    assert [f for f in os.listdir(cache) if not f.endswith(".lock")] == []
    monkeypatch.setattr(layouts, "make_wsj0mix", real)
    assert os.path.isdir(Path(default_wsj0mix(cache)) / "wav8k" / "min" / "tt" / "s2")


@pytest.mark.slow
def test_full_default_set_has_the_stated_spread(tmp_path):
    root = default_wsj0mix(tmp_path)
    base = Path(root) / "wav8k" / "min"
    counts = {s: len(os.listdir(base / s / "mix")) for s in ("tr", "cv", "tt")}
    assert counts == {"tr": 400, "cv": 50, "tt": 100}
    info = list(csv.DictReader(open(base / "mixture_info.csv")))
    assert len(info) == 550
    hard = np.mean([r["hard_level"] == "1" for r in info])
    close = np.mean([r["close_pitch"] == "1" for r in info])
    partial = np.mean([float(r["overlap"]) < 1.0 for r in info])
    # Stated rates 20 %, 25 %, 30 %; three binomial standard errors at n=550.
    for rate, p in ((hard, 0.2), (close, 0.25), (partial, 0.3)):
        assert abs(rate - p) < 3 * np.sqrt(p * (1 - p) / 550)
    first = sorted(os.listdir(base / "tr" / "mix"))[0]
    for folder in ("mix", "s1", "s2"):
        info = sf.info(base / "tr" / folder / first)
        assert (info.samplerate, info.frames, info.subtype) == (8000, 16000, "PCM_16")
