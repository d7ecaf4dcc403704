"""HardMiningBrain with a live sampler switched on from YAML."""

import numpy as np
import torch
from conftest import padded_regressor_class, regression_dataset
from hyperpyyaml import load_hyperpyyaml

from hardmine.isbl import ISBLSampler

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]

YAML = f"""
output_folder: !PLACEHOLDER
batch_size: 4
isbl_alpha: 1.0
mining_sampler: !include:{ROOT}/hparams/isbl.yaml
    batch_size: !ref <batch_size>
    alpha: !ref <isbl_alpha>
    pool_field: kind
    pools:
        targets: [t]
        negatives: [n]
    pool_mix: uniform
checkpointer: !new:hardmine.checkpoint.AtomicCheckpointer
    checkpoints_dir: !ref <output_folder>/save
"""


Regressor = padded_regressor_class()


def test_sampler_from_yaml_gets_every_training_loss(tmp_path):
    hparams = load_hyperpyyaml(
        YAML, {"output_folder": str(tmp_path), "isbl_alpha": 1.0}
    )
    torch.manual_seed(0)
    brain = Regressor(
        modules={"model": torch.nn.Linear(3, 1)},
        opt_class=lambda p: torch.optim.SGD(p, lr=0.05),
        hparams=hparams,
        run_opts={"device": "cpu"},
        checkpointer=hparams["checkpointer"],
    )
    ds = regression_dataset()
    brain.fit(range(1, 7), ds, train_loader_kwargs={"batch_size": 4})
    sampler = brain.live_sampler
    assert isinstance(sampler, ISBLSampler)
    assert sampler.table.alpha == 1.0  # the override reached the fragment
    assert brain.train_sampler is sampler  # not wrapped, set_epoch reaches it
    assert "mining_sampler" in brain.checkpointer.recoverables
    # The table holds losses from forward passes, not the initial 1.0.
    scores = sampler.table.scores
    drawn = sampler.draw_counts > 0
    assert drawn.sum() >= 20 and not np.allclose(scores[drawn], 1.0)
    # The two noisy examples end up with the largest scores and most draws in
    # the last epochs: mining found them.
    hardest = [row["id"] for row in sampler.hardest(2)]
    assert set(hardest) == {"u5", "u17"}
    assert brain.mining_stats["sampler_draw_entropy"] < 1.0
    brain.checkpointer.save_and_keep_only()
    assert any(
        p.name.startswith("mining_sampler")
        for p in next((tmp_path / "save").glob("CKPT*")).iterdir()
    )
