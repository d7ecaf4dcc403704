"""The Speech Commands keyword-spotting recipe, end to end on generated data."""

import csv
import importlib.util
import json
import os
import pathlib
import shlex
import socket
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import speechbrain as sb
import torch
import yaml
from conftest import KWS_TINY_MODEL
from hyperpyyaml import load_hyperpyyaml

from hardmine.catpow import CategoryDatasetPowerSampler
from hardmine.isbl import ISBLSampler
from hardmine.reweighting import SoftmaxReweighting
from hardmine.tasks.kws import dataio_prep, log_posteriors, read_clip, set_norm
from hardmine.validation import ConfigError

RECIPE = (
    pathlib.Path(__file__).resolve().parents[2] / "recipes/GoogleSpeechCommands/kws"
)
VARIANTS = (
    "kws",
    "kws_isbl",
    "kws_balanced",
    "kws_class_bias",
    "kws_robust",
    "kws_catpow",
)
# yes, no, up + _unknown_ (cat) + _silence_
TINY_CLASSES = 5
TINY_MODEL = KWS_TINY_MODEL


def _load(variant, tmp_path, corpus, overrides=None):
    overrides = {
        "data_folder": corpus,
        "output_folder": str(tmp_path / "out"),
        "n_classes": TINY_CLASSES,
        **(overrides or {}),
    }
    with open(RECIPE / "hparams" / f"{variant}.yaml") as f:
        return load_hyperpyyaml(f, overrides)


def _prepare(hparams):
    sys.path.insert(0, str(RECIPE))
    try:
        from prepare_gsc import prepare_gsc
    finally:
        sys.path.remove(str(RECIPE))
    prepare_gsc(hparams["data_folder"], hparams["save_folder"])


def test_variants_differ_only_in_the_mining_section():
    def parts(variant):
        text = (RECIPE / "hparams" / f"{variant}.yaml").read_text()
        head, mining = text.split("Mining\n")
        # Line 1 is the title; `experiment` names the output folder.
        lines = head.splitlines()
        kept = [
            ln
            for i, ln in enumerate(lines)
            if i != 1 and not ln.startswith("experiment:")
        ]
        return kept, mining

    def settings(mining):
        return [ln for ln in mining.splitlines() if ln and not ln.startswith("#")]

    base_head, base_mining = parts("kws")
    assert len(base_head) > 80
    for variant in VARIANTS[1:]:
        head, mining = parts(variant)
        assert head == base_head, variant
        assert mining != base_mining
        # Full files differing in defaults: the same handles, values changed.
        changed = [
            (a, b)
            for a, b in zip(settings(base_mining), settings(mining), strict=True)
            if a != b
        ]
        assert changed == MINING_DEFAULTS[variant], variant


# The mining defaults each variant file changes in kws.yaml.
MINING_DEFAULTS = {
    "kws_isbl": [("sampler: null", "sampler: isbl")],
    "kws_balanced": [
        ("sampler: null", "sampler: isbl"),
        ("isbl_alpha: 0.75", "isbl_alpha: 0.0"),
        ("isbl_pool_field: pool", "isbl_pool_field: command"),
        (
            "isbl_pool_mix: {}",
            'isbl_pool_mix: {"*": equal, _unknown_: natural, _silence_: natural}',
        ),
    ],
    "kws_catpow": [("sampler: null", "sampler: catpow")],
    "kws_robust": [("reweight_mode: uniform", "reweight_mode: robust")],
    "kws_class_bias": [("reweight_mode: uniform", "reweight_mode: class_bias")],
}


def _entries(hparams):
    """The mining objects of a loaded file, comparable across files."""
    sampler, rw = hparams["mining_sampler"], hparams["reweighting"]
    return (
        None if sampler is None else (sampler.func, sampler.keywords),
        (rw.mode, rw.schedule.__dict__, rw.class_field, rw.favoured, rw.gamma),
        hparams["threshold_filter"].threshold,
        hparams["loss_limit"].loss_upper_lim,
    )


@pytest.mark.parametrize("variant", VARIANTS[1:])
def test_base_file_takes_every_variant_from_the_command_line(
    variant, tmp_path, tiny_corpus
):
    # As the command line gives them: each value parsed as YAML.
    overrides = dict(changed.split(": ", 1) for _, changed in MINING_DEFAULTS[variant])
    overrides = {k: yaml.safe_load(v) for k, v in overrides.items()}
    from_base = _load("kws", tmp_path, tiny_corpus, overrides)
    assert _entries(from_base) == _entries(_load(variant, tmp_path, tiny_corpus))


def test_catpow_sampler_from_kws_yaml(tmp_path, tiny_corpus):
    # python train.py hparams/kws.yaml --sampler catpow
    _, _, overrides = sb.parse_arguments(
        [str(RECIPE / "hparams" / "kws.yaml"), "--sampler", "catpow"]
    )
    hparams = _load("kws", tmp_path, tiny_corpus, yaml.safe_load(overrides))
    _prepare(hparams)
    datasets, _, _ = dataio_prep(hparams, tiny_corpus)
    sampler = hparams["mining_sampler"](datasets["train"])
    assert isinstance(sampler, CategoryDatasetPowerSampler)
    assert sampler.max_batch_size == hparams["batch_size"]
    assert sampler.min_batch_size == 2
    assert hparams["reweighting"].mode == "uniform"
    assert hparams["threshold_filter"].threshold is None  # off for KWS
    # The baseline itself has no sampler; an unknown one names the handle.
    assert _load("kws", tmp_path, tiny_corpus)["mining_sampler"] is None
    with pytest.raises(ConfigError, match="^sampler: .*'foo'") as info:
        _load("kws", tmp_path, tiny_corpus, {"sampler": "foo"})
    assert info.value.field == "sampler"


@pytest.mark.parametrize("variant", VARIANTS)
def test_num_workers_handle(variant, tmp_path, tiny_corpus):
    # The same handle as in the separation recipes.
    hparams = _load(variant, tmp_path, tiny_corpus)
    assert hparams["num_workers"] == 0
    assert hparams["dataloader_options"]["num_workers"] == 0
    hparams = _load(variant, tmp_path, tiny_corpus, {"num_workers": 2})
    assert hparams["dataloader_options"]["num_workers"] == 2
    assert hparams["test_dataloader_options"]["num_workers"] == 2


def test_balanced_yaml_draws_every_keyword_equally_often(tmp_path, tiny_corpus):
    hparams = _load("kws_balanced", tmp_path, tiny_corpus)
    _prepare(hparams)
    # Unbalance the keywords: half of the "yes" clips leave the training set.
    train_csv = pathlib.Path(hparams["save_folder"]) / "train.csv"
    rows = _rows(train_csv)
    yes = [i for i, r in enumerate(rows) if r["command"] == "yes"]
    rows = [r for i, r in enumerate(rows) if i not in yes[: len(yes) // 2]]
    with open(train_csv, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    datasets, _, _ = dataio_prep(hparams, tiny_corpus)
    sampler = hparams["mining_sampler"](datasets["train"])
    sizes = dict(zip(sampler.pool_names, sampler.table.pool_sizes, strict=True))
    keywords = ["no", "up", "yes"]
    assert sorted(sizes) == ["_silence_", "_unknown_"] + keywords
    assert len({sizes[k] for k in keywords}) > 1  # the data is not balanced
    shares = dict(zip(sampler.pool_names, sampler.pool_mix_probs, strict=True))
    total = sum(sizes.values())
    for k in keywords:  # equal, and together the keywords' share of the data
        assert shares[k] == pytest.approx(sum(sizes[w] for w in keywords) / 3 / total)
    for k in ("_unknown_", "_silence_"):
        assert shares[k] == pytest.approx(sizes[k] / total)
    assert sampler.table.alpha == 0.0  # no loss in the draws
    # A mapping on the command line merges into the file's (hyperpyyaml);
    # a string replaces it.
    merged = _load("kws_balanced", tmp_path, tiny_corpus, {"isbl_pool_mix": {"no": 0}})
    assert merged["isbl_pool_mix"] == {
        "*": "equal",
        "_unknown_": "natural",
        "_silence_": "natural",
        "no": 0,
    }
    plain = _load("kws_balanced", tmp_path, tiny_corpus, {"isbl_pool_mix": "uniform"})
    assert plain["isbl_pool_mix"] == "uniform"


def test_isbl_yaml_builds_a_pooled_sampler_and_forwards_handles(tmp_path, tiny_corpus):
    hparams = _load(
        "kws_isbl", tmp_path, tiny_corpus, {"isbl_alpha": 0.5, "batch_size": 4}
    )
    _prepare(hparams)
    datasets, _, _ = dataio_prep(hparams, tiny_corpus)
    sampler = hparams["mining_sampler"](datasets["train"])
    assert isinstance(sampler, ISBLSampler)
    assert sampler.handles_distributed
    assert sampler.pool_names == ["negatives", "targets"]
    assert sampler.batch_size == 4
    assert sampler.table.alpha == 0.5


def test_reweighting_yaml_handles(tmp_path, tiny_corpus):
    bias = _load(
        "kws_class_bias",
        tmp_path,
        tiny_corpus,
        {"reweight_favoured": ["up"], "reweight_gamma": 2.0},
    )["reweighting"]
    assert isinstance(bias, SoftmaxReweighting)
    assert (bias.mode, bias.class_field, bias.favoured, bias.gamma) == (
        "class_bias",
        "command",
        {"up"},
        2.0,
    )
    robust = _load("kws_robust", tmp_path, tiny_corpus, {"reweight_temperature": 3.0})
    assert robust["reweighting"].mode == "robust"
    assert robust["reweighting"].temperature(1, 0) == 3.0


@pytest.mark.parametrize("variant", ["kws", "kws_isbl"])
def test_keep_hardest_handle(variant, tmp_path, tiny_corpus):
    assert _load(variant, tmp_path, tiny_corpus)["threshold_filter"].active is False
    h = _load(variant, tmp_path, tiny_corpus, {"keep_hardest": 0.5})
    assert h["threshold_filter"].keep_hardest == 0.5
    assert h["threshold_filter"].threshold is None
    with pytest.raises(ConfigError, match="^keep_hardest: must be <= 1.0, got 2.0"):
        _load(variant, tmp_path, tiny_corpus, {"keep_hardest": 2})


def test_pipeline_items_and_label_order(tmp_path, tiny_corpus):
    hparams = _load("kws", tmp_path, tiny_corpus)
    _prepare(hparams)
    datasets, encoder, keywords = dataio_prep(hparams, tiny_corpus)
    assert keywords == ["yes", "no", "up"]
    assert [encoder.ind2lab[i] for i in range(len(encoder))] == [
        "yes",
        "no",
        "up",
        "_silence_",
        "_unknown_",
    ]
    train = datasets["train"]
    commands = set()
    for i in range(len(train)):
        item = train[i]
        assert item["sig"].shape == (16000,)
        assert item["audio_problem"] == ""
        assert encoder.ind2lab[int(item["command_encoded"])] == item["command"]
        commands.add(item["command"])
        expected_pool = "targets" if item["command"] in keywords else "negatives"
        assert item["pool"] == expected_pool
    assert commands == set(keywords) | {"_silence_", "_unknown_"}
    # A silence item is its CSV crop of the noise file.
    row = next(r for r in train.data.values() if r["command"] == "_silence_")
    index = train.data_ids.index(next(k for k, r in train.data.items() if r is row))
    noise, _ = sf.read(row["wav"], dtype="float32")
    start = int(row["start"])
    np.testing.assert_allclose(
        train[index]["sig"].numpy(), noise[start : start + 16000], atol=1e-6
    )


def test_read_clip_pads_and_flags(tmp_path):
    path = str(tmp_path / "short.wav")
    sf.write(path, 0.1 * np.ones(8000, dtype=np.float32), 16000)
    sig, problem = read_clip(path, 0, 8000, 16000, 16000)
    assert problem == "" and sig.shape == (16000,)
    assert float(sig[:8000].min()) > 0.09 and float(sig[8000:].abs().max()) == 0.0
    sig, problem = read_clip(path, 0, 8000, 8000, 8000)
    assert problem and sig.shape == (8000,)  # wrong sampling rate
    sig, problem = read_clip(str(tmp_path / "missing.wav"), 0, 0, 16000, 16000)
    assert problem and float(sig.abs().max()) == 0.0


def test_bad_class_count_is_caught_before_training(tmp_path, tiny_corpus):
    hparams = _load("kws", tmp_path, tiny_corpus, {"n_classes": 12})
    _prepare(hparams)
    with pytest.raises(ConfigError, match=r"n_classes: .*5 classes.*--n_classes 5"):
        dataio_prep(hparams, tiny_corpus)


def test_unseen_test_label_is_caught(tmp_path, tiny_corpus):
    hparams = _load("kws", tmp_path, tiny_corpus)
    _prepare(hparams)
    with open(hparams["test_csv"], "a") as f:
        f.write("odd,1.0,$data_root/yes/x.wav,0,16000,maybe,negatives\n")
    with pytest.raises(ConfigError, match=r"test_csv.*maybe"):
        dataio_prep(hparams, tiny_corpus)


def _train_module():
    spec = importlib.util.spec_from_file_location("kws_train", RECIPE / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(
    variant, out, corpus, epochs=2, n_classes=TINY_CLASSES, extra=(), model=TINY_MODEL
):
    """Run the recipe's main() in this process (saves the interpreter start-up)."""
    argv = [
        str(RECIPE / "hparams" / f"{variant}.yaml"),
        "--output_folder",
        str(out),
        "--number_of_epochs",
        str(epochs),
        "--n_classes",
        str(n_classes),
        *model,
        *extra,
    ]
    if corpus is not None:
        argv += ["--data_folder", corpus]
    _train_module().main(argv)


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
@pytest.mark.parametrize("variant", VARIANTS)
def test_recipe_end_to_end(variant, tmp_path, tiny_corpus):
    out = tmp_path / "out"
    _run(variant, out, tiny_corpus)
    test_ids = [r["ID"] for r in _rows(out / "save" / "test.csv")]
    results = _rows(out / "test_results.csv")
    assert [r["ID"] for r in results] == test_ids
    assert list(results[0]) == ["ID", "label", "prediction", "correct", "score"]
    for r in results:
        assert r["correct"] == str(int(r["label"] == r["prediction"]))
        assert 0.0 <= float(r["score"]) <= 1.0
    summary = json.loads((out / "test_summary.json").read_text())
    assert summary["n_examples"] == len(test_ids)
    correct = sum(int(r["correct"]) for r in results)
    assert summary["accuracy"] == pytest.approx(correct / len(results))
    assert set(summary["frr_at_far"]) == {"0.01", "0.05"}
    assert summary["n_targets"] == sum(
        r["label"] in ("yes", "no", "up") for r in results
    )

    stats = [
        json.loads(line)
        for line in (out / "mining_stats.jsonl").read_text().splitlines()
    ]
    assert [s["epoch"] for s in stats] == [1, 2]
    n_train = len(_rows(out / "save" / "train.csv"))
    log = (out / "train_log.txt").read_text()
    assert "epoch: 2" in log and "valid accuracy" in log and "test frr@far0.01" in log
    uniform_ess = n_train / stats[-1]["batches"]  # mean batch size
    if variant in ("kws_isbl", "kws_balanced"):
        # Draws with replacement: an epoch is as many draws as examples,
        # rounded up to whole batches.
        assert all(n_train <= s["examples"] < n_train + 8 for s in stats)
        assert 0 < stats[-1]["sampler_coverage"] <= 1
    elif variant == "kws_catpow":
        # dataset_scaling_factor 1.2: int(1.2 * total bins / mean bins) draws,
        # less a short final batch (drop_last).
        assert all(1.2 * n_train - 9 <= s["examples"] <= 1.2 * n_train for s in stats)
        assert 0 < stats[-1]["sampler_coverage"] <= 1
    else:
        assert all(s["examples"] == n_train for s in stats)
        assert "sampler_coverage" not in stats[-1]
    if variant == "kws":
        assert stats[-1]["weights_ess"] == pytest.approx(uniform_ess)
    if variant == "kws_robust":
        assert stats[-1]["temperature"] == 1.0
    if variant in ("kws_robust", "kws_class_bias"):
        # Unequal weights use fewer examples' worth of the batch than the mean.
        assert stats[-1]["weights_ess"] < uniform_ess - 0.1


@pytest.mark.slow
def test_recipe_task35_every_word_is_a_class(tmp_path, tiny_corpus):
    out = tmp_path / "t35"
    _run("kws_isbl", out, tiny_corpus, epochs=1, n_classes=4, extra=["--task", "35"])
    summary = json.loads((out / "test_summary.json").read_text())
    assert summary["classes"] == ["yes", "no", "up", "cat"]
    assert summary["n_negatives"] == sum(
        r["command"] == "cat" for r in _rows(out / "save" / "test.csv")
    )
    assert "_silence_" not in {r["command"] for r in _rows(out / "save" / "train.csv")}


@pytest.mark.slow
def test_recipe_isbl_under_torchrun(tmp_path, tiny_corpus):
    out = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(_free_port()),
        "train.py",
        "hparams/kws_isbl.yaml",
        "--device",
        "cpu",
        "--distributed_backend",
        "gloo",
        "--output_folder",
        str(out),
        "--data_folder",
        tiny_corpus,
        "--number_of_epochs",
        "1",
        "--n_classes",
        str(TINY_CLASSES),
        *TINY_MODEL,
    ]
    result = subprocess.run(
        cmd, cwd=RECIPE, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    stats = json.loads((out / "mining_stats.jsonl").read_text().splitlines()[-1])
    n_train = len(_rows(out / "save" / "train.csv"))
    # Two ranks share one epoch of draws (global batches of 2 x 8); the
    # statistics sum over both ranks.
    assert n_train <= stats["examples"] < n_train + 16
    assert stats["sampler_coverage"] > 0
    # Every rank's loss table had the same digest at the end of the epoch.
    assert stats["sampler_ranks_agree"] == 1
    assert stats["weights_ranks_agree"] == 1
    assert len(_rows(out / "test_results.csv")) == len(_rows(out / "save" / "test.csv"))


@pytest.mark.slow
def test_recipe_runs_out_of_the_box_on_the_embedded_default(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    out = tmp_path / "default"
    monkeypatch.setenv("HARDMINE_CACHE", str(cache))
    _run("kws", out, None, epochs=1, n_classes=12)
    corpus = cache / "gsc-default"
    assert (corpus / "corpus.json").exists()
    assert len(os.listdir(corpus)) == 13 + 4  # words, noise folder, two lists, marker
    summary = json.loads((out / "test_summary.json").read_text())
    assert summary["n_examples"] == len(_rows(out / "save" / "test.csv")) > 0
    assert len(summary["classes"]) == 12


def test_layer_norm_makes_each_example_independent_of_its_batch(tmp_path, tiny_corpus):
    hparams = _load("kws", tmp_path, tiny_corpus, {"norm": "layer"})
    modules = hparams["modules"]
    n_batch_norms = sum(
        isinstance(m, sb.nnet.normalization.BatchNorm1d)
        for module in modules.values()
        for m in module.modules()
    )
    assert set_norm(modules, "layer") == n_batch_norms > 0
    assert not any(
        isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
        for module in modules.values()
        for m in module.modules()
    )
    for module in modules.values():
        module.train()
    wavs = torch.randn(3, 16000, generator=torch.Generator().manual_seed(0))
    lens = torch.ones(3)
    together = log_posteriors(modules, wavs, lens)
    alone = log_posteriors(modules, wavs[:1], lens[:1])  # batch 1 trains
    torch.testing.assert_close(alone[0], together[0], rtol=1e-5, atol=1e-5)
    # SpeechBrain's BatchNorm would mix the batch into every output:
    batch_norm = _load("kws", tmp_path, tiny_corpus)["modules"]
    for module in batch_norm.values():
        module.train()
    assert not torch.allclose(
        log_posteriors(batch_norm, wavs[:2], lens[:2])[0],
        log_posteriors(batch_norm, wavs, lens)[0],
    )


def test_bad_norm_is_refused(tmp_path, tiny_corpus):
    hparams = _load("kws", tmp_path, tiny_corpus)
    with pytest.raises(
        ConfigError, match=r"^norm: must be one of 'batch', 'layer', got 'group'"
    ):
        set_norm(hparams["modules"], "group")


@pytest.mark.slow
def test_recipe_trains_at_batch_one_with_layer_norm(tmp_path, tiny_corpus):
    out = tmp_path / "out"
    at = TINY_MODEL.index("--batch_size")
    model = TINY_MODEL[:at] + ["--batch_size", "1"] + TINY_MODEL[at + 2 :]
    extra = ["--norm", "layer", "--reweight_partition", "ema"]
    _run("kws_robust", out, tiny_corpus, epochs=1, extra=extra, model=model)
    stats = json.loads((out / "mining_stats.jsonl").read_text().splitlines()[-1])
    n_train = len(_rows(out / "save" / "train.csv"))
    assert stats["batches"] == stats["examples"] == n_train
    summary = json.loads((out / "test_summary.json").read_text())
    assert summary["n_examples"] > 0 and 0.0 <= summary["accuracy"] <= 1.0


@pytest.mark.slow
def test_recipe_mines_negatives_by_false_alarms(tmp_path, tiny_corpus):
    out = tmp_path / "out"
    extra = [
        "--negative_hardness",
        "false_alarm",
        "--isbl_pool_alpha",
        "{targets: 0.0, negatives: 1.0}",
    ]
    _run("kws_isbl", out, tiny_corpus, epochs=1, extra=extra)
    saved = (out / "hyperparams.yaml").read_text().splitlines()
    assert "negative_hardness: false_alarm" in saved
    stats = json.loads((out / "mining_stats.jsonl").read_text().splitlines()[-1])
    assert stats["epoch"] == 1 and stats["examples"] >= len(
        _rows(out / "save" / "train.csv")
    )


def test_every_ruler_variant_loads(tmp_path, tiny_corpus):
    # A typo in a ruler variant's handles would only show after a benchmark
    # has spent its first runs: each variant's command line must load.
    from hardmine.tools.ruler import KWS

    for name, spec in KWS.variants.items():
        path, *args = shlex.split(spec)
        _, _, overrides = sb.parse_arguments([str(RECIPE / path), *args])
        handles = yaml.safe_load(overrides) if overrides else {}
        hparams = _load(pathlib.Path(path).stem, tmp_path, tiny_corpus, handles)
        assert set(handles) <= set(hparams), (name, set(handles) - set(hparams))
