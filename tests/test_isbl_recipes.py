"""The recipes forward every ISBL option as an isbl_* handle, off by default."""

from pathlib import Path

import pytest
from hyperpyyaml import load_hyperpyyaml

from hardmine.cli import field_handles, forwarded_fields

REPO = Path(__file__).resolve().parents[1]
RECIPE_FILES = sorted(REPO.glob("recipes/*/*/hparams/*.yaml"))

#: Option -> the default every recipe gives its handle (the fragment's).
OPTIONS = {
    "capacity": "null",
    "capacity_lr": "0.05",
    "refresh_every": "null",
    "unseen_score": "initial",
    "uniform_mix": "0.0",
    "is_beta": "null",
    "is_anneal_epochs": "0",
    "score_decay": "0.0",
    "score_clip_quantile": "null",
    "persistent_visits": "3",
    "pool_alpha": "{}",
}


def test_every_recipe_file_forwards_every_option():
    assert len(RECIPE_FILES) == 18
    fragment = (REPO / "hparams" / "isbl.yaml").read_text()
    for name, default in OPTIONS.items():
        assert f"\n{name}: {default}\n" in fragment, name
    for path in RECIPE_FILES:
        text = path.read_text()
        for name, default in OPTIONS.items():
            assert f"\nisbl_{name}: {default}\n" in text, (path, name)
            assert f"\n        {name}: !ref <isbl_{name}>\n" in text, (path, name)
    forwarded = forwarded_fields(str(RECIPE_FILES[0]))
    assert field_handles("unseen_score", forwarded) == {
        "isbl_unseen_score": ["mining_sampler.isbl"]
    }


@pytest.mark.parametrize(
    "recipe",
    [
        "GoogleSpeechCommands/kws/hparams/kws_isbl.yaml",
        "WSJ0Mix/separation/hparams/sepformer_isbl.yaml",
    ],
)
def test_handles_reach_the_sampler_factory(recipe):
    overrides = {
        "isbl_capacity": 0.4,
        "isbl_unseen_score": "max",
        "isbl_uniform_mix": 0.001,
        "isbl_is_beta": 0.5,
        "isbl_is_anneal_epochs": 3,
        "isbl_score_decay": 0.1,
        "isbl_score_clip_quantile": 0.95,
        "isbl_persistent_visits": 4,
        "isbl_refresh_every": 16,
        "isbl_capacity_lr": 0.02,
    }
    with open(REPO / "recipes" / recipe) as handle:
        hparams = load_hyperpyyaml(handle, overrides)
    given = hparams["mining_sampler"].keywords
    for handle_name, value in overrides.items():
        assert given[handle_name.removeprefix("isbl_")] == value
