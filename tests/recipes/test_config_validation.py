"""Unusable settings stop both recipes before the first training step.

Each case runs a recipe's ``main()`` in this process, as a user would from
the command line, on tiny generated data. ``HardMiningBrain.fit_batch`` is
replaced by a function that fails with "training started", so a case passes
only if the run stops earlier, with an error naming the field (or, for data
problems, the path) at fault. YAML and fragment errors surface while the
file loads; sampler errors when the training loader is built inside
``fit``; data errors during preparation.

From the command line (``hardmine.cli``) the same errors end the run with
exit status 2 and one line on stderr naming the option the user gave and
the field it feeds: every case's error is rendered with ``describe``, and a
few runs of ``train.py`` in a subprocess check the whole path.
"""

import importlib.util
import io
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys

import pytest
from conftest import KWS_TINY_MODEL

from hardmine.brain import HardMiningBrain
from hardmine.cli import (
    EXIT_CONFIG_ERROR,
    describe,
    exit_on_config_error,
    field_handles,
    forwarded_fields,
)
from hardmine.synthetic.gsc import generate_gsc
from hardmine.synthetic.layouts import make_wsj0mix
from hardmine.tasks.manifest import LayoutError
from hardmine.tasks.separation import TINY_OVERRIDES
from hardmine.validation import ConfigError

ROOT = pathlib.Path(__file__).resolve().parents[2]
RECIPES = {
    "kws": ROOT / "recipes/GoogleSpeechCommands/kws",
    "wsj": ROOT / "recipes/WSJ0Mix/separation",
}
KWS_CLASSES = 5  # yes, no, up, _unknown_ (cat), _silence_
KWS_ARGS = [
    "--number_of_epochs",
    "1",
    "--n_classes",
    str(KWS_CLASSES),
    *KWS_TINY_MODEL,
    "--num_workers",
    "0",
]
WSJ_ARGS = [
    *TINY_OVERRIDES["sepformer"],
    "--N_epochs",
    "1",
    "--batch_size",
    "2",
    "--num_workers",
    "0",
    "--noprogressbar",
]


class TrainingStarted(AssertionError):
    """Raised by the patched ``fit_batch``: a training step was reached."""


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Tiny corpora for both recipes, generated once for the module."""
    tmp = tmp_path_factory.mktemp("config_data")
    gsc = generate_gsc(
        str(tmp / "speech_commands"),
        words=("yes", "no", "up", "cat"),
        n_speakers=4,
        repetitions=1,
        valid_speakers=1,
        test_speakers=1,
        background_seconds=4.0,
        seed=5,
    )
    wsj = make_wsj0mix(
        str(tmp / "wsj0-2mix"), sizes={"tr": 4, "cv": 1, "tt": 1}, seconds=0.25
    )
    # A WSJ0-2mix copy whose training split lacks its second-speaker folder.
    torn = shutil.copytree(wsj, tmp / "wsj0-2mix-torn")
    shutil.rmtree(torn / "wav8k" / "min" / "tr" / "s2")
    # A folder with audio but none of the wav8k/min/{tr,cv,tt} layout.
    flat = tmp / "flat"
    shutil.copytree(pathlib.Path(wsj) / "wav8k" / "min" / "tr" / "mix", flat / "mix")
    return {"kws": gsc, "wsj": wsj, "torn": str(torn), "flat": str(flat)}


def _pairs(args):
    """``["--a", "1", "--flag"]`` -> ``{"--a": "1", "--flag": None}``."""
    options, key = {}, None
    for arg in args:
        if arg.startswith("--"):
            key = arg
            options[key] = None
        else:
            options[key] = arg
    return options


@pytest.fixture(scope="module")
def train_modules():
    """Each recipe's train.py, imported once."""
    modules = {}
    for recipe, folder in RECIPES.items():
        spec = importlib.util.spec_from_file_location(
            f"{recipe}_train_under_test", folder / "train.py"
        )
        module = importlib.util.module_from_spec(spec)
        # train.py imports its sibling prepare script.
        with pytest.MonkeyPatch.context() as mp:
            mp.syspath_prepend(str(folder))
            spec.loader.exec_module(module)
        modules[recipe] = module
    return modules


@pytest.fixture
def run(train_modules, data, tmp_path, monkeypatch):
    """Run a recipe's main() with training steps forbidden."""

    def no_training(self, batch):
        raise TrainingStarted("training started")

    monkeypatch.setattr(HardMiningBrain, "fit_batch", no_training)

    def _run(recipe, hparams_file, *extra, data_folder=None):
        folder = RECIPES[recipe]
        monkeypatch.syspath_prepend(str(folder))
        if not pathlib.Path(hparams_file).is_absolute():
            hparams_file = str(folder / "hparams" / f"{hparams_file}.yaml")
        if data_folder is None:
            data_folder = data["kws" if recipe == "kws" else "wsj"]
        # The case's arguments replace the defaults of the same name.
        options = _pairs(KWS_ARGS if recipe == "kws" else WSJ_ARGS)
        options.update(_pairs(extra))
        options["--output_folder"] = str(tmp_path / "out")
        options["--data_folder"] = data_folder
        argv = [hparams_file]
        for key, value in options.items():
            argv += [key] if value is None else [key, value]
        train_modules[recipe].main(argv)

    return _run


def _edited(recipe, name, changes, fragment_changes=None):
    """A copy of a recipe YAML with some lines changed.

    For settings the command line cannot express: the fragments' ``mode`` has
    no handle, and hyperpyyaml cannot override a scalar with a mapping.
    ``fragment_changes`` maps a fragment file name to the line changes of a
    private copy of that fragment which the edited recipe then includes.
    """

    def write(tmp_path):
        text = (RECIPES[recipe] / "hparams" / f"{name}.yaml").read_text()
        for old, new in changes:
            assert text.count(old) == 1, old
            text = text.replace(old, new)
        for fragment, lines in (fragment_changes or {}).items():
            body = (ROOT / "hparams" / fragment).read_text()
            for old, new in lines:
                assert body.count(old) == 1, old
                body = body.replace(old, new)
            (tmp_path / fragment).write_text(body)
            include = f"!include:../../../../hparams/{fragment}"
            assert text.count(include) == 1, include
            text = text.replace(include, f"!include:{tmp_path / fragment}")
        text = text.replace(
            "!include:../../../../hparams/", f"!include:{ROOT}/hparams/"
        )
        path = tmp_path / f"{name}_edited.yaml"
        path.write_text(text)
        return str(path)

    return write


# (recipe, hparams file, command-line arguments, field named by the error,
#  regex the rest of the message must match)
CONFIG_CASES = {
    # ISBL sampler (hparams/isbl.yaml through the isbl_* handles)
    "isbl_alpha negative": (
        "kws",
        "kws_isbl",
        ["--isbl_alpha", "-0.5"],
        "alpha",
        r"must be >= 0",
    ),
    "isbl_alpha negative (separation)": (
        "wsj",
        "sepformer_isbl",
        ["--isbl_alpha", "-1"],
        "alpha",
        r"must be >= 0",
    ),
    "isbl_eps zero": ("kws", "kws_isbl", ["--isbl_eps", "0"], "eps", r"must be > 0"),
    "isbl_eps negative (separation)": (
        "wsj",
        "sepformer_isbl",
        ["--isbl_eps", "-0.001"],
        "eps",
        r"must be > 0",
    ),
    "isbl_transform unknown": (
        "kws",
        "kws_isbl",
        ["--isbl_transform", "cube"],
        "transform",
        r"must be one of .*'cube'",
    ),
    "isbl_pool_mix names an unknown pool": (
        "kws",
        "kws_isbl",
        ["--isbl_pool_mix", "{targets: 1, keywords: 2}"],
        "pool_mix",
        r"unknown pool 'keywords'",
    ),
    "isbl_pool_mix leaves a pool out": (
        "kws",
        "kws_isbl",
        ["--isbl_pool_mix", "{targets: 1}"],
        "pool_mix",
        r"no weight for pool 'negatives'",
    ),
    "isbl_pools pool without examples": (
        "kws",
        "kws_isbl",
        [
            "--isbl_pools",
            "{kw: [targets], neg: [negatives], rare: [background]}",
        ],
        "pools",
        r"pool 'rare' has no examples",
    ),
    "isbl_pools misses a value of the data": (
        "kws",
        "kws_isbl",
        ["--isbl_pool_field", "command", "--isbl_pools", "{kw: [yes, no, up]}"],
        "pools",
        r"'_silence_'|'_unknown_'",
    ),
    "isbl_pools without isbl_pool_field (separation)": (
        "wsj",
        "sepformer_isbl",
        ["--isbl_pools", "{a: [x]}"],
        "pools",
        r"without pool_field",
    ),
    "isbl_pool_field unknown column": (
        "kws",
        "kws_isbl",
        ["--isbl_pool_field", "speaker"],
        "pool_field",
        r"column 'speaker' missing .*columns: .*command",
    ),
    "isbl_pool_field unknown column (separation)": (
        "wsj",
        "sepformer_isbl",
        ["--isbl_pool_field", "speaker"],
        "pool_field",
        r"column 'speaker' missing .*mix_wav",
    ),
    "isbl_epoch_length zero": (
        "kws",
        "kws_isbl",
        ["--isbl_epoch_length", "0"],
        "epoch_length",
        r"must be >= 1",
    ),
    "isbl_momentum above one": (
        "kws",
        "kws_isbl",
        ["--isbl_momentum", "1.5"],
        "momentum",
        r"must be <= 1",
    ),
    # Softmax reweighting (hparams/reweight.yaml through the reweight_* handles)
    "reweight_temperature zero": (
        "kws",
        "kws_robust",
        ["--reweight_temperature", "0"],
        "temperature",
        r"must be > 0",
    ),
    "reweight_temperature negative (separation)": (
        "wsj",
        "sepformer_robust",
        ["--reweight_temperature", "-2"],
        "temperature",
        r"must be > 0",
    ),
    "reweight_capacity negative": (
        "kws",
        "kws_robust",
        ["--reweight_capacity", "-0.1"],
        "capacity",
        r"must be >= 0",
    ),
    "reweight_schedule unknown": (
        "kws",
        "kws_robust",
        ["--reweight_schedule", "cosine"],
        "schedule",
        r"must be one of .*'cosine'",
    ),
    "reweight_unit unknown": (
        "kws",
        "kws_robust",
        ["--reweight_unit", "batch"],
        "unit",
        r"must be one of 'epoch', 'step'",
    ),
    "reweighting mode unknown": (
        "kws",
        _edited(
            "kws", "kws_robust", [("reweight_mode: robust\n", "reweight_mode: focal\n")]
        ),
        [],
        "reweight_mode",
        r"must be one of .*'focal'",
    ),
    "reweight_mode unknown (separation)": (
        "wsj",
        "sepformer",
        ["--reweight_mode", "focal"],
        "reweight_mode",
        r"must be one of .*'focal'",
    ),
    # The sampler handle (hardmine.sampler_choice)
    "sampler unknown": (
        "kws",
        "kws",
        ["--sampler", "loss_power"],
        "sampler",
        r"must be one of 'none', 'isbl', 'catpow', got 'loss_power'",
    ),
    "sampler unknown (separation)": (
        "wsj",
        "sepformer_isbl",
        ["--sampler", "ISBL"],
        "sampler",
        r"must be one of .*got 'ISBL'",
    ),
    "catpow without a category column (separation)": (
        "wsj",
        "sepformer",
        ["--sampler", "catpow"],
        "category_field",
        r"no field None",
    ),
    "catpow_category_field unknown column": (
        "kws",
        "kws",
        ["--sampler", "catpow", "--catpow_category_field", "speaker"],
        "category_field",
        r"no field 'speaker'",
    ),
    "decreasing schedule without reweight_temperature_final": (
        "kws",
        "kws_robust",
        ["--reweight_schedule", "linear", "--reweight_rate", "-1"],
        "temperature_final",
        r"decreasing schedule",
    ),
    "decreasing log schedule without floor (separation)": (
        "wsj",
        "sepformer_robust",
        ["--reweight_schedule", "log", "--reweight_rate", "-2"],
        "temperature_final",
        r"decreasing schedule",
    ),
    "inverse schedule without reweight_temperature_final": (
        "kws",
        "kws_robust",
        ["--reweight_schedule", "inverse"],
        "temperature_final",
        r"inverse schedule needs it",
    ),
    "curriculum with a temperature that does not grow (separation)": (
        "wsj",
        "sepformer_curriculum",
        ["--reweight_rate", "0"],
        "schedule",
        r"curriculum needs a temperature that grows",
    ),
    "class_bias without reweight_class_field": (
        "kws",
        "kws_class_bias",
        ["--reweight_class_field", "null"],
        "class_field",
        r"class_bias needs the name",
    ),
    "class_bias with nothing favoured": (
        "kws",
        "kws_class_bias",
        ["--reweight_favoured", "[]"],
        "favoured",
        r"at least one class",
    ),
    "reweight_gamma not a number": (
        "kws",
        "kws_class_bias",
        ["--reweight_gamma", "strong"],
        "gamma",
        r"must be a number, got 'strong'",
    ),
    # Threshold filter and loss limit
    "threshold not a number (separation)": (
        "wsj",
        "sepformer",
        ["--threshold", "minus30"],
        "threshold",
        r"must be a number, got 'minus30'",
    ),
    "loss_upper_lim not a number": (
        "kws",
        "kws",
        ["--loss_upper_lim", "huge"],
        "loss_upper_lim",
        r"must be a number, got 'huge'",
    ),
    "loss_upper_lim not a number (separation)": (
        "wsj",
        "sepformer_isbl",
        ["--loss_upper_lim", "[1, 2]"],
        "loss_upper_lim",
        r"must be a number",
    ),
    "max_consecutive_skips zero": (
        "kws",
        "kws",
        ["--max_consecutive_skips", "0"],
        "max_consecutive_skips",
        r"must be >= 1",
    ),
    "max_consecutive_skips fractional (separation)": (
        "wsj",
        "sepformer",
        ["--max_consecutive_skips", "2.5"],
        "max_consecutive_skips",
        r"whole number",
    ),
    # Recipe and Brain fields
    "optimizer_step_limit not a number": (
        "kws",
        "kws_isbl",
        ["--optimizer_step_limit", "abc"],
        "optimizer_step_limit",
        r"whole number, got 'abc'",
    ),
    "optimizer_step_limit not a number (separation)": (
        "wsj",
        "sepformer",
        ["--optimizer_step_limit", "abc"],
        "optimizer_step_limit",
        r"whole number, got 'abc'",
    ),
    "n_classes does not match the data": (
        "kws",
        "kws",
        ["--n_classes", "12"],
        "n_classes",
        r"5 classes",
    ),
    "batch_size zero (separation)": (
        "wsj",
        "sepformer",
        ["--batch_size", "0"],
        "batch_size",
        r"must be >= 1",
    ),
}


@pytest.mark.parametrize(
    "recipe, hparams_file", [("kws", "kws_isbl"), ("wsj", "sepformer_isbl")]
)
def test_valid_settings_reach_training(recipe, hparams_file, run):
    # The harness itself: with nothing wrong, the run gets to a training
    # step, so every error below was raised before one.
    with pytest.raises(TrainingStarted):
        run(recipe, hparams_file)


def test_pool_mix_mapping_from_the_command_line(run):
    # The mapping default in the fragment lets a mapping replace it.
    with pytest.raises(TrainingStarted):
        run("kws", "kws_isbl", "--isbl_pool_mix", "{targets: 1, negatives: 3}")


# Settings that are wrong for the data, not in themselves: HardMiningBrain
# checks them when it builds the training loader.
def test_class_field_missing_from_the_batches(run):
    with pytest.raises(ConfigError, match="^class_field: .*'speaker'"):
        run("kws", "kws_class_bias", "--reweight_class_field", "speaker")


def test_no_favoured_class_in_the_data(run):
    with pytest.raises(ConfigError, match="^favoured: .*'yse'"):
        run("kws", "kws_class_bias", "--reweight_favoured", "[yse]")


# The fragment each family of options feeds, as the recipes include it.
OPTION_OWNERS = {
    "isbl_": "mining_sampler.isbl",
    "catpow_": "mining_sampler.catpow",
    "reweight_": "reweighting",
}

# How the command line names the field of a case that no option of the case
# feeds (by default: the option named after the field, with its value).
CLI_LEADS = {
    # Set in the YAML file, no option given: the handle alone.
    "reweighting mode unknown": "reweight_mode",
    # Fed by catpow_category_field, which the case does not give.
    "catpow without a category column (separation)": (
        "catpow_category_field (mining_sampler.catpow field category_field)"
    ),
    # Fed by a handle the case does not give: named without a value.
    "decreasing schedule without reweight_temperature_final": (
        "reweight_temperature_final (reweighting field temperature_final)"
    ),
    "decreasing log schedule without floor (separation)": (
        "reweight_temperature_final (reweighting field temperature_final)"
    ),
    "inverse schedule without reweight_temperature_final": (
        "reweight_temperature_final (reweighting field temperature_final)"
    ),
    "curriculum with a temperature that does not grow (separation)": (
        "reweight_schedule (reweighting field schedule)"
    ),
}


def _cli_lead(case, argv, field):
    """What the command-line message names before the reason."""
    if case in CLI_LEADS:
        return CLI_LEADS[case]
    for option, value in _pairs(argv).items():
        name = option[2:]
        lead = f"{option} {shlex.quote(value)}"
        if name == field:
            return lead
        for prefix, owner in OPTION_OWNERS.items():
            if name == prefix + field:
                return f"{lead} ({owner} field {field})"
    raise AssertionError(f"no option of {argv} feeds {field}")


@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_bad_setting_fails_before_training(case, run, tmp_path):
    recipe, hparams_file, argv, field, pattern = CONFIG_CASES[case]
    if callable(hparams_file):
        hparams_file = hparams_file(tmp_path)
    with pytest.raises(ConfigError) as info:
        run(recipe, hparams_file, *argv)
    err = info.value
    assert err.field == field
    message = str(err)
    assert message.startswith(f"{field}: "), message
    assert re.search(pattern, message), message
    # The one line the command line prints for it.
    if not pathlib.Path(hparams_file).is_absolute():
        hparams_file = str(RECIPES[recipe] / "hparams" / f"{hparams_file}.yaml")
    line = describe(err, [hparams_file, *argv])
    assert line == f"error: {_cli_lead(case, argv, field)}: {err.reason}"
    assert "\n" not in line


# (recipe, data folder key ("missing": a path that does not exist),
#  exception type, regex for the reason); the message must contain the path.
PATH_CASES = {
    "missing data folder (separation)": ("wsj", "missing", LayoutError, "not found"),
    "folder without wav8k/ (separation)": (
        "wsj",
        "flat",
        LayoutError,
        r"no wav8k/min split folders found",
    ),
    "split folder without s2/ (separation)": (
        "wsj",
        "torn",
        LayoutError,
        r"missing folder",
    ),
    "missing data folder (kws)": (
        "kws",
        "missing",
        FileNotFoundError,
        r"data_folder .* does not exist",
    ),
}


@pytest.mark.parametrize("case", list(PATH_CASES))
def test_bad_data_folder_fails_before_training(case, run, data, tmp_path):
    recipe, key, error, pattern = PATH_CASES[case]
    folder = str(tmp_path / "nowhere") if key == "missing" else data[key]
    hparams_file = "kws" if recipe == "kws" else "sepformer"
    with pytest.raises(error) as info:
        run(recipe, hparams_file, data_folder=folder)
    message = str(info.value)
    assert folder in message, message
    if key == "torn":
        assert message.endswith("/tr/s2"), message
    assert re.search(pattern, message), message


# ------------------------------------------------------------ command line
def _recipe_yaml(recipe, name):
    return str(RECIPES[recipe] / "hparams" / f"{name}.yaml")


def test_forwarded_fields_read_from_the_recipe():
    forwarded = forwarded_fields(_recipe_yaml("kws", "kws_isbl"))
    assert ("alpha", "isbl_alpha", "mining_sampler.isbl") in forwarded
    assert ("isbl_alpha", "isbl_alpha", "") in forwarded
    assert ("kind", "sampler", "mining_sampler") in forwarded
    # Both samplers of the choice have a loss power, each its own handle.
    assert field_handles("alpha", forwarded) == {
        "isbl_alpha": ["mining_sampler.isbl"],
        "catpow_alpha": ["mining_sampler.catpow"],
    }
    assert field_handles("pool_mix", forwarded) == {
        "isbl_pool_mix": ["mining_sampler.isbl"]
    }
    # A top-level field is its own handle, also when a fragment uses it.
    assert field_handles("loss_upper_lim", forwarded) == {
        "loss_upper_lim": ["loss_limit"]
    }
    assert field_handles("sampler", forwarded) == {"sampler": []}
    assert field_handles("mode", forwarded) == {"reweight_mode": ["reweighting"]}
    # A field that no handle feeds.
    assert field_handles("weight_decay", forwarded) == {}
    assert forwarded_fields("/nonexistent/recipe.yaml") == []


@pytest.mark.parametrize(
    "recipe, name, field, argv, lead",
    [
        # One option feeds the field under another name.
        (
            "kws",
            "kws_catpow",
            "max_batch_size",
            ["--batch_size", "0"],
            "--batch_size 0 (mining_sampler.catpow field max_batch_size)",
        ),
        (
            "kws",
            "kws_isbl",
            "alpha",
            ["--isbl_alpha=-1"],
            "--isbl_alpha -1 (mining_sampler.isbl field alpha)",
        ),
        (
            "kws",
            "kws_isbl",
            "pools",
            ["--isbl_pools", "{a: [x]}"],
            "--isbl_pools '{a: [x]}' (mining_sampler.isbl field pools)",
        ),
        # Set in the YAML file: the handle to change, without a value.
        (
            "kws",
            "kws_isbl",
            "pool_mix",
            [],
            "isbl_pool_mix (mining_sampler.isbl field pool_mix)",
        ),
        # Two handles feed alpha (isbl_alpha, catpow_alpha), neither given:
        # the field alone.
        ("kws", "kws_isbl", "alpha", [], "alpha"),
        # Two handles can set max_grad_norm: the one given wins, the direct
        # one if both are; neither given: the field alone.
        (
            "wsj",
            "sepformer",
            "max_grad_norm",
            ["--clip_grad_norm", "-1"],
            "--clip_grad_norm -1 (field max_grad_norm)",
        ),
        (
            "wsj",
            "sepformer",
            "max_grad_norm",
            ["--clip_grad_norm", "-1", "--max_grad_norm", "-2"],
            "--max_grad_norm -2",
        ),
        ("wsj", "sepformer", "max_grad_norm", [], "max_grad_norm"),
        # A top-level handle that the command line does not give: its name.
        ("wsj", "sepformer_robust", "reweight_mode", ["--lr", "1"], "reweight_mode"),
        # The sampler handle, in any file.
        ("wsj", "convtasnet", "sampler", ["--sampler", "foo"], "--sampler foo"),
        # No handle at all.
        ("kws", "kws", "weight_decay", ["--lr", "1"], "weight_decay"),
    ],
)
def test_command_line_message_names_the_option(recipe, name, field, argv, lead):
    err = ConfigError(field, "must be >= 1, got -1")
    line = describe(err, [_recipe_yaml(recipe, name), *argv])
    assert line == f"error: {lead}: must be >= 1, got -1"


def _exit_line(argv, raise_error, monkeypatch, rank=None):
    if rank is None:
        monkeypatch.delenv("RANK", raising=False)
    else:
        monkeypatch.setenv("RANK", str(rank))
    stream = io.StringIO()
    with pytest.raises(SystemExit) as info:
        with exit_on_config_error(argv, stream=stream):
            raise_error()
    assert info.value.code == EXIT_CONFIG_ERROR == 2
    return stream.getvalue()


def test_config_error_exits_with_one_line(monkeypatch):
    argv = [_recipe_yaml("kws", "kws_isbl"), "--isbl_alpha", "-1"]
    expected = (
        "error: --isbl_alpha -1 (mining_sampler.isbl field alpha): "
        "must be >= 0.0, got -1.0\n"
    )

    def direct():
        raise ConfigError("alpha", "must be >= 0.0, got -1.0")

    def wrapped():  # as a loader might re-raise it
        try:
            direct()
        except ConfigError as err:
            raise RuntimeError("while building mining_sampler") from err

    def in_handler():
        try:
            direct()
        except ConfigError:
            raise ValueError("could not build mining_sampler")  # noqa: B904

    for raise_error in (direct, wrapped, in_handler):
        assert _exit_line(argv, raise_error, monkeypatch) == expected
    # Under torchrun only rank 0 prints; every rank exits with status 2.
    assert _exit_line(argv, direct, monkeypatch, rank=0) == expected
    assert _exit_line(argv, direct, monkeypatch, rank=1) == ""


def test_other_errors_keep_their_traceback():
    stream = io.StringIO()
    with pytest.raises(KeyError, match="n_classes"):
        with exit_on_config_error(["x.yaml"], stream=stream):
            raise KeyError("n_classes")
    # An error raised on purpose without its context is not a ConfigError.
    with pytest.raises(RuntimeError):
        with exit_on_config_error(["x.yaml"], stream=stream):
            try:
                raise ConfigError("alpha", "bad")
            except ConfigError:
                raise RuntimeError("unrelated") from None
    with exit_on_config_error(["x.yaml"], stream=stream):
        pass
    assert stream.getvalue() == ""


def _run_train_py(recipe, name, args, data, tmp_path):
    folder = RECIPES[recipe]
    defaults = _pairs(KWS_ARGS if recipe == "kws" else WSJ_ARGS)
    defaults.update(_pairs(args))
    defaults["--data_folder"] = data["kws" if recipe == "kws" else "wsj"]
    defaults["--output_folder"] = str(tmp_path / "out")
    cmd = [sys.executable, str(folder / "train.py"), _recipe_yaml(recipe, name)]
    for key, value in defaults.items():
        cmd += [key] if value is None else [key, value]
    env = {**os.environ, "HARDMINE_CACHE": str(tmp_path / "cache")}
    return subprocess.run(
        cmd, cwd=folder, env=env, capture_output=True, text=True, timeout=600
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "recipe, name", [("kws", "kws_isbl"), ("wsj", "sepformer_isbl")]
)
def test_train_py_reports_a_bad_option_in_one_line(recipe, name, data, tmp_path):
    proc = _run_train_py(recipe, name, ["--isbl_alpha", "-1"], data, tmp_path)
    assert proc.returncode == 2, (proc.stdout + proc.stderr)[-4000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "isbl_alpha" in lines[0] and "alpha" in lines[0]
    assert lines[0] == (
        "error: --isbl_alpha -1 (mining_sampler.isbl field alpha): "
        "must be >= 0.0, got -1.0"
    )
    assert "Traceback" not in proc.stderr + proc.stdout
