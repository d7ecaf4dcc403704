"""Shared test fixtures: tiny models and batches for HardMiningBrain."""

import logging
import os
import pathlib
import socket
import subprocess
import sys
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


def tiny_kws_brain(hparams, n_classes=3):
    """A KWSBrain on a two-block x-vector over 20 Mel bands (fast on CPU)."""
    from speechbrain.lobes.features import Fbank
    from speechbrain.lobes.models.Xvector import Classifier, Xvector
    from speechbrain.processing.features import InputNormalization

    from hardmine.tasks.kws import KWSBrain

    modules = {
        "compute_features": Fbank(n_mels=20),
        "mean_var_norm": InputNormalization(norm_type="sentence", std_norm=False),
        "embedding_model": Xvector(
            in_channels=20,
            tdnn_blocks=2,
            tdnn_channels=[8, 8],
            tdnn_kernel_sizes=[3, 1],
            tdnn_dilations=[1, 1],
            lin_neurons=8,
        ),
        "classifier": Classifier(
            input_shape=[None, None, 8], lin_neurons=8, out_neurons=n_classes
        ),
    }
    return KWSBrain(
        modules, hparams={"far_targets": [0.05], **hparams}, run_opts={"device": "cpu"}
    )


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


def free_port():
    """A free TCP port on the loopback interface."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun(script, *args, nproc=2, timeout=240):
    """Run ``script args`` under torch.distributed.run on loopback; fail on error.

    A rank that hangs in a collective fails the test at ``timeout`` instead of
    hanging the suite.
    """
    repo = pathlib.Path(__file__).resolve().parents[1]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(repo))
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        str(nproc),
    ]
    cmd += ["--master_addr", "127.0.0.1", "--master_port", str(free_port())]
    cmd += [str(script), *map(str, args)]
    try:
        proc = subprocess.run(
            cmd, env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"{pathlib.Path(script).name} {args}: a rank hung\n{err.stderr}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def regression_dataset(n=24, seed=0):
    """A DynamicItemDataset of linear-regression examples with pools "t"/"n".

    Examples u5 and u17 have 300 times the noise of the others: two examples
    the model cannot fit, for the samplers to find.
    """
    import numpy as np
    import speechbrain as sb
    import torch
    from speechbrain.dataio.dataset import DynamicItemDataset

    rng = np.random.default_rng(seed)
    w = rng.normal(size=(3, 1))
    data = {}
    for i in range(n):
        x = rng.normal(size=3)
        noise = 3.0 if i in (5, 17) else 0.01
        y = x @ w + noise * rng.normal(size=1)
        data[f"u{i}"] = {
            "x_raw": x.tolist(),
            "y_raw": y.tolist(),
            "kind": "t" if i % 3 else "n",
        }
    dataset = DynamicItemDataset(data)

    @sb.utils.data_pipeline.takes("x_raw", "y_raw")
    @sb.utils.data_pipeline.provides("x", "y")
    def tensors(x, y):
        yield torch.tensor(x, dtype=torch.float32)
        yield torch.tensor(y, dtype=torch.float32)

    dataset.add_dynamic_item(tensors)
    dataset.set_output_keys(["id", "x", "y"])
    return dataset


def padded_regressor_class():
    """A HardMiningBrain with one squared error per example of padded batches."""
    from hardmine.brain import HardMiningBrain

    class PaddedRegressor(HardMiningBrain):
        def compute_forward(self, batch, stage):
            return self.modules.model(batch.x.data)

        def compute_objectives(self, predictions, batch, stage):
            return ((predictions - batch.y.data) ** 2).mean(dim=1)

    return PaddedRegressor


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory):
    """A tiny Speech Commands corpus: yes, no, up, and cat as the unknown word."""
    from hardmine.synthetic.gsc import generate_gsc

    root = tmp_path_factory.mktemp("kws") / "speech_commands"
    return generate_gsc(
        str(root),
        words=("yes", "no", "up", "cat"),
        n_speakers=5,
        repetitions=2,
        valid_speakers=1,
        test_speakers=1,
        background_seconds=12.0,
        seed=7,
    )
