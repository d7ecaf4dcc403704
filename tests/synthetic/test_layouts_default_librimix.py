"""The LibriMix recipe's embedded default set: Libri2Mix layout with noise,
generated once and cached like the WSJ0-2mix one."""

import csv
import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import hardmine.synthetic.layouts as layouts
from hardmine.tasks import separation
from hardmine.validation import ConfigError

TINY = {"train": 3, "dev": 1, "test": 2}


@pytest.fixture
def tiny_default(monkeypatch, tmp_path):
    monkeypatch.setattr(layouts, "DEFAULT_LIBRI_SIZES", dict(TINY))
    return tmp_path / "cache"


def test_default_librimix_layout_with_noise(tiny_default, caplog):
    with caplog.at_level(logging.INFO):
        root = layouts.default_librimix(tiny_default)
    assert root == str(tiny_default / "librimix-default")
    assert "Generating" in caplog.text
    base = Path(root) / "wav8k" / "min"
    assert sorted(os.listdir(base)) == [
        "dev",
        "metadata",
        "mixture_info.csv",
        "test",
        "train-360",
    ]
    for split, count in (("train-360", 3), ("dev", 1), ("test", 2)):
        folders = sorted(os.listdir(base / split))
        assert folders == ["mix_both", "mix_clean", "noise", "s1", "s2"]
        names = sorted(os.listdir(base / split / "mix_both"))
        assert len(names) == count
        for folder in folders:
            assert sorted(os.listdir(base / split / folder)) == names
        for name in names:
            read = {f: sf.read(base / split / f / name, dtype="int16") for f in folders}
            assert {sr for _, sr in read.values()} == {8000}
            assert {len(x) for x, _ in read.values()} == {16000}  # 2 s, min
            noise = read["noise"][0].astype(np.int64)
            speech = read["s1"][0].astype(np.int64) + read["s2"][0]
            assert np.any(noise != 0)
            assert np.array_equal(read["mix_both"][0], speech + noise)
            assert np.array_equal(read["mix_clean"][0], speech)
        # The metadata name the files where the set ended up, not where it
        # was written before being renamed into place.
        with open(base / "metadata" / f"mixture_{split}_mix_both.csv") as handle:
            rows = list(csv.DictReader(handle))
        assert len(rows) == count
        for row in rows:
            for key in ("mixture_path", "source_1_path", "source_2_path", "noise_path"):
                assert row[key].startswith(root + os.sep) and os.path.isfile(row[key])
    marker = json.loads((Path(root) / "hardmine-dataset.json").read_text())
    assert marker["layout"] == "libri2mix" and marker["sizes"] == TINY
    # Cached: a second call finds it and does not write it again.
    stamp = os.path.getmtime(Path(root) / "hardmine-dataset.json")
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert layouts.default_librimix(tiny_default) == root
    assert "Generating" not in caplog.text
    assert os.path.getmtime(Path(root) / "hardmine-dataset.json") == stamp


def test_default_sizes_and_environment(monkeypatch, tmp_path):
    assert layouts.DEFAULT_LIBRI_SIZES == {"train": 400, "dev": 50, "test": 100}
    monkeypatch.setattr(layouts, "DEFAULT_LIBRI_SIZES", dict(TINY))
    monkeypatch.setenv("HARDMINE_CACHE", str(tmp_path / "env"))
    assert layouts.default_librimix() == str(tmp_path / "env" / "librimix-default")


def test_resolve_data_folder_librimix(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(
        layouts, "default_librimix", lambda cache_dir=None: calls.append(1) or "L"
    )
    monkeypatch.setattr(
        layouts, "default_wsj0mix", lambda cache_dir=None: calls.append(2) or "W"
    )
    h = {"data_folder": None, "num_spks": 2, "sample_rate": 8000, "version": "min"}
    libri = {**h, "mixture": "both", "train_set": "train-360"}
    assert separation.resolve_data_folder(libri, embedded_default="librimix") == "L"
    assert separation.resolve_data_folder(h, embedded_default="wsj0mix") == "W"
    assert separation.resolve_data_folder(h) == "W"
    assert calls == [1, 2, 2]
    for change in (
        {"num_spks": 3},
        {"sample_rate": 16000},
        {"version": "max"},
        {"train_set": "train-100"},
    ):
        with pytest.raises(ConfigError, match="^data_folder: the embedded default"):
            separation.resolve_data_folder(
                {**libri, **change}, embedded_default="librimix"
            )
    with pytest.raises(ValueError, match="embedded_default"):
        separation.resolve_data_folder(h, embedded_default="gsc")
    assert calls == [1, 2, 2]
