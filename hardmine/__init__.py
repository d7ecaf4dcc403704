"""hardmine: hard-example mining for SpeechBrain training recipes.

Public API
----------
The names below are the stable import path: they are importable from the
package itself, whatever module defines them now or after a reorganisation
of the modules::

    from hardmine import (
        HardMiningBrain,              # speechbrain.core.Brain with per-example losses
        ISBLSampler,                  # loss-power sampler (hparams/isbl.yaml)
        CategoryDatasetPowerSampler,  # category/dataset power sampler (hparams/catpow.yaml)
        SoftmaxReweighting,           # softmax gradient reweighting (hparams/reweight.yaml)
        ThresholdFilter,              # threshold filtering (hparams/threshold.yaml)
        LossLimit,                    # loss-limit skipping (hparams/loss_limit.yaml)
        CapacityController,           # KL capacity controller of the reweighting
        ConfigError,                  # a configuration field has a bad value
        TooManySkipsError,            # LossLimit: too many batches skipped in a row
    )

Each name is the very object its defining module holds
(``hardmine.HardMiningBrain is hardmine.brain.HardMiningBrain``). The names
are loaded on first use, so ``import hardmine`` and light modules such as
:mod:`hardmine.validation` or :mod:`hardmine.tools.compare` do not import
SpeechBrain and torch until one of these names is asked for.

Everything else (helpers, constants, the recipes' Brain subclasses) is
imported from its module, e.g. ``from hardmine.tasks.separation import SeparationBrain``.
YAML files keep naming the defining modules (``!new:hardmine.threshold.ThresholdFilter``).

Example
-------
>>> import hardmine
>>> from hardmine import ConfigError, ThresholdFilter
>>> ThresholdFilter is hardmine.threshold.ThresholdFilter
True
>>> sorted(hardmine.__all__) == sorted(hardmine._EXPORTS)
True
"""

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # for type checkers and IDEs; at run time see __getattr__
    from hardmine.brain import HardMiningBrain
    from hardmine.capacity import CapacityController
    from hardmine.catpow import CategoryDatasetPowerSampler
    from hardmine.isbl import ISBLSampler
    from hardmine.loss_limit import LossLimit, TooManySkipsError
    from hardmine.reweighting import SoftmaxReweighting
    from hardmine.threshold import ThresholdFilter
    from hardmine.validation import ConfigError

__version__ = "0.1.0"

__all__ = [
    "HardMiningBrain",
    "ISBLSampler",
    "CategoryDatasetPowerSampler",
    "SoftmaxReweighting",
    "ThresholdFilter",
    "LossLimit",
    "CapacityController",
    "ConfigError",
    "TooManySkipsError",
]

#: Public name -> module that defines it.
_EXPORTS = {
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


def __getattr__(name):
    """Import a public name from its defining module on first use (PEP 562)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'hardmine' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
