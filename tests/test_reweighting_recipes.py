"""Every recipe YAML forwards reweight_over, reweight_partition and
reweight_partition_momentum to its reweighting, off by default."""

from pathlib import Path

import pytest
import speechbrain as sb
from hyperpyyaml import load_hyperpyyaml

from hardmine.cli import describe
from hardmine.plainyaml import read_fields
from hardmine.reweighting import SoftmaxReweighting
from hardmine.validation import ConfigError

ROOT = Path(__file__).resolve().parents[1]
FILES = sorted(ROOT.glob("recipes/*/*/hparams/*.yaml"))
HANDLES = {
    "reweight_over": "examples",
    "reweight_partition": "batch",
    "reweight_partition_momentum": 0.99,
}


def load(path, *args):
    _, _, overrides = sb.parse_arguments([str(path), *args])
    if "LibriMix" in str(path):
        overrides += "\ndata_folder: /nowhere\n"
    with open(path) as fin:
        return load_hyperpyyaml(fin, overrides)


def test_there_are_recipe_files():
    assert len(FILES) == 18


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parts[-4]}/{p.name}")
def test_every_file_has_the_handles_off_by_default(path):
    fields = read_fields(str(path), tags=False)
    for handle, default in HANDLES.items():
        assert fields.get(handle) == default, handle
    text = path.read_text()
    for field in ("over", "partition", "partition_momentum"):
        assert f"    {field}: !ref <reweight_{field}>\n" in text


@pytest.mark.parametrize(
    "path",
    [p for p in FILES if p.name in ("sepformer.yaml", "kws.yaml")],
    ids=lambda p: p.parts[-4],
)
def test_handles_reach_the_reweighting(path):
    rw = load(path)["reweighting"]
    assert isinstance(rw, SoftmaxReweighting)
    assert rw.over == "examples" and rw.partition == "batch"
    assert rw.partition_state is None
    rw = load(
        path,
        "--reweight_mode",
        "robust",
        "--reweight_over",
        "sources",
        "--reweight_partition",
        "ema",
        "--reweight_partition_momentum",
        "0.9",
    )["reweighting"]
    assert rw.over == "sources" and rw.partition == "ema"
    assert rw.partition_state.momentum == 0.9


@pytest.mark.parametrize(
    "option, value, field",
    [
        ("--reweight_over", "mixtures", "over"),
        ("--reweight_partition", "stream", "partition"),
        ("--reweight_partition_momentum", "1.0", "partition_momentum"),
    ],
)
def test_bad_values_name_the_handle_and_the_field(option, value, field):
    path = ROOT / "recipes/WSJ0Mix/separation/hparams/sepformer_robust.yaml"
    with pytest.raises(ConfigError) as info:
        load(path, option, value)
    assert info.value.field == field
    line = describe(info.value, [str(path), option, value])
    assert line.startswith(f"error: {option} {value} (reweighting field {field}): ")
