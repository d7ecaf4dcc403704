"""The LibriMix recipe runs out of the box: without --data_folder it trains on
its embedded default set (generated into a temporary cache here)."""

import csv
import importlib.util
from pathlib import Path

import pytest

import hardmine.synthetic.layouts as layouts
from hardmine.tasks.separation import TINY_OVERRIDES
from hardmine.validation import ConfigError

ROOT = Path(__file__).resolve().parents[2]
LIBRI_DIR = ROOT / "recipes" / "LibriMix" / "separation"


def test_librimix_trains_without_data_folder(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("HARDMINE_CACHE", str(cache))
    # The real set has 400/50/100 mixtures of 2 s; the same generator, tiny.
    monkeypatch.setattr(
        layouts, "DEFAULT_LIBRI_SIZES", {"train": 2, "dev": 1, "test": 1}
    )
    monkeypatch.setattr(layouts, "DEFAULT_LIBRI_SECONDS", 0.25)
    spec = importlib.util.spec_from_file_location(
        "test_librimix_default_train", LIBRI_DIR / "train.py"
    )
    module = importlib.util.module_from_spec(spec)
    monkeypatch.syspath_prepend(str(LIBRI_DIR))
    spec.loader.exec_module(module)
    out = tmp_path / "run"
    module.main(
        [
            str(LIBRI_DIR / "hparams" / "sepformer.yaml"),
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
        ]
    )
    default = cache / "librimix-default"
    with open(out / "save" / "libri2mix_train.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2
    for row in rows:
        assert row["mix_wav"].startswith(str(default / "wav8k" / "min" / "train-360"))
        assert "/mix_both/" in row["mix_wav"] and "/noise/" in row["noise_wav"]
    log = (out / "train_log.txt").read_text()
    assert log.startswith("epoch: 1") and "train batches: 1" in log
    with open(out / "test_results.csv", newline="") as handle:
        assert [r["snt_id"] for r in csv.DictReader(handle)][-1] == "avg"
    # A LibriMix option the default set does not have names data_folder.
    with pytest.raises(ConfigError, match="^data_folder: the embedded default"):
        module.main(
            [
                str(LIBRI_DIR / "hparams" / "sepformer.yaml"),
                "--train_set",
                "train-100",
                "--output_folder",
                str(tmp_path / "other"),
            ]
        )
