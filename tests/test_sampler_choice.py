"""The ``sampler`` handle: choose_sampler, saved_choice, and the Brain's loader."""

import functools

import pytest
import speechbrain as sb
import torch
from conftest import padded_regressor_class, regression_dataset
from hyperpyyaml import load_hyperpyyaml

from hardmine.checkpoint import AtomicCheckpointer
from hardmine.isbl import ISBLSampler
from hardmine.plainyaml import read_fields
from hardmine.sampler_choice import (
    CHOICE_TAG,
    SAMPLER_KINDS,
    choose_sampler,
    saved_choice,
)
from hardmine.validation import ConfigError

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]

YAML = f"""
sampler: null
batch_size: 4
mining_sampler: !apply:hardmine.sampler_choice.choose_sampler
    kind: !ref <sampler>
    isbl: !include:{ROOT}/hparams/isbl.yaml
        batch_size: !ref <batch_size>
        alpha: 0.5
    catpow: !include:{ROOT}/hparams/catpow.yaml
        batch_bins: 4.0
        category_field: kind
        bins_field: size
"""


def test_choose_sampler_kinds():
    isbl = functools.partial(dict, a=1)
    catpow = functools.partial(dict, b=2)
    assert SAMPLER_KINDS == ("none", "isbl", "catpow")
    for kind in (None, "none", "None", " NONE "):
        assert choose_sampler(kind, isbl=isbl, catpow=catpow) is None
    assert choose_sampler("isbl", isbl=isbl, catpow=catpow) is isbl
    assert choose_sampler("catpow", isbl=isbl, catpow=catpow) is catpow
    for kind in ("foo", "ISBL", 1, ["isbl"]):
        with pytest.raises(ConfigError, match="^sampler: must be one of") as info:
            choose_sampler(kind, isbl=isbl, catpow=catpow)
        assert info.value.field == "sampler"
    with pytest.raises(ConfigError, match="^sampler: this recipe offers no 'catpow'"):
        choose_sampler("catpow", isbl=isbl)
    with pytest.raises(ConfigError, match="^sampler: the 'isbl' entry must be"):
        choose_sampler("isbl", isbl={"alpha": 0.5})


def test_choice_from_yaml():
    h = load_hyperpyyaml(YAML)
    assert h["mining_sampler"] is None
    h = load_hyperpyyaml(YAML, {"sampler": "isbl"})
    assert h["mining_sampler"].func is ISBLSampler
    assert h["mining_sampler"].keywords["alpha"] == 0.5
    h = load_hyperpyyaml(YAML, {"sampler": "catpow"})
    assert h["mining_sampler"].keywords["batch_bins"] == 4.0
    with pytest.raises(ConfigError, match="^sampler: .*'isbll'"):
        load_hyperpyyaml(YAML, {"sampler": "isbll"})


def test_saved_choice_reads_a_saved_hyperparams_file(tmp_path):
    # What SpeechBrain saves: references resolved, the choice kept as written.
    path = tmp_path / "hyperparams.yaml"
    path.write_text(
        "mining_sampler: !apply:hardmine.sampler_choice.choose_sampler\n"
        "  kind: isbl\n"
        "  isbl: !name:hardmine.isbl.ISBLSampler\n"
        "    alpha: 0.5\n"
        "  catpow: !name:hardmine.catpow.CategoryDatasetPowerSampler\n"
        "    batch_bins: 4.0\n"
    )
    entry = read_fields(str(path))["mining_sampler"]
    assert entry.tag == CHOICE_TAG
    chosen = saved_choice(entry)
    assert chosen.tag == "name:hardmine.isbl.ISBLSampler"
    assert chosen.value == {"alpha": 0.5}
    path.write_text(path.read_text().replace("kind: isbl", "kind:"))
    assert saved_choice(read_fields(str(path))["mining_sampler"]) is None
    # Anything else passes unchanged.
    assert saved_choice(chosen) is chosen and saved_choice(None) is None


@pytest.mark.parametrize("factory", [None, lambda dataset: None])
def test_no_sampler_keeps_the_ordinary_loader(factory, tmp_path):
    """A mining_sampler factory that returns None is the same as none at all."""
    checkpointer = AtomicCheckpointer(str(tmp_path / "save"))
    torch.manual_seed(0)
    brain = padded_regressor_class()(
        modules={"model": torch.nn.Linear(3, 1)},
        opt_class=lambda p: torch.optim.SGD(p, lr=0.05),
        hparams={"mining_sampler": factory},
        run_opts={"device": "cpu"},
        checkpointer=checkpointer,
    )
    loader = brain.make_dataloader(
        regression_dataset(), sb.Stage.TRAIN, batch_size=5, shuffle=False
    )
    assert brain.live_sampler is None
    assert "mining_sampler" not in checkpointer.recoverables
    assert [len(batch.id) for batch in loader] == [5, 5, 5, 5, 4]
    assert loader.batch_size == 5
