"""Separation preparation on a corrupt corpus: bad files leave their mixtures
out and are listed in prep_report.csv, strict_prep turns them into one error,
the recipe trains on what is left, and manifests made with the same options
are reused without a scan."""

import csv
import importlib.util
import io
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from hardmine.cli import EXIT_CONFIG_ERROR, exit_on_config_error
from hardmine.synthetic.layouts import make_librimix, make_wsj0mix
from hardmine.tasks.manifest import check_group
from hardmine.tasks.prep_report import REPORT_NAME, PrepError
from hardmine.tasks.separation import TINY_OVERRIDES
from hardmine.validation import ConfigError

ROOT = Path(__file__).resolve().parents[2]
WSJ_DIR = ROOT / "recipes" / "WSJ0Mix" / "separation"
LIBRI_DIR = ROOT / "recipes" / "LibriMix" / "separation"
SECONDS = 0.25
FS = 8000


def _load(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


wsj = _load(WSJ_DIR / "prepare_wsj0mix.py", "test_prep_sep_bad_wsj0mix")
libri = _load(LIBRI_DIR / "prepare_librimix.py", "test_prep_sep_bad_librimix")


def _ids(csv_path):
    with open(csv_path, newline="") as handle:
        return sorted(row["ID"] for row in csv.DictReader(handle))


def _report(folder):
    with open(Path(folder) / REPORT_NAME, newline="") as handle:
        return {row["path"]: row["reason"] for row in csv.DictReader(handle)}


def _names(folder):
    return sorted(f[: -len(".wav")] for f in os.listdir(folder))


def _corrupt(split_dir, mix_folder, names):
    """Corrupt one file of each of five mixtures, one way each.

    Returns ``{path: regex of the expected reason}`` and the IDs left out.
    """
    a, b, c, d, e = names
    path = {
        "garbage": split_dir[a] / "s1" / f"{a}.wav",
        "empty": split_dir[b] / mix_folder / f"{b}.wav",
        "rate": split_dir[c] / "s2" / f"{c}.wav",
        "missing": split_dir[d] / "s2" / f"{d}.wav",
        "short": split_dir[e] / "s2" / f"{e}.wav",
    }
    path["garbage"].write_bytes(b"RIFF\x00\x01garbage, not a wav header" * 4)
    path["empty"].write_bytes(b"")
    data, _ = sf.read(path["rate"], dtype="int16")
    sf.write(path["rate"], data, 16000, subtype="PCM_16")
    path["missing"].unlink()
    data, _ = sf.read(path["short"], dtype="int16")
    sf.write(path["short"], data[:-7], FS, subtype="PCM_16")
    n = int(SECONDS * FS)
    reasons = {
        str(path["garbage"]): r"^unreadable \(",
        str(path["empty"]): r"^(zero-length file|unreadable \()",
        str(path["rate"]): r"^sample rate 16000 Hz, expected 8000 Hz$",
        str(path["missing"]): r"^missing file",
        str(
            path["short"]
        ): rf"^length {n - 7} samples differs from the mixture's {n} samples",
    }
    return reasons, {a, b, c, d, e}


@pytest.fixture
def corrupt_wsj(tmp_path):
    root = make_wsj0mix(
        tmp_path / "wsj", sizes={"tr": 5, "cv": 2, "tt": 2}, seconds=SECONDS
    )
    base = Path(root) / "wav8k" / "min"
    tr, cv, tt = (_names(base / s / "mix") for s in ("tr", "cv", "tt"))
    # Three bad mixtures in tr, one in cv, one in tt.
    names = [tr[0], tr[1], cv[0], tt[0], tr[2]]
    split_dir = {name: base / "tr" for name in tr}
    split_dir.update({name: base / "cv" for name in cv})
    split_dir.update({name: base / "tt" for name in tt})
    reasons, left_out = _corrupt(split_dir, "mix", names)
    kept = {
        key: sorted(set(ids) - left_out)
        for key, ids in (("train", tr), ("valid", cv), ("test", tt))
    }
    return root, reasons, kept


def test_wsj0mix_bad_files_are_reported_and_left_out(corrupt_wsj, tmp_path, caplog):
    root, reasons, kept = corrupt_wsj
    save = tmp_path / "save"
    with caplog.at_level(logging.INFO):
        out = wsj.prepare_wsjmix(root, save)
    report = _report(save)
    assert sorted(report) == sorted(reasons)
    for path, pattern in reasons.items():
        assert re.search(pattern, report[path]), (path, report[path])
    for key, ids in kept.items():
        assert _ids(out[key]) == ids, key
    assert "left out 5 bad audio files" in caplog.text
    assert str(save / REPORT_NAME) in caplog.text

    # strict_prep: one error naming every bad file, and no manifests change.
    stamps = {k: os.path.getmtime(v) for k, v in out.items()}
    with pytest.raises(PrepError) as info:
        wsj.prepare_wsjmix(root, save, strict_prep=True)
    assert sorted(info.value.entries) == sorted(reasons)
    message = str(info.value)
    assert message.startswith("5 bad audio files (strict_prep is on):")
    assert all(path in message for path in reasons)
    assert stamps == {k: os.path.getmtime(v) for k, v in out.items()}
    # The strict failure forgot the saved options: the next run rescans.
    assert not (save / "prepare_wsj0mix.json").exists()


def test_max_version_flags_only_longer_sources(tmp_path):
    root = make_wsj0mix(
        tmp_path, version="max", sizes={"tr": 3, "cv": 1, "tt": 1}, seconds=SECONDS
    )
    base = Path(root) / "wav8k" / "max" / "tr"
    first, second, _ = _names(base / "mix")
    # A shorter source is fine in max; a longer one is not.
    data, _ = sf.read(base / "s1" / f"{first}.wav", dtype="int16")
    sf.write(base / "s1" / f"{first}.wav", data[:-50], FS, subtype="PCM_16")
    longer = base / "s2" / f"{second}.wav"
    data, _ = sf.read(longer, dtype="int16")
    sf.write(longer, np.concatenate([data, data[:9]]), FS, subtype="PCM_16")
    out = wsj.prepare_wsjmix(root, tmp_path / "save", version="max")
    report = _report(tmp_path / "save")
    assert list(report) == [str(longer)]
    assert "is longer than the mixture's" in report[str(longer)]
    assert second not in _ids(out["train"]) and first in _ids(out["train"])


def test_mixture_alone_at_fault_is_the_one_named(tmp_path):
    root = make_wsj0mix(tmp_path, sizes={"tr": 2, "cv": 1, "tt": 1}, seconds=SECONDS)
    mix = Path(root) / "wav8k" / "min" / "tr" / "mix"
    name = _names(mix)[0]
    data, _ = sf.read(mix / f"{name}.wav", dtype="int16")
    sf.write(mix / f"{name}.wav", data[:-3], FS, subtype="PCM_16")
    wsj.prepare_wsjmix(root, tmp_path / "save")
    report = _report(tmp_path / "save")
    assert list(report) == [str(mix / f"{name}.wav")]
    assert "of all its companion files" in report[str(mix / f"{name}.wav")]


@pytest.mark.parametrize("with_metadata", [True, False])
def test_librimix_bad_files_are_reported_and_left_out(tmp_path, with_metadata):
    root = make_librimix(
        tmp_path / "libri",
        sizes={"train": 5, "dev": 2, "test": 2},
        seconds=SECONDS,
        with_metadata=with_metadata,
    )
    base = Path(root) / "wav8k" / "min"
    tr, dev, test = (
        _names(base / s / "mix_both") for s in ("train-360", "dev", "test")
    )
    names = [tr[0], tr[1], dev[0], test[0], tr[2]]
    split_dir = {name: base / "train-360" for name in tr}
    split_dir.update({name: base / "dev" for name in dev})
    split_dir.update({name: base / "test" for name in test})
    reasons, left_out = _corrupt(split_dir, "mix_both", names)
    # A bad noise file leaves its mixture out as well.
    noise = base / "train-360" / "noise" / f"{tr[3]}.wav"
    noise.write_bytes(b"")
    reasons[str(noise)] = r"^(zero-length file|unreadable \()"
    left_out.add(tr[3])
    save = tmp_path / "save"
    out = libri.prepare_librimix(root, save)
    report = _report(save)
    assert sorted(report) == sorted(reasons)
    for path, pattern in reasons.items():
        assert re.search(pattern, report[path]), (path, report[path])
    if with_metadata:
        assert (
            "mixture_test_mix_both.csv"
            in report[str(base / "test" / "s2" / f"{test[0]}.wav")]
        )
    for key, ids in (("train", tr), ("valid", dev), ("test", test)):
        assert _ids(out[key]) == sorted(set(ids) - left_out), key
    with pytest.raises(PrepError) as info:
        libri.prepare_librimix(root, save, strict_prep=True)
    assert sorted(info.value.entries) == sorted(reasons)


def test_strict_prep_must_be_a_bool(tmp_path):
    with pytest.raises(ConfigError, match="^strict_prep: must be True or False"):
        wsj.prepare_wsjmix(tmp_path, tmp_path, strict_prep="yes")
    with pytest.raises(ConfigError, match="^strict_prep:"):
        libri.prepare_librimix(tmp_path, tmp_path, strict_prep=1)


def test_script_strict_flag(corrupt_wsj, tmp_path):
    root, reasons, _ = corrupt_wsj
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = [sys.executable, str(WSJ_DIR / "prepare_wsj0mix.py"), root]
    lenient = subprocess.run(
        [*cmd, str(tmp_path / "a")], capture_output=True, text=True, env=env
    )
    assert lenient.returncode == 0, lenient.stderr
    assert "left out 5 bad audio files" in lenient.stderr
    strict = subprocess.run(
        [*cmd, str(tmp_path / "b"), "--strict_prep"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert strict.returncode == 1
    assert "5 bad audio files" in strict.stderr
    assert all(path in strict.stderr for path in reasons)
    assert not (tmp_path / "b" / "wsj_tr.csv").exists()


# ---------------------------------------------------------------- skip rule
def _counting(monkeypatch, module):
    calls = []
    real = check_group

    def counted(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(module, "check_group", counted)
    return calls


def test_wsj0mix_same_options_skip_changed_options_rebuild(tmp_path, monkeypatch):
    root = make_wsj0mix(
        tmp_path / "d", sizes={"tr": 2, "cv": 1, "tt": 1}, seconds=SECONDS
    )
    make_wsj0mix(
        tmp_path / "d",
        version="max",
        sizes={"tr": 3, "cv": 1, "tt": 1},
        seconds=SECONDS,
    )
    save = tmp_path / "save"
    calls = _counting(monkeypatch, wsj)
    out = wsj.prepare_wsjmix(root, save)
    assert len(calls) == 4
    # Same options: no file is looked at again.
    monkeypatch.setattr(wsj, "check_group", lambda *a, **k: pytest.fail("rescanned"))
    assert wsj.prepare_wsjmix(root, save) == out
    calls = _counting(monkeypatch, wsj)
    # Another version: rebuilt from the max folder.
    wsj.prepare_wsjmix(root, save, version="max")
    assert len(calls) == 5 and all("/max/" in c for c in calls)
    assert len(_ids(out["train"])) == 3
    # strict_prep is an option too.
    wsj.prepare_wsjmix(root, save, version="max", strict_prep=True)
    assert len(calls) == 10
    # Another number of speakers is rebuilt (and the 2-speaker data has no s3).
    with pytest.raises(wsj.LayoutError, match="s3"):
        wsj.prepare_wsjmix(root, save, version="max", n_spks=3, strict_prep=True)
    # A folder whose data changed is rebuilt even with the same options.
    wsj.prepare_wsjmix(root, save)
    calls.clear()
    os.utime(Path(root) / "wav8k" / "min" / "cv" / "s2")
    wsj.prepare_wsjmix(root, save)
    assert len(calls) == 4


def test_librimix_own_options_rebuild(tmp_path, monkeypatch):
    root = make_librimix(
        tmp_path / "d", sizes={"train": 2, "dev": 1, "test": 1}, seconds=SECONDS
    )
    save = tmp_path / "save"
    calls = _counting(monkeypatch, libri)
    out = libri.prepare_librimix(root, save)
    libri.prepare_librimix(root, save)
    assert len(calls) == 4
    libri.prepare_librimix(root, save, mixture="clean")
    assert len(calls) == 8
    with open(out["train"], newline="") as handle:
        assert "/mix_clean/" in next(csv.DictReader(handle))["mix_wav"]
    libri.prepare_librimix(root, save, mixture="clean")
    assert len(calls) == 8


# ------------------------------------------------------ the recipe, end to end
def _train_module(folder, name):
    spec = importlib.util.spec_from_file_location(name, folder / "train.py")
    module = importlib.util.module_from_spec(spec)
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(folder))
        spec.loader.exec_module(module)
    return module


def _tiny_run(out, data_folder, *extra):
    argv = [
        *TINY_OVERRIDES["sepformer"],
        "--N_epochs",
        "1",
        "--batch_size",
        "2",
        "--num_workers",
        "0",
        "--noprogressbar",
        "--output_folder",
        str(out),
        *extra,
    ]
    if data_folder is not None:
        argv += ["--data_folder", str(data_folder)]
    return argv


def test_wsj0mix_recipe_trains_on_the_corrupt_corpus(
    corrupt_wsj, tmp_path, monkeypatch
):
    root, reasons, kept = corrupt_wsj
    module = _train_module(WSJ_DIR, "test_prep_sep_bad_wsj_train")
    monkeypatch.syspath_prepend(str(WSJ_DIR))
    hparams = str(WSJ_DIR / "hparams" / "sepformer.yaml")

    # strict_prep: the run ends like a bad option, every bad file listed.
    stream = io.StringIO()
    argv = [hparams, *_tiny_run(tmp_path / "strict", root, "--strict_prep", "True")]
    with pytest.raises(SystemExit) as info:
        with exit_on_config_error(argv, stream=stream):
            module.main(argv)
    assert info.value.code == EXIT_CONFIG_ERROR
    text = stream.getvalue()
    assert text.startswith("error: 5 bad audio files (strict_prep is on):")
    assert all(path in text for path in reasons) and "Traceback" not in text

    # Default: the bad mixtures are left out and training goes on.
    out = tmp_path / "run"
    module.main([hparams, *_tiny_run(out, root)])
    assert sorted(_report(out / "save")) == sorted(reasons)
    assert _ids(out / "save" / "wsj_tr.csv") == kept["train"]
    log = (out / "train_log.txt").read_text()
    assert log.startswith("epoch: 1") and "train batches: 1" in log
    with open(out / "test_results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(r["snt_id"] for r in rows[:-1]) == kept["test"]
    assert rows[-1]["snt_id"] == "avg"
