"""The package-level names are the stable import path of the public API."""

import importlib
import subprocess
import sys

import pytest

import hardmine

#: Public name -> module that defines it today.
PUBLIC = {
    "HardMiningBrain": "hardmine.brain",
    "ISBLSampler": "hardmine.isbl",
    "CategoryDatasetPowerSampler": "hardmine.catpow",
    "SoftmaxReweighting": "hardmine.reweighting",
    "ThresholdFilter": "hardmine.threshold",
    "LossLimit": "hardmine.loss_limit",
    "CapacityController": "hardmine.capacity",
    "ConfigError": "hardmine.validation",
    "TooManySkipsError": "hardmine.loss_limit",
}


def test_all_lists_exactly_the_public_names():
    assert sorted(hardmine.__all__) == sorted(PUBLIC)
    assert len(hardmine.__all__) == len(set(hardmine.__all__))


@pytest.mark.parametrize("name", list(PUBLIC))
def test_name_is_the_defining_modules_object(name):
    namespace = {}
    exec(f"from hardmine import {name}", namespace)
    defining = importlib.import_module(PUBLIC[name])
    assert namespace[name] is getattr(defining, name)
    assert getattr(hardmine, name) is getattr(defining, name)
    assert name in dir(hardmine)


def test_star_import_gives_every_public_name():
    namespace = {}
    exec("from hardmine import *", namespace)
    assert {n: namespace[n] for n in PUBLIC} == {
        n: getattr(importlib.import_module(m), n) for n, m in PUBLIC.items()
    }


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'NoSuchThing'"):
        hardmine.NoSuchThing  # noqa: B018
    with pytest.raises(ImportError):
        exec("from hardmine import NoSuchThing", {})


def test_fresh_interpreter_imports_without_cycles():
    # In a new process, so no module is imported yet: importing the package
    # stays light, and the names load in any order although hardmine.brain
    # itself does ``from hardmine import distributed``.
    script = (
        "import sys\n"
        "import hardmine\n"
        "assert 'torch' not in sys.modules and 'speechbrain' not in sys.modules\n"
        "from hardmine import HardMiningBrain\n"
        "from hardmine import *\n"
        "import hardmine.brain, hardmine.distributed\n"
        "assert HardMiningBrain is hardmine.brain.HardMiningBrain\n"
        "assert hardmine.brain.distributed is hardmine.distributed\n"
        "print(' '.join(sorted(n for n in hardmine.__all__ if n in globals())))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == sorted(PUBLIC)
