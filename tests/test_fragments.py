"""The installed YAML fragments: hardmine.fragments, and the README's YAML examples."""

import functools
import os
import re
from pathlib import Path

import pytest
from hyperpyyaml import load_hyperpyyaml

from hardmine import fragments
from hardmine.isbl import ISBLSampler
from hardmine.loss_limit import LossLimit
from hardmine.reweighting import SoftmaxReweighting
from hardmine.threshold import ThresholdFilter

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
FIELDS = ROOT / "docs" / "fields.md"


def readme_blocks(section, lang, document=README):
    """The ```<lang> blocks of one ``## section`` of a Markdown file, in order."""
    text = document.read_text(encoding="utf-8")
    match = re.search(rf"^## {re.escape(section)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"{document.name} has no section {section!r}"
    return re.findall(rf"^```{lang}\n(.*?)^```", match.group(1), re.M | re.S)


def test_fragments_folder_is_the_package_data():
    assert fragments.path() == str(ROOT / "hardmine" / "hparams")
    assert sorted(os.listdir(fragments.path())) == sorted(fragments.FRAGMENTS)
    # The repository's hparams/ (which the recipes include) is that folder.
    assert (ROOT / "hparams").resolve() == Path(fragments.path()).resolve()


def test_copy_and_command_line(tmp_path, capsys):
    dest = tmp_path / "recipe" / "hparams" / "mining"
    assert fragments.main(["--copy", str(dest)]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(dest / name) for name in fragments.FRAGMENTS]
    for name in fragments.FRAGMENTS:
        assert (dest / name).read_bytes() == Path(fragments.path(), name).read_bytes()
    assert fragments.main(["--copy", str(dest)]) == 0  # identical files: fine
    capsys.readouterr()
    (dest / "isbl.yaml").write_text("alpha: 2\n")
    assert fragments.main(["--copy", str(dest)]) == 1
    assert "isbl.yaml differs from the installed fragment" in capsys.readouterr().err
    assert (dest / "isbl.yaml").read_text() == "alpha: 2\n"
    assert fragments.main(["--copy", str(dest), "--force"]) == 0
    assert (dest / "isbl.yaml").read_bytes() == Path(
        fragments.path(), "isbl.yaml"
    ).read_bytes()
    capsys.readouterr()
    assert fragments.main(["--path"]) == 0
    assert capsys.readouterr().out == fragments.path() + "\n"
    assert fragments.main(["--list"]) == 0
    assert "isbl.yaml" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        fragments.main([])


def test_readme_fields_example_loads(tmp_path):
    """docs/fields.md "Including a fragment": the example, loaded as written."""
    (example,) = readme_blocks("Including a fragment", "yaml", FIELDS)
    include = re.search(r"!include:(\S+)", example).group(1)
    # Place the example as deep as a recipe's hparams/ file, with the
    # repository's hparams/ folder where the relative path leads.
    depth = include.count("../")
    folder = tmp_path.joinpath(*[f"d{i}" for i in range(depth)])
    folder.mkdir(parents=True)
    os.symlink(fragments.path(), tmp_path / "hparams")
    path = folder / "recipe.yaml"
    path.write_text(example)
    with open(path) as fin:
        hparams = load_hyperpyyaml(fin)
    factory = hparams["mining_sampler"]
    assert isinstance(factory, functools.partial) and factory.func is ISBLSampler
    assert factory.keywords["batch_size"] == hparams["batch_size"] == 4
    assert factory.keywords["alpha"] == hparams["isbl_alpha"] == 0.75


def test_readme_own_recipe_example_loads(tmp_path):
    """README "Mining from your own recipe": the YAML next to copied fragments."""
    (example,) = readme_blocks("Mining from your own recipe", "yaml")
    fragments.copy(tmp_path / "hparams" / "mining")
    path = tmp_path / "hparams" / "train.yaml"
    path.write_text(example)
    with open(path) as fin:
        hparams = load_hyperpyyaml(fin, {"isbl_alpha": 0.5})
    assert isinstance(hparams["loss_limit"], LossLimit)
    assert isinstance(hparams["threshold_filter"], ThresholdFilter)
    assert isinstance(hparams["reweighting"], SoftmaxReweighting)
    assert hparams["reweighting"].mode == "robust"
    factory = hparams["mining_sampler"]
    assert factory.func is ISBLSampler
    assert factory.keywords["batch_size"] == hparams["batch_size"]
    assert factory.keywords["alpha"] == 0.5  # the command-line handle reached it
    commands = readme_blocks("Mining from your own recipe", "bash")[0]
    assert "python -m hardmine.fragments --copy hparams/mining" in commands
    assert "!include:mining/isbl.yaml" in example
