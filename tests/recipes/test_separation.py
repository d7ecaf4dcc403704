"""The separation recipes (WSJ0Mix, LibriMix): YAML files, tiny-model
overrides, data pipeline, SeparationBrain, and end-to-end runs of train.py on generated data
in each real layout (including a SIGKILL in the middle of an epoch)."""

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import speechbrain as sb
import torch
import yaml
from hyperpyyaml import load_hyperpyyaml
from speechbrain.nnet.losses import get_si_snr_with_pitwrapper

from hardmine.catpow import CategoryDatasetPowerSampler
from hardmine.checkpoint import COMPLETE_MARKER
from hardmine.cli import describe
from hardmine.isbl import ISBLSampler
from hardmine.reweighting import SoftmaxReweighting
from hardmine.synthetic.layouts import make_librimix, make_wsj0mix
from hardmine.tasks import separation
from hardmine.tasks.sep_metrics import SUBGROUPS, read_subgroups
from hardmine.validation import ConfigError

ROOT = Path(__file__).resolve().parents[2]
RECIPES = {
    "WSJ0Mix": ROOT / "recipes" / "WSJ0Mix" / "separation",
    "LibriMix": ROOT / "recipes" / "LibriMix" / "separation",
}
VARIANTS = ("sepformer_isbl", "sepformer_robust", "sepformer_curriculum")
SECTIONS = (
    "Experiment",
    "Data",
    "Dynamic mixing",
    "Model",
    "Training",
    "Mining",
    "Checkpoints and logs",
)
BANNER = re.compile(r"^# ####### (.+) #######$")


def yaml_path(recipe, name):
    return RECIPES[recipe] / "hparams" / f"{name}.yaml"


def split_sections(text):
    """Map banner name -> the lines under it (header lines under None)."""
    sections, current = {None: []}, None
    for line in text.splitlines():
        match = BANNER.match(line)
        if match:
            current = match.group(1)
            assert current not in sections, f"section {current} appears twice"
            sections[current] = []
        sections[current].append(line)
    return sections


def arch_of(name):
    return "convtasnet" if name.startswith("convtasnet") else "sepformer"


def tiny(arch):
    """TINY_OVERRIDES[arch] as SpeechBrain's command line turns them into overrides."""
    _, _, text = sb.parse_arguments(["x.yaml", *separation.TINY_OVERRIDES[arch]])
    return yaml.safe_load(text)


def load(recipe, name, overrides=None):
    path = yaml_path(recipe, name)
    overrides = dict(overrides or {})
    if recipe == "LibriMix":
        overrides.setdefault("data_folder", "/nowhere")
    with open(path) as fin:
        return load_hyperpyyaml(fin, overrides)


def n_params(hparams):
    return sum(p.numel() for m in hparams["modules"].values() for p in m.parameters())


# --------------------------------------------------------------- YAML files
@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_variants_differ_from_baseline_only_in_mining_section(recipe):
    base = split_sections(yaml_path(recipe, "sepformer").read_text())
    assert list(base)[1:] == list(SECTIONS)
    mining_keys = {}
    for variant in VARIANTS:
        sections = split_sections(yaml_path(recipe, variant).read_text())
        assert list(sections) == list(base)
        for name in sections:
            if name != "Mining":
                assert sections[name] == base[name], f"{variant}: section {name}"
        assert sections["Mining"] != base["Mining"]
        mining_keys[variant] = {
            line.split(":")[0]
            for line in sections["Mining"]
            if line and not line.startswith((" ", "#"))
        }
    # The baseline policies stay in every variant; each adds its mechanism.
    for keys in mining_keys.values():
        assert {"threshold_filter", "loss_limit", "threshold"} <= keys
    assert "mining_sampler" in mining_keys["sepformer_isbl"]
    assert "reweighting" in mining_keys["sepformer_robust"]
    assert "reweighting" in mining_keys["sepformer_curriculum"]
    # Full files differing in defaults: the same handles, a few values changed.
    for variant in VARIANTS:
        mining = split_sections(yaml_path(recipe, variant).read_text())["Mining"]
        changed = [
            (a, b)
            for a, b in zip(_settings(base["Mining"]), _settings(mining), strict=True)
            if a != b
        ]
        assert changed == MINING_DEFAULTS[variant], variant


# The mining defaults each variant file changes in sepformer.yaml.
MINING_DEFAULTS = {
    "sepformer_isbl": [
        ("mining_variant: baseline", "mining_variant: isbl"),
        ("sampler: null", "sampler: isbl"),
    ],
    "sepformer_robust": [
        ("mining_variant: baseline", "mining_variant: robust"),
        ("reweight_mode: uniform", "reweight_mode: robust"),
    ],
    "sepformer_curriculum": [
        ("mining_variant: baseline", "mining_variant: curriculum"),
        ("reweight_mode: uniform", "reweight_mode: curriculum"),
        ("reweight_schedule: constant", "reweight_schedule: log"),
        ("reweight_rate: 1.0", "reweight_rate: 10.0"),
    ],
}


def _settings(lines):
    return [ln for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_convtasnet_shares_all_but_the_model(recipe):
    base = split_sections(yaml_path(recipe, "sepformer").read_text())
    ctn = split_sections(yaml_path(recipe, "convtasnet").read_text())
    assert list(ctn) == list(base)
    for name in ("Data", "Training", "Mining", "Checkpoints and logs"):
        assert ctn[name] == base[name], name
    assert ctn["Model"] != base["Model"]


@pytest.mark.parametrize("recipe", sorted(RECIPES))
@pytest.mark.parametrize("name", ("sepformer", "convtasnet") + VARIANTS)
def test_yaml_loads_with_baseline_semantics(recipe, name):
    h = load(recipe, name, tiny(arch_of(name)))
    separation.check_hparams(h)
    assert h["threshold_filter"].threshold == -30
    assert h["loss_limit"].loss_upper_lim == 999999
    assert (h["lr"], h["batch_size"], h["clip_grad_norm"]) == (0.00015, 1, 5)
    assert h["max_grad_norm"] == h["clip_grad_norm"]
    assert h["optimizer"].func is torch.optim.Adam
    # The loss is declared in the YAML, as in SpeechBrain's recipes.
    assert getattr(h["loss"], "func", h["loss"]) is get_si_snr_with_pitwrapper
    # Every output path derives from output_folder.
    out = h["output_folder"]
    for key in ("save_folder", "train_log", "test_results", "test_summary"):
        assert h[key].startswith(out + "/"), key
    assert out.endswith(f"{h['mining_variant']}/{h['seed']}")
    # Each file switches on its own policy only; the others are off.
    if name == "sepformer_isbl":
        sampler = h["mining_sampler"]
        assert sampler.func is ISBLSampler
        assert sampler.keywords["transform"] == "db_to_power"
        assert sampler.keywords["batch_size"] == h["batch_size"]
    else:
        assert h["sampler"] is None and h["mining_sampler"] is None
    if name == "sepformer_robust":
        assert h["reweighting"].mode == "robust"
    elif name == "sepformer_curriculum":
        assert h["reweighting"].mode == "curriculum"
        t = [h["reweighting"].temperature(epoch, 0) for epoch in (1, 5, 50)]
        assert t[0] < t[1] < t[2]
    else:
        assert h["reweighting"].mode == "uniform" and not h["reweighting"].active


# Every mining handle, in every separation YAML file.
MINING_HANDLES = {
    "threshold",
    "keep_hardest",
    "loss_upper_lim",
    "max_consecutive_skips",
    "sampler",
    "isbl_alpha",
    "isbl_eps",
    "isbl_transform",
    "isbl_pool_field",
    "isbl_pools",
    "isbl_pool_mix",
    "isbl_momentum",
    "isbl_epoch_length",
    "catpow_category_field",
    "catpow_category_beta",
    "catpow_batch_bins",
    "catpow_dataset_scaling",
    "catpow_leaf",
    "catpow_alpha",
    "reweight_mode",
    "reweight_temperature",
    "reweight_temperature_final",
    "reweight_schedule",
    "reweight_rate",
    "reweight_unit",
    "reweight_capacity",
    "reweight_capacity_lr",
    "reweight_class_field",
    "reweight_favoured",
    "reweight_gamma",
    "num_workers",
}


@pytest.mark.parametrize("recipe", sorted(RECIPES))
@pytest.mark.parametrize("name", ("sepformer", "convtasnet") + VARIANTS)
def test_every_file_has_every_mining_handle(recipe, name):
    fields = yaml.load(
        yaml_path(recipe, name).read_text(), Loader=separation._PlainLoader
    )
    assert MINING_HANDLES <= set(fields), MINING_HANDLES - set(fields)


def _command_line(recipe, name, *args):
    """Load a YAML file with the overrides train.py would get from ``args``."""
    path = yaml_path(recipe, name)
    _, _, overrides = sb.parse_arguments([str(path), *args])
    with open(path) as fin:
        return load_hyperpyyaml(fin, overrides)


def test_any_model_takes_any_policy_from_the_command_line(wsj3):
    # python train.py hparams/convtasnet.yaml --sampler isbl --reweight_mode robust
    args = [*separation.TINY_OVERRIDES["convtasnet"], "--num_spks", "3"]
    h = _command_line(
        "WSJ0Mix", "convtasnet", *args, "--sampler", "isbl", "--reweight_mode", "robust"
    )
    datasets = separation.build_datasets(h, wsj3)
    sampler = h["mining_sampler"](datasets["train"])
    assert isinstance(sampler, ISBLSampler)
    assert sampler.batch_size == h["batch_size"] and sampler.table.alpha == 0.75
    assert isinstance(h["reweighting"], SoftmaxReweighting)
    assert h["reweighting"].mode == "robust" and h["reweighting"].active
    assert h["reweighting"].temperature(1, 0) == 2.0
    assert h["threshold_filter"].threshold == -30  # SpeechBrain's, still on
    # The curriculum variant's policy from the baseline file, and back.
    h = _command_line(
        "LibriMix",
        "sepformer",
        "--data_folder",
        "/nowhere",
        "--reweight_mode",
        "curriculum",
        "--reweight_schedule",
        "log",
        "--reweight_rate",
        "10.0",
    )
    t = [h["reweighting"].temperature(epoch, 0) for epoch in (1, 5, 50)]
    assert h["reweighting"].mode == "curriculum" and t[0] < t[1] < t[2]
    h = _command_line("WSJ0Mix", "sepformer_isbl", "--sampler", "none")
    assert h["mining_sampler"] is None
    # catpow needs a category column; the prepared lists have none.
    h = _command_line("WSJ0Mix", "convtasnet", *args, "--sampler", "catpow")
    assert h["mining_sampler"].func is CategoryDatasetPowerSampler
    with pytest.raises(ConfigError, match="^category_field: "):
        h["mining_sampler"](datasets["train"])


def test_unknown_sampler_names_the_sampler_handle():
    with pytest.raises(ConfigError, match="^sampler: .*'foo'") as info:
        _command_line("WSJ0Mix", "convtasnet", "--sampler", "foo")
    assert info.value.field == "sampler"
    path = str(yaml_path("WSJ0Mix", "convtasnet"))
    assert describe(info.value, [path, "--sampler", "foo"]) == (
        "error: --sampler foo: must be one of 'none', 'isbl', 'catpow', got 'foo'"
    )


def test_data_folder_defaults():
    wsj = yaml.load(
        yaml_path("WSJ0Mix", "sepformer").read_text(), Loader=separation._PlainLoader
    )
    assert wsj["data_folder"] is None  # the embedded default
    for name in ("sepformer", "convtasnet"):
        libri = yaml.load(
            yaml_path("LibriMix", name).read_text(), Loader=separation._PlainLoader
        )
        assert libri["data_folder"] is None  # its own embedded default


# ------------------------------------------------------------- model sizes
def test_tiny_overrides_shrink_the_model():
    # Today's CPU-sized values, as plain command-line overrides.
    assert tiny("sepformer") == {
        "N_encoder_out": 64,
        "intra_layers": 1,
        "inter_layers": 1,
        "dual_layers": 2,
        "nhead": 4,
        "d_ffn": 256,
        "chunk_size": 100,
    }
    assert tiny("convtasnet") == {
        "N_encoder_out": 64,
        "bottleneck_channels": 64,
        "conv_channels": 128,
        "blocks_per_repeat": 4,
        "repeats": 1,
    }
    for recipe in RECIPES:
        for name in ("sepformer", "convtasnet") + VARIANTS:
            fields = yaml.load(
                yaml_path(recipe, name).read_text(), Loader=separation._PlainLoader
            )
            # Every override is a YAML field; the files keep the base sizes.
            assert set(tiny(arch_of(name))) <= set(fields), name
            assert "model_size" not in fields and fields["N_encoder_out"] == 256
    # The overrides reach the modules: tiny is far smaller than base, which is
    # SpeechBrain's SepFormer size (about 26 M parameters).
    base = n_params(load("WSJ0Mix", "sepformer"))
    small = n_params(load("WSJ0Mix", "sepformer", tiny("sepformer")))
    assert 25e6 < base < 27e6 and small * 50 < base
    ctn = load("LibriMix", "convtasnet", tiny("convtasnet"))
    assert ctn["MaskNet"].mask_conv1x1.conv.out_channels == 2 * 64
    # A field given explicitly with them takes its own value.
    h = load("WSJ0Mix", "sepformer", {**tiny("sepformer"), "d_ffn": 96})
    assert (h["d_ffn"], h["N_encoder_out"]) == (96, 64)
    assert h["SBtfintra"].mdl.layers[0].pos_ffn.ffn[0].out_features == 96
    assert len(h["SBtfinter"].mdl.layers) == 1 and h["MaskNet"].K == 100


def test_unknown_model_fields_are_rejected():
    # The other architecture's overrides, or the former --model_size, name
    # fields the file does not have.
    with pytest.raises(KeyError, match="bottleneck_channels"):
        load("WSJ0Mix", "sepformer", tiny("convtasnet"))
    with pytest.raises(KeyError, match="model_size"):
        load("WSJ0Mix", "sepformer", {"model_size": "tiny"})


def test_check_hparams_names_the_field():
    good = load("WSJ0Mix", "sepformer", tiny("sepformer"))
    separation.check_hparams(good)
    for field, value in [
        ("num_spks", 1),
        ("sample_rate", 44100),
        ("version", "mid"),
        ("training_signal_len", 0),
        ("batch_size", 0),
        ("lr", -1.0),
        ("clip_grad_norm", 0),
        ("precision", "fp8"),
        ("kernel_size", 15),
    ]:
        with pytest.raises(ConfigError, match=f"^{field}:"):
            separation.check_hparams({**good, field: value})


def test_resolve_data_folder(monkeypatch, tmp_path):
    import hardmine.synthetic.layouts

    calls = []

    def fake_default(cache_dir=None):
        calls.append(cache_dir)
        return str(tmp_path)

    monkeypatch.setattr(hardmine.synthetic.layouts, "default_wsj0mix", fake_default)
    h = {"data_folder": None, "num_spks": 2, "sample_rate": 8000, "version": "min"}
    assert separation.resolve_data_folder(h) == str(tmp_path)
    assert calls == [None]
    for change in ({"num_spks": 3}, {"sample_rate": 16000}, {"version": "max"}):
        with pytest.raises(ConfigError, match="^data_folder"):
            separation.resolve_data_folder({**h, **change})
    with pytest.raises(ConfigError, match="no embedded default"):
        separation.resolve_data_folder(h, embedded_default=False)
    assert calls == [None]
    given = {**h, "data_folder": "/data/wsj0-mix/2speakers"}
    assert separation.resolve_data_folder(given) == "/data/wsj0-mix/2speakers"


# ------------------------------------------------------------ data pipeline
def _write(path, x, sr=8000):
    sf.write(str(path), x, sr, subtype="FLOAT")
    return str(path)


def test_load_example_crops_all_files_at_one_offset(tmp_path):
    n = 4000
    t = np.arange(n, dtype=np.float64)
    s1 = 0.3 * np.sin(t / 7.0) + 1e-5 * t  # the ramp pins the offset
    s2 = 0.2 * np.cos(t / 3.0)
    paths = [
        _write(tmp_path / "mix.wav", s1 + s2),
        _write(tmp_path / "s1.wav", s1),
        _write(tmp_path / "s2.wav", s2),
    ]
    starts = set()
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        (mix, a, b), problem = separation.load_example(paths, 8000, 1000, gen)
        assert problem == "" and mix.shape == a.shape == b.shape == (1000,)
        torch.testing.assert_close(mix, a + b, atol=1e-6, rtol=0)
        start = int(np.argmin(np.abs(s1 - float(a[0]))))
        np.testing.assert_allclose(a.numpy(), s1[start : start + 1000], atol=1e-6)
        starts.add(start)
    assert len(starts) > 10  # random offsets, not always the same window
    # Shorter than the crop, or no crop: whole files.
    (mix, _, _), _ = separation.load_example(paths, 8000, 5000)
    assert mix.shape == (n,)
    (mix, _, _), _ = separation.load_example(paths, 8000, None)
    assert mix.shape == (n,)


def test_load_example_reports_problems(tmp_path):
    x = 0.1 * np.random.default_rng(0).standard_normal(800)
    ok = _write(tmp_path / "ok.wav", x)
    short = _write(tmp_path / "short.wav", x[:500])
    silent = _write(tmp_path / "silent.wav", np.zeros(800))
    missing = str(tmp_path / "missing.wav")
    for paths, needle in [
        ([ok, ok, silent], "silent.wav: silent"),
        ([ok, missing, ok], "missing.wav: unreadable"),
        ([ok, ok, short], "differ in length"),
    ]:
        signals, problem = separation.load_example(paths, 8000, None)
        assert needle in problem
        assert len({s.shape for s in signals}) == 1 and len(signals) == 3
        assert all(float(s.abs().sum()) == 0 for s in signals)
    _, problem = separation.load_example([ok, ok, ok], 16000, None)
    assert "wrong-sample-rate" in problem


def _prepare(recipe, data, save, **kwargs):
    sys.path.insert(0, str(RECIPES[recipe]))
    try:
        if recipe == "WSJ0Mix":
            from prepare_wsj0mix import prepare_wsjmix as prepare
        else:
            from prepare_librimix import prepare_librimix as prepare
    finally:
        sys.path.pop(0)
    return prepare(data, save, **kwargs)


@pytest.fixture(scope="module")
def wsj3(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wsj3")
    root = make_wsj0mix(
        str(tmp / "data"), n_spks=3, sizes={"tr": 3, "cv": 2, "tt": 3}, seconds=0.5
    )
    return _prepare("WSJ0Mix", root, str(tmp / "save"), n_spks=3)


def test_build_datasets_three_speakers(wsj3):
    h = {"num_spks": 3, "sample_rate": 8000, "training_signal_len": 1000}
    sets = separation.build_datasets(h, wsj3)
    item = sets["train"][0]
    assert item["audio_problem"] == ""
    assert {k for k in item if k.endswith("_sig")} == {
        "mix_sig",
        "s1_sig",
        "s2_sig",
        "s3_sig",
    }
    assert item["mix_sig"].shape == (1000,)  # cropped
    torch.testing.assert_close(
        item["mix_sig"],
        item["s1_sig"] + item["s2_sig"] + item["s3_sig"],
        atol=2e-4,
        rtol=0,
    )
    assert sets["valid"][0]["mix_sig"].shape == (4000,)  # never cropped
    assert len(sets["test"]) == 3
    with pytest.raises(ConfigError, match="^num_spks"):
        separation.build_datasets({**h, "num_spks": 4}, wsj3)
    with pytest.raises(ConfigError, match="^data_folder"):
        separation.build_datasets(h, {**wsj3, "test": "/nowhere/tt.csv"})


def _test_hparams(tmp_path, num_spks):
    return {
        "num_spks": num_spks,
        "loss": get_si_snr_with_pitwrapper,
        "sample_rate": 8000,
        "training_signal_len": None,
        "train_logger": sb.utils.train_logger.FileTrainLogger(
            str(tmp_path / "log.txt")
        ),
        "epoch_counter": sb.utils.epoch_loop.EpochCounter(1),
        "test_results": str(tmp_path / "out" / "test_results.csv"),
        "test_summary": str(tmp_path / "out" / "test_summary.json"),
    }


def test_separation_brain_forward_loss_and_test_metrics(wsj3, tmp_path):
    h = load("WSJ0Mix", "convtasnet", {**tiny("convtasnet"), "num_spks": 3})
    hp = _test_hparams(tmp_path, 3)
    brain = separation.SeparationBrain(
        h["modules"], hparams=hp, run_opts={"device": "cpu"}
    )
    sets = separation.build_datasets(hp, wsj3)
    # Break one test file: the example is left out of loss and metrics.
    broken_id = sets["test"].data_ids[1]
    broken = sets["test"].data[broken_id]["s2_wav"]
    with open(broken, "wb") as fout:
        fout.write(b"not a wav file")
    loss = brain.evaluate(sets["test"], test_loader_kwargs={"batch_size": 2})
    assert np.isfinite(loss)
    with open(hp["test_results"]) as fin:
        rows = list(csv.DictReader(fin))
    ids = [r["snt_id"] for r in rows]
    assert ids[-1] == "avg" and broken_id not in ids and len(ids) == 3
    # A generated set lists each mixture's difficulty: the rows carry it.
    assert set(rows[0]) == {"snt_id", "sdr", "sdr_i", "si-snr", "si-snr_i", "subgroup"}
    info = Path(sets["test"].data[ids[0]]["mix_wav"]).parents[2] / "mixture_info.csv"
    expected = read_subgroups(info)
    for row in rows[:-1]:
        name = Path(sets["test"].data[row["snt_id"]]["mix_wav"]).stem
        assert row["subgroup"] == expected[name] and row["subgroup"] in SUBGROUPS
    summary = json.loads(Path(hp["test_summary"]).read_text())
    assert summary["count"] == 2
    assert sum(g["count"] for g in summary["by_subgroup"].values()) == 2
    # Without the sidecar (a real corpus) there is no subgroup column.
    info.rename(info.with_suffix(".bak"))
    try:
        plain = separation.build_datasets(hp, wsj3)["test"]
        assert "subgroup" not in plain[0]
    finally:
        info.with_suffix(".bak").rename(info)

    # The loss is the per-example negative SI-SNR with the best permutation.
    batch = next(
        iter(sb.dataio.dataloader.make_dataloader(sets["valid"], batch_size=2))
    )
    estimates, targets = brain.compute_forward(batch, sb.Stage.TRAIN)
    assert estimates.shape == targets.shape == (2, 4000, 3)
    losses = brain._recipe_objectives((estimates, targets), batch, sb.Stage.TRAIN)
    assert losses.shape == (2,)
    perfect = brain._recipe_objectives(
        (targets[..., [2, 0, 1]], targets), batch, sb.Stage.TRAIN
    )
    assert bool((perfect < -60).all()) and bool((losses > perfect).all())
    # The loss is the ``loss`` hparam.
    brain.hparams.loss = lambda targets, estimates: targets.new_full((2,), 7.0)
    swapped = brain._recipe_objectives((estimates, targets), batch, sb.Stage.TRAIN)
    assert swapped.tolist() == [7.0, 7.0]


@pytest.mark.parametrize("arch", ["sepformer", "convtasnet"])
@pytest.mark.parametrize("batch_size, length", [(1, 803), (2, 1600)])
def test_separate_keeps_the_input_length(arch, batch_size, length):
    h = load("WSJ0Mix", arch, tiny(arch))
    brain = separation.SeparationBrain(
        h["modules"], hparams={"num_spks": 2}, run_opts={"device": "cpu"}
    )
    out = brain.separate(torch.randn(batch_size, length))
    assert out.shape == (batch_size, length, 2)


# ---------------------------------------------------------- end to end runs
def run_recipe(recipe, hparams, out, *args, timeout=240):
    cmd = [
        sys.executable,
        "train.py",
        f"hparams/{hparams}.yaml",
        *separation.TINY_OVERRIDES[arch_of(hparams)],
        "--output_folder",
        str(out),
        "--num_workers",
        "0",
        "--noprogressbar",
        *args,
    ]
    proc = subprocess.run(
        cmd,
        cwd=RECIPES[recipe],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    return proc


def check_outputs(out, n_test, n_epochs=1):
    log = (out / "train_log.txt").read_text().splitlines()
    assert [line.split(",")[0] for line in log[:n_epochs]] == [
        f"epoch: {e}" for e in range(1, n_epochs + 1)
    ]
    assert "train batches:" in log[0] and "valid si-snr:" in log[0]
    with open(out / "test_results.csv") as fin:
        rows = list(csv.DictReader(fin))
    assert len(rows) == n_test + 1 and rows[-1]["snt_id"] == "avg"
    for row in rows:
        assert all(np.isfinite(float(row[k])) for k in ("sdr", "si-snr_i"))
    summary = json.loads((out / "test_summary.json").read_text())
    assert summary["count"] == n_test
    return log


@pytest.mark.slow
def test_wsj0_2mix_isbl_one_epoch_with_overrides(tmp_path):
    data = make_wsj0mix(
        str(tmp_path / "data"), sizes={"tr": 6, "cv": 2, "tt": 3}, seconds=0.5
    )
    out = tmp_path / "run"
    run_recipe(
        "WSJ0Mix",
        "sepformer_isbl",
        out,
        "--data_folder",
        data,
        "--isbl_alpha",
        "0.5",
        "--threshold",
        "-20",
        "--batch_size",
        "2",
        "--N_epochs",
        "1",
    )
    saved = yaml.load(
        (out / "hyperparams.yaml").read_text(), Loader=separation._PlainLoader
    )
    assert saved["isbl_alpha"] == 0.5 and saved["threshold"] == -20
    assert {k: saved[k] for k in tiny("sepformer")} == tiny("sepformer")
    text = (out / "hyperparams.yaml").read_text()
    assert re.search(
        r"^mining_sampler: !apply:hardmine.sampler_choice.choose_sampler$", text, re.M
    )
    assert re.search(r"^  kind: isbl$", text, re.M)
    assert re.search(r"^  isbl: !name:hardmine.isbl.ISBLSampler$", text, re.M)
    assert re.search(r"^    alpha: 0.5$", text, re.M)
    assert re.search(r"^  threshold: -20$", text, re.M)
    log = check_outputs(out, n_test=3)
    assert "train sampler_coverage" in log[0]  # mining stats merged into the log
    stats = json.loads((out / "mining_stats.jsonl").read_text().splitlines()[0])
    assert stats["epoch"] == 1 and stats["batches"] == 3 and stats["examples"] == 6


@pytest.mark.slow
def test_wsj0_3mix_convtasnet_one_epoch(tmp_path):
    data = make_wsj0mix(
        str(tmp_path / "data"),
        n_spks=3,
        version="max",
        sizes={"tr": 4, "cv": 2, "tt": 2},
        seconds=0.5,
    )
    out = tmp_path / "run"
    run_recipe(
        "WSJ0Mix",
        "convtasnet",
        out,
        "--data_folder",
        data,
        "--num_spks",
        "3",
        "--version",
        "max",
        "--N_epochs",
        "1",
        "--training_signal_len",
        "2000",
    )
    check_outputs(out, n_test=2)
    with open(out / "save" / "wsj_tr.csv") as fin:
        assert "s3_wav" in next(csv.reader(fin))


@pytest.mark.slow
def test_librimix_noisy_robust_one_epoch(tmp_path):
    data = make_librimix(
        str(tmp_path / "data"),
        sizes={"train": 4, "dev": 2, "test": 2},
        seconds=0.5,
        seed=1,
    )
    out = tmp_path / "run"
    run_recipe(
        "LibriMix",
        "sepformer_robust",
        out,
        "--data_folder",
        data,
        "--mixture",
        "both",
        "--batch_size",
        "2",
        "--N_epochs",
        "1",
    )
    log = check_outputs(out, n_test=2)
    assert "train temperature: 2.00" in log[0]
    with open(out / "save" / "libri2mix_train.csv") as fin:
        row = next(csv.DictReader(fin))
    assert "mix_both" in row["mix_wav"] and row["noise_wav"]


def _loaded_checkpoint(log_text):
    found = re.findall(r"Loading a checkpoint from (\S+)", log_text)
    return found[0] if found else None


def _sealed_checkpoints(save):
    """Checkpoints the AtomicCheckpointer marked complete."""
    return [p for p in sorted(save.glob("CKPT+*")) if (p / COMPLETE_MARKER).exists()]


@pytest.mark.slow
def test_sigkill_mid_epoch_resumes_from_checkpoint(tmp_path):
    data = make_wsj0mix(
        str(tmp_path / "data"), sizes={"tr": 16, "cv": 2, "tt": 2}, seconds=0.5
    )
    out = tmp_path / "run"
    args = [
        "--data_folder",
        data,
        "--N_epochs",
        "1",
        "--ckpt_interval_minutes",
        "0",
        "--ckpt_interval_steps",
        "2",
    ]
    cmd = [
        sys.executable,
        "train.py",
        "hparams/sepformer_isbl.yaml",
        *separation.TINY_OVERRIDES["sepformer"],
        "--output_folder",
        str(out),
        "--num_workers",
        "0",
        "--noprogressbar",
        *args,
    ]
    proc = subprocess.Popen(
        cmd,
        cwd=RECIPES["WSJ0Mix"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if _sealed_checkpoints(out / "save"):
                break
            time.sleep(0.05)
        assert proc.poll() is None, "training ended before an intra-epoch checkpoint"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "train_log.txt").exists()  # killed inside epoch 1

    # Also leave a newer checkpoint torn as a kill during saving would: its
    # CKPT.yaml is there but its files are not all written (and so it was
    # never marked complete).
    sealed = _sealed_checkpoints(out / "save")[-1]
    torn = out / "save" / "CKPT+9999-torn"
    shutil.copytree(sealed, torn)
    meta = yaml.safe_load((torn / "CKPT.yaml").read_text())
    meta["unixtime"] += 1000
    (torn / "CKPT.yaml").write_text(yaml.safe_dump(meta))
    for name in ("optimizer.ckpt", "masknet.ckpt", COMPLETE_MARKER):
        (torn / name).unlink()

    # What each whole checkpoint holds (the resumed run deletes them later).
    saved = {}
    for ckpt in _sealed_checkpoints(out / "save"):
        meta = yaml.safe_load((ckpt / "CKPT.yaml").read_text())
        saved[str(ckpt)] = {
            "intra": meta.get("brain_intra_epoch_ckpt") is True,
            "done": int((ckpt / "dataloader-TRAIN.ckpt").read_text()),
            "sampler": (ckpt / "mining_sampler.ckpt").is_file(),
        }
    assert saved

    log_before = (out / "log.txt").read_text()
    run_recipe("WSJ0Mix", "sepformer_isbl", out, *args)
    resumed = _loaded_checkpoint((out / "log.txt").read_text()[len(log_before) :])
    assert "Ignoring incomplete checkpoint" in (out / "log.txt").read_text()
    assert resumed in saved  # the newest whole checkpoint, not the torn one
    state = saved[resumed]
    assert state["intra"] and state["sampler"]
    assert state["done"] > 0 and state["done"] % 2 == 0
    # The resumed epoch ran only the batches left after the checkpoint.
    stats = json.loads((out / "mining_stats.jsonl").read_text().splitlines()[-1])
    assert stats["epoch"] == 1 and stats["batches"] == 16 - state["done"]
    check_outputs(out, n_test=2)


# -------------------------------------------------------------------- demo
