"""Shared test fixtures: tiny models and batches for HardMiningBrain."""

import logging
import types

import pytest

logging.getLogger("speechbrain").setLevel(logging.WARNING)


#: Command-line overrides that make the KWS recipe's model tiny (tests only).
KWS_TINY_MODEL = [
    "--tdnn_channels",
    "16",
    "--emb_dim",
    "16",
    "--n_mels",
    "20",
    "--batch_size",
    "8",
]


def make_batch(x, y, ids=None, problems=None, classes=None):
    """A batch object with the fields recipes' PaddedBatch would carry."""
    n = x.shape[0]
    batch = types.SimpleNamespace(x=x, y=y, id=ids or [f"ex{i}" for i in range(n)])
    if problems is not None:
        batch.audio_problem = problems
    if classes is not None:
        batch.label = classes
    return batch


@pytest.fixture
def batch_factory():
    return make_batch
