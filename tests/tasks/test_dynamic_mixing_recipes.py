"""The separation recipes with dynamic mixing, end to end from their YAML files.

The LibriMix recipe's ``main()`` runs in this process (no interpreter
start-up) on a tiny generated Libri2Mix set with noise, with the CPU-sized
Conv-TasNet, speed perturbation and the source sampler (``--sampler isbl``).
The WSJ0Mix recipe trains with dynamic mixing and the source sampler under
torchrun in ``tests/recipes/test_torchrun.py``.
"""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from hardmine.plainyaml import read_fields
from hardmine.synthetic.layouts import make_librimix
from hardmine.tasks.dynamic_mixing import DM_DEFAULTS
from hardmine.tasks.separation import TINY_OVERRIDES

ROOT = Path(__file__).resolve().parents[2]
RECIPES = {
    "WSJ0Mix": ROOT / "recipes" / "WSJ0Mix" / "separation",
    "LibriMix": ROOT / "recipes" / "LibriMix" / "separation",
}
FILES = sorted(p for r in RECIPES.values() for p in (r / "hparams").glob("*.yaml"))


def _main(recipe, monkeypatch):
    folder = RECIPES[recipe]
    spec = importlib.util.spec_from_file_location(
        f"{recipe}_train_dm_under_test", folder / "train.py"
    )
    module = importlib.util.module_from_spec(spec)
    monkeypatch.syspath_prepend(str(folder))  # train.py imports its prepare script
    spec.loader.exec_module(module)
    return module.main


def _run(recipe, monkeypatch, out, data, *extra):
    argv = [
        str(RECIPES[recipe] / "hparams" / "convtasnet.yaml"),
        *TINY_OVERRIDES["convtasnet"],
        "--device", "cpu",
        "--data_folder", data,
        "--output_folder", str(out),
        "--N_epochs", "1",
        "--batch_size", "2",
        "--num_workers", "0",
        "--noprogressbar",
        "--dynamic_mixing", "True",
        *extra,
    ]  # fmt: skip
    _main(recipe, monkeypatch)(argv)
    lines = (out / "mining_stats.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_every_separation_yaml_has_the_dynamic_mixing_section_off():
    assert len(FILES) == 12
    for path in FILES:
        text = path.read_text()
        assert "\n# ####### Dynamic mixing #######\n" in text, path
        assert "\n    dynamic_mixing: !ref <dynamic_mixing>\n" in text, path
        fields = read_fields(str(path), tags=False)
        noise = "LibriMix" in str(path)
        for key, default in DM_DEFAULTS.items():
            if key.startswith("dm_noise") and not noise:
                assert key not in fields, (path, key)
                continue
            expected = (
                path.name == "sepformer_dm.yaml" if key == "dynamic_mixing" else default
            )
            assert fields[key] == expected, (path, key)


def test_the_dm_variant_differs_from_sepformer_in_few_settings():
    for folder in RECIPES.values():
        base = (folder / "hparams" / "sepformer.yaml").read_text().splitlines()
        dm = (folder / "hparams" / "sepformer_dm.yaml").read_text().splitlines()
        settings = [
            (a, b)
            for a, b in zip(
                [x for x in base if not x.startswith("#")],
                [x for x in dm if not x.startswith("#")],
                strict=True,
            )
            if a != b
        ]
        assert settings == [
            (
                "output_folder: !ref results/sepformer_<mining_variant>/<seed>",
                "output_folder: !ref results/sepformer_dm_<mining_variant>/<seed>",
            ),
            ("training_signal_len: null", "training_signal_len: 32000"),
            ("dynamic_mixing: False", "dynamic_mixing: True"),
        ]


@pytest.mark.slow
def test_librimix_trains_with_noise_speed_perturbation_and_the_source_sampler(
    tmp_path, monkeypatch
):
    data = make_librimix(
        str(tmp_path / "data"),
        sizes={"train": 4, "dev": 1, "test": 1},
        seconds=0.25,
        seed=1,
    )
    out = tmp_path / "run"
    stats = _run(
        "LibriMix",
        monkeypatch,
        out,
        data,
        "--mixture", "both",
        "--speed_perturb", "True",
        "--speed_perturb_speeds", "[90, 110]",
        "--sampler", "isbl",
        "--isbl_alpha", "1.0",
    )  # fmt: skip
    # As many new mixtures as the training list holds, from its 8 sources.
    assert stats[0]["examples"] == 4 and stats[0]["batches"] == 2
    assert stats[0]["examples_bad_audio"] == 0
    assert stats[0]["sampler_n_sources"] == 8
    checkpoint = next((out / "save").glob("CKPT+*/mining_sampler.ckpt"))
    with np.load(checkpoint) as saved:
        meta = json.loads(str(saved["meta"]))
        scores, seen = saved["scores"], saved["seen"]
    # Every source of the 4 trained mixtures has a loss (2 to 8 sources).
    assert meta["size"] == 8 and 2 <= int(seen.sum()) <= 8
    assert np.all(scores[~seen] == 1.0) and np.all(scores[seen] != 1.0)
    assert (out / "test_results.csv").is_file()


def test_catpow_under_dynamic_mixing_is_refused_when_the_yaml_loads(monkeypatch):
    from hardmine.validation import ConfigError

    main = _main("WSJ0Mix", monkeypatch)
    argv = [
        str(RECIPES["WSJ0Mix"] / "hparams" / "convtasnet.yaml"),
        *TINY_OVERRIDES["convtasnet"],
        "--dynamic_mixing", "True",
        "--sampler", "catpow",
    ]  # fmt: skip
    with pytest.raises(ConfigError, match="^sampler: catpow"):
        main(argv)
