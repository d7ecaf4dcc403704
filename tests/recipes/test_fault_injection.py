"""Broken training audio: counted, named once, never averaged into NaN.

5 % of the training clips of a keyword-spotting corpus are replaced, after
preparation, by silent, NaN-valued, clipped, zero-length and unreadable
files, as a disk or a data pipeline can corrupt them mid-experiment.
"""

import collections
import csv
import importlib.util
import json
import pathlib
import pickle
import re
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import KWS_TINY_MODEL

from hardmine.synthetic.gsc import generate_gsc
from hardmine.tasks.separation import TINY_OVERRIDES

RECIPE = (
    pathlib.Path(__file__).resolve().parents[2] / "recipes/GoogleSpeechCommands/kws"
)
SR = 16000


def _write_broken(path, kind):
    if kind == "silent":
        sf.write(path, np.zeros(SR, dtype=np.float32), SR)
    elif kind == "nan":
        data = np.random.default_rng(0).normal(0, 0.1, SR).astype(np.float32)
        data[::7] = np.nan
        sf.write(path, data, SR, subtype="FLOAT")
    elif kind == "clipped":
        t = np.arange(SR) / SR
        sf.write(path, np.clip(3.0 * np.sin(2 * np.pi * 300 * t), -1, 1), SR)
    elif kind == "zero-length":
        sf.write(path, np.zeros(0, dtype=np.float32), SR)
    elif kind == "unreadable":
        pathlib.Path(path).write_bytes(b"this is not a RIFF file at all\n" * 10)


BROKEN_KINDS = {
    "silent": "silent",
    "nan": "non-finite",
    "clipped": "clipped",
    "zero-length": "zero-length",
    "unreadable": "unreadable",
}


@pytest.fixture(scope="module")
def corrupted(tmp_path_factory):
    """A prepared corpus whose training clips are then 5 % broken."""
    root = tmp_path_factory.mktemp("faults")
    corpus = generate_gsc(
        str(root / "speech_commands"),
        words=("yes", "no", "up", "cat"),
        n_speakers=15,
        repetitions=2,
        valid_speakers=1,
        test_speakers=1,
        background_seconds=12.0,
        seed=11,
    )
    spec = importlib.util.spec_from_file_location(
        "kws_train_faults", RECIPE / "train.py"
    )
    train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train)
    from prepare_gsc import prepare_gsc

    save = root / "prepared"
    files = prepare_gsc(corpus, str(save))
    with open(files["train"], newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["command"] != "_silence_"]
    n_bad = len(BROKEN_KINDS)
    assert 0.04 <= n_bad / len(rows) <= 0.06, len(rows)  # 5 % of the clips
    picked = {}
    for row, kind in zip(rows[:: len(rows) // n_bad], BROKEN_KINDS):
        path = row["wav"].replace("$data_root", corpus)
        _write_broken(path, kind)
        picked[row["ID"]] = BROKEN_KINDS[kind]
    return train, corpus, save, picked


def _run(train, corpus, prepared, out, variant, epochs=3, extra=()):
    save = out / "save"  # each run its own checkpoints, with the prepared lists
    shutil.copytree(prepared, save)
    train.main(
        [
            str(RECIPE / "hparams" / f"{variant}.yaml"),
            "--data_folder",
            corpus,
            "--output_folder",
            str(out),
            "--save_folder",
            str(save),
            "--number_of_epochs",
            str(epochs),
            "--n_classes",
            "5",
            "--skip_prep",
            "True",
            *KWS_TINY_MODEL,
            *extra,
        ]
    )
    lines = (out / "mining_stats.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines], save


def _floats_in(value, where):
    """``(where, value)`` of every float tensor and float nested in ``value``.

    Walks dicts, lists and tuples at any depth: an optimizer's state dict
    holds its moment estimates in ``state[param_index][name]``.
    """
    if isinstance(value, torch.Tensor):
        if value.is_floating_point() or value.is_complex():
            yield where, value
    elif isinstance(value, float):
        yield where, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _floats_in(item, f"{where}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _floats_in(item, f"{where}[{i}]")


def _assert_finite_checkpoints(folder):
    """Every floating-point tensor saved in every checkpoint is finite.

    Top-level tensors (model parameters) and tensors nested in dicts and
    lists (the optimizer's per-parameter state) alike.
    """
    ckpts = sorted(folder.glob("CKPT*"))
    assert ckpts
    checked = 0
    nested = {}
    for ckpt in ckpts:
        for f in ckpt.glob("*.ckpt"):
            try:
                state = torch.load(f, map_location="cpu", weights_only=False)
            except (pickle.UnpicklingError, RuntimeError):
                continue  # not a torch file (epoch counter, sampler arrays)
            if not isinstance(state, dict):
                continue
            for value in state.values():
                if isinstance(value, torch.Tensor) and value.is_floating_point():
                    assert torch.isfinite(value).all(), f
                    checked += 1
            for where, value in _floats_in(state, f.name):
                if isinstance(value, torch.Tensor):
                    assert torch.isfinite(value).all(), where
                    if where.count("[") > 1:
                        nested[f.name] = nested.get(f.name, 0) + 1
                else:
                    assert np.isfinite(value), where
    assert checked > 0
    # The optimizer's moments were among the tensors checked.
    assert nested.get("optimizer.ckpt", 0) > 0, nested


def _majority_share(csv_path):
    """Accuracy of the best constant classifier on a prepared split."""
    with open(csv_path, newline="") as f:
        labels = [row["command"] for row in csv.DictReader(f)]
    counts = collections.Counter(labels)
    return max(counts.values()) / len(labels), len(labels)


@pytest.mark.slow
def test_broken_clips_are_named_once_counted_and_never_reach_the_weights(
    corrupted, tmp_path
):
    train, corpus, save, picked = corrupted
    out = tmp_path / "baseline"
    stats, save = _run(train, corpus, save, out, "kws")
    # Every epoch visits every clip once: each broken one is counted each epoch.
    assert [s["examples_bad_audio"] for s in stats] == [len(picked)] * 3
    assert all(np.isfinite(s["weights_ess"]) for s in stats)
    for s in stats:
        # Uniform weights: the effective sample size of a batch is the number
        # of examples its loss averaged, so broken clips must be left out.
        assert s["batches_skipped"] == 0 and s["examples_filtered"] == 0
        used = s["examples"] - s["examples_bad_audio"]
        assert s["weights_ess"] == pytest.approx(used / s["batches"], rel=1e-9)
    log = (out / "log.txt").read_text()
    for uid, problem in picked.items():
        named = re.findall(
            rf"Broken audio in example {re.escape(uid)} \(([^)]*)\)", log
        )
        assert named == [problem], (uid, named)
    summary = json.loads((out / "test_summary.json").read_text())
    assert summary["accuracy"] > 0.2
    # A constant classifier scores at most the majority share of the test
    # split (2 of 9 clips here): the trained one must beat it.
    majority, n_test = _majority_share(save / "test.csv")
    assert summary["n_examples"] == n_test
    assert summary["accuracy"] > majority + 0.5 / n_test, (summary, majority)
    predicted = np.array(summary["confusion"]).sum(axis=0)
    assert np.count_nonzero(predicted) >= 3, summary["confusion"]
    _assert_finite_checkpoints(save)


@pytest.mark.slow
def test_robust_weights_over_batches_with_broken_clips_are_proper(corrupted, tmp_path):
    """Softmax weights exist here: their effective sample size is a real one."""
    train, corpus, save, picked = corrupted
    out = tmp_path / "robust"
    stats, save = _run(train, corpus, save, out, "kws_robust")
    assert [s["examples_bad_audio"] for s in stats] == [len(picked)] * 3
    batch_size = int(KWS_TINY_MODEL[KWS_TINY_MODEL.index("--batch_size") + 1])
    for s in stats:
        assert s["batches_skipped"] == 0 and np.isfinite(s["temperature"])
        used = (s["examples"] - s["examples_bad_audio"]) / s["batches"]
        # 1 / sum(p^2) of weights summing to 1 over the examples kept: more
        # than one example, fewer than uniform weights over the kept ones.
        assert np.isfinite(s["weights_ess"]), s
        assert 1.0 < s["weights_ess"] < used <= batch_size, s
    _assert_finite_checkpoints(save)


@pytest.mark.slow
def test_isbl_does_not_collapse_onto_broken_clips(corrupted, tmp_path):
    train, corpus, save, picked = corrupted
    out = tmp_path / "isbl"
    stats, save = _run(train, corpus, save, out, "kws_isbl", epochs=7)
    # Once seen, a broken clip is quarantined (weight eps): by the last epoch
    # the broken 5 % of the clips get far less than 5 % of the draws.
    last = stats[-1]
    assert last["sampler_n_quarantined"] >= 1
    assert last["examples_bad_audio"] <= 0.01 * last["examples"] + 1
    assert sum(s["examples_bad_audio"] for s in stats) >= 1
    # Decisively: once all of them are quarantined, each weighs eps = 1e-6,
    # a millionth of a clip of loss ~1 in a pool of dozens of clips, so the
    # remaining epochs (hundreds of draws) draw none of them but with a
    # probability of order 1e-4. A quarantine that left them a weight like
    # the others' (~1) would give ~5 draws per epoch: none in 4 epochs has
    # probability ~e^-20.
    full = [s["sampler_n_quarantined"] == len(picked) for s in stats]
    assert True in full, [s["sampler_n_quarantined"] for s in stats]
    after = stats[full.index(True) + 1 :]
    assert len(after) >= 4, [s["sampler_n_quarantined"] for s in stats]
    assert all(s["sampler_n_quarantined"] == len(picked) for s in after)
    assert sum(s["examples"] for s in after) >= 400
    assert [s["examples_bad_audio"] for s in after] == [0] * len(after)
    _assert_finite_checkpoints(save)


SEP_RECIPE = RECIPE.parents[1] / "WSJ0Mix/separation"


@pytest.mark.slow
def test_silent_and_broken_separation_targets_never_make_a_nan_weight(
    tmp_path, monkeypatch
):
    """Robust weights with a capacity controller over batches holding a silent
    target (SI-SNR undefined), a NaN-valued target and an unreadable mixture."""
    from hardmine.synthetic.layouts import make_wsj0mix

    root = make_wsj0mix(
        str(tmp_path / "wsj"), sizes={"tr": 40, "cv": 2, "tt": 2}, seconds=0.5, seed=3
    )
    monkeypatch.syspath_prepend(str(SEP_RECIPE))  # train.py imports its prepare script
    spec = importlib.util.spec_from_file_location(
        "sep_train_faults", SEP_RECIPE / "train.py"
    )
    train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train)
    out = tmp_path / "robust"
    common = [
        "--data_folder", root, "--output_folder", str(out),
        *TINY_OVERRIDES["sepformer"],
        "--num_workers", "0", "--noprogressbar", "--batch_size", "4", "--N_epochs", "1",
    ]  # fmt: skip
    # Prepare first, then corrupt: as if the files broke after preparation.
    from prepare_wsj0mix import prepare_wsjmix

    prepare_wsjmix(root, str(out / "save"))
    split = pathlib.Path(root) / "wav8k/min/tr"
    names = sorted(p.name for p in (split / "mix").iterdir())
    broken = {
        names[3]: ("s1", "silent"),
        names[17]: ("s2", "nan"),
        names[30]: ("mix", "unreadable"),
    }
    for name, (folder, kind) in broken.items():
        path = split / folder / name
        n = sf.info(str(path)).frames if kind != "unreadable" else 0
        if kind == "silent":
            sf.write(str(path), np.zeros(n, dtype=np.float32), 8000)
        elif kind == "nan":
            sf.write(
                str(path), np.full(n, np.nan, dtype=np.float32), 8000, subtype="FLOAT"
            )
        else:
            path.write_bytes(b"not audio")
    train.main(
        [str(SEP_RECIPE / "hparams/sepformer_robust.yaml"), *common,
         "--skip_prep", "True", "--reweight_capacity", "0.3"]
    )  # fmt: skip

    stats = json.loads((out / "mining_stats.jsonl").read_text().splitlines()[-1])
    assert stats["examples_bad_audio"] == 3
    assert np.isfinite(stats["weights_ess"]) and 1.0 <= stats["weights_ess"] <= 4.0
    assert np.isfinite(stats["beta"]) and np.isfinite(stats["weights_kl"])
    assert stats["batches_skipped"] == 0  # the rest of each batch still trained
    log = (out / "log.txt").read_text()
    for name in broken:
        uid = name[: -len(".wav")]
        assert (
            len(re.findall(rf"Broken audio in example {re.escape(uid)} ", log)) == 1
        ), uid
    _assert_finite_checkpoints(out / "save")
