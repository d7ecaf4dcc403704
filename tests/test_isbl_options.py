"""ISBL options together: validation, YAML, off = today's draws, checkpoints, Brain."""

import json

import numpy as np
import pytest
import torch
from conftest import padded_regressor_class, regression_dataset
from hyperpyyaml import load_hyperpyyaml
from speechbrain.dataio.batch import PaddedBatch
from speechbrain.dataio.dataloader import SaveableDataLoader
from speechbrain.dataio.dataset import DynamicItemDataset
from speechbrain.utils.checkpoints import Checkpointer
from speechbrain.utils.epoch_loop import EpochCounter

from hardmine.catpow import CategoryDatasetPowerSampler
from hardmine.isbl import ISBLSampler
from hardmine.sampler_base import ids_checksum
from hardmine.validation import ConfigError

REPO = __import__("pathlib").Path(__file__).resolve().parents[1]
LABELS = ["yes"] * 12 + ["no"] * 8 + ["_unknown_"] * 20 + ["_silence_"] * 5

#: Every new option at its "off" value.
OFF = {
    "capacity": None,
    "capacity_lr": 0.05,
    "refresh_every": None,
    "unseen_score": "initial",
    "uniform_mix": 0.0,
    "is_beta": None,
    "is_anneal_epochs": 0,
    "score_decay": 0.0,
    "score_clip_quantile": None,
    "persistent_visits": 3,
}

#: Every new option on.
ON = {
    "capacity": 0.3,
    "capacity_lr": 0.1,
    "refresh_every": 2,
    "unseen_score": "max",
    "uniform_mix": 0.05,
    "is_beta": 0.5,
    "is_anneal_epochs": 2,
    "score_decay": 0.3,
    "score_clip_quantile": 0.8,
    "persistent_visits": 2,
}


def make_dataset(labels=LABELS, duration=False):
    data = {}
    for i, lab in enumerate(labels):
        data[f"utt{i:04d}"] = {"lab": lab, **({"duration": 1.0} if duration else {})}
    dataset = DynamicItemDataset(data)
    dataset.set_output_keys(["id"])
    return dataset


def loss_of(index, step):
    """Deterministic per-example loss standing in for a model."""
    return ((index * 37 + step * 11) % 17) / 4.0


def stream(sampler, epochs=3):
    """Every batch of a few epochs, the losses fed back in between."""
    out, step = [], 0
    for epoch in range(1, epochs + 1):
        sampler.set_epoch(epoch)
        for batch in sampler:
            out.append(tuple(batch))
            step += 1
            sampler.observe(
                [sampler.ids[i] for i in batch], [loss_of(i, step) for i in batch]
            )
    return out


# --------------------------------------------------------------- off
def test_every_option_off_gives_todays_draws():
    kwargs = {"batch_size": 4, "pool_field": "lab", "seed": 7, "alpha": 1.0}
    plain = stream(ISBLSampler(make_dataset(), **kwargs))
    off = ISBLSampler(make_dataset(), **kwargs, **OFF)
    assert stream(off) == plain
    assert stream(ISBLSampler(make_dataset(), **kwargs, **ON)) != plain
    catpow = {"batch_bins": 4.0, "category_field": "lab", "leaf": "isbl", "seed": 2}
    reference = stream(
        CategoryDatasetPowerSampler(make_dataset(duration=True), **catpow)
    )
    with_off = CategoryDatasetPowerSampler(make_dataset(duration=True), **catpow, **OFF)
    assert stream(with_off) == reference


# -------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"capacity": -0.1}, "capacity"),
        ({"capacity": 0}, "capacity"),
        ({"capacity": float("inf")}, "capacity"),
        ({"capacity": "high"}, "capacity"),
        ({"capacity": 3.5}, "capacity"),  # above what 20- and 25-example pools reach
        ({"capacity": 0.5, "alpha": 0.0}, "alpha"),
        ({"capacity_lr": 0}, "capacity_lr"),
        ({"refresh_every": 0}, "refresh_every"),
        ({"refresh_every": 2.5}, "refresh_every"),
        ({"unseen_score": "min"}, "unseen_score"),
        ({"uniform_mix": 1.0}, "uniform_mix"),
        ({"uniform_mix": -0.01}, "uniform_mix"),
        ({"is_beta": 1.5}, "is_beta"),
        ({"is_beta": -0.1}, "is_beta"),
        ({"is_beta": True}, "is_beta"),
        ({"is_anneal_epochs": -1}, "is_anneal_epochs"),
        ({"is_anneal_epochs": 2.5}, "is_anneal_epochs"),
        ({"score_decay": 1.5}, "score_decay"),
        ({"score_decay": None}, "score_decay"),
        ({"score_clip_quantile": 0.0}, "score_clip_quantile"),
        ({"score_clip_quantile": 1.0}, "score_clip_quantile"),
        ({"persistent_visits": 0}, "persistent_visits"),
    ],
)
def test_config_errors_name_the_field(kwargs, field):
    args = {
        "batch_size": 4,
        "pool_field": "lab",
        "pools": {"t": ["yes", "no"], "n": ["_unknown_", "_silence_"]},
        **kwargs,
    }
    with pytest.raises(ConfigError) as err:
        ISBLSampler(make_dataset(), **args)
    assert err.value.field == field
    assert str(err.value).startswith(f"{field}: ")
    if field != "capacity" or kwargs["capacity"] != 3.5:
        # The power sampler checks the same fields, whatever its leaf.
        with pytest.raises(ConfigError) as err:
            CategoryDatasetPowerSampler(
                make_dataset(duration=True), 4.0, "lab", leaf="uniform", **kwargs
            ) if field != "alpha" else CategoryDatasetPowerSampler(
                make_dataset(duration=True), 4.0, "lab", leaf="isbl", **kwargs
            )
        assert err.value.field == field


def test_yaml_fragment_has_every_option_off_and_forwards_them(tmp_path):
    fragment = (REPO / "hparams" / "isbl.yaml").read_text()
    for name in ON:
        assert f"\n{name}: " in fragment
    recipe = tmp_path / "recipe.yaml"
    lines = ["mining_sampler: !include:" + str(REPO / "hparams" / "isbl.yaml")]
    lines += ["    batch_size: 4", "    pool_field: lab"]
    with open(recipe.with_name("off.yaml"), "w") as f:
        f.write("\n".join(lines) + "\n")
    lines += [f"    {k}: {json.dumps(v)}" for k, v in ON.items()]
    recipe.write_text("\n".join(lines) + "\n")
    with open(recipe.with_name("off.yaml")) as f:
        off = load_hyperpyyaml(f)["mining_sampler"](make_dataset())
    assert off.is_beta is None and off._leaf.controller is None
    assert off.table.unseen_score == "initial" and off.table.uniform_mix == 0.0
    assert off.table.score_decay == 0.0 and off.table.score_clip_quantile is None
    with open(recipe) as f:
        on = load_hyperpyyaml(f)["mining_sampler"](make_dataset())
    assert on._leaf.controller.capacity == 0.3 and on._leaf.refresh_every == 2
    assert on.importance_beta(2) == 0.75 and on.table.unseen_score == "max"
    assert on.table.uniform_mix == 0.05 and on.table.score_decay == 0.3
    assert on.table.score_clip_quantile == 0.8 and on.table.persistent_visits == 2
    catpow = (REPO / "hparams" / "catpow.yaml").read_text()
    for name in ON:
        assert f"\n{name}: " in catpow


def test_stats_report_the_options_in_use():
    sampler = ISBLSampler(make_dataset(), 4, pool_field="lab", seed=1, **ON)
    stream(sampler, epochs=2)
    stats = sampler.stats()
    for key in (
        "coverage_epoch",
        "sharpness",
        "capacity_kl",
        "n_unseen",
        "is_beta",
        "n_decayed",
        "n_persistently_hard",
    ):
        assert key in stats, key
    assert stats["is_beta"] == 0.75  # epoch 2 of a 2-epoch anneal from 0.5
    plain = ISBLSampler(make_dataset(), 4).stats()
    assert "sharpness" not in plain and "is_beta" not in plain


# -------------------------------------------------------- checkpoints
def build(tmp_path, options, n=40, batch_size=4, epochs=3):
    dataset = make_dataset(["a", "b"] * (n // 2))
    sampler = ISBLSampler(
        dataset, batch_size=batch_size, pool_field="lab", alpha=1.0, seed=77, **options
    )
    loader = SaveableDataLoader(
        dataset, batch_sampler=sampler, collate_fn=PaddedBatch, num_workers=0
    )
    counter = EpochCounter(epochs)
    checkpointer = Checkpointer(
        tmp_path,
        recoverables={
            "mining_sampler": sampler,
            "dataloader-TRAIN": loader,
            "counter": counter,
        },
    )
    return sampler, loader, counter, checkpointer


def train(sampler, loader, counter, checkpointer, stop_at=None):
    out = []
    for epoch in counter:
        sampler.set_epoch(epoch)
        for step, batch in enumerate(loader, start=1):
            indices = [sampler._index_of[i] for i in batch.id]
            out.append((epoch, tuple(indices)))
            sampler.observe(batch.id, [loss_of(i, epoch) for i in indices])
            out.append(tuple(np.round(sampler.batch_weights(batch.id), 12)))
            if stop_at == (epoch, step):
                checkpointer.save_checkpoint(end_of_epoch=False)
                return out
        checkpointer.save_and_keep_only(end_of_epoch=True, num_to_keep=1)
    return out


@pytest.mark.parametrize("stop_at", [(1, 3), (2, 10), (3, 6)])
def test_resume_mid_epoch_reproduces_the_stream_with_every_option(tmp_path, stop_at):
    reference_objects = build(tmp_path / "ref", ON)
    reference = train(*reference_objects)
    first = train(*build(tmp_path / "run", ON), stop_at=stop_at)
    sampler, loader, counter, checkpointer = build(tmp_path / "run", ON)
    checkpointer.recover_if_possible()
    second = train(sampler, loader, counter, checkpointer)
    assert first + second == reference
    ref_sampler = reference_objects[0]
    assert sampler.table.digest() == ref_sampler.table.digest()
    assert sampler.table.alpha == ref_sampler.table.alpha != 1.0
    assert sampler.stats() == ref_sampler.stats()


def write_old_checkpoint(sampler, path):
    """The sampler checkpoint as written before the options existed."""
    table = sampler.table
    meta = {
        "format": 1,
        "leaf": "isbl",
        "seed": sampler.seed,
        "epoch": sampler.epoch,
        "position": 0,
        "draws": 0,
        "size": len(sampler.ids),
        "ids_checksum": ids_checksum(sampler.ids),
        "n_observations": table.n_observations,
        "pool_checksum": table.state_dict()["pool_checksum"],
    }
    with open(path, "wb") as handle:
        np.savez(
            handle,
            meta=np.array(json.dumps(meta)),
            draw_counts=np.asarray(sampler.draw_counts),
            scores=np.asarray(table.scores),
            quarantined=np.asarray(table.quarantined),
            seen=np.asarray(table.seen),
        )


def test_old_checkpoints_load_with_the_options_on(tmp_path):
    old = ISBLSampler(make_dataset(), 4, pool_field="lab", seed=3)
    stream(old, epochs=2)
    path = tmp_path / "old.npz"
    write_old_checkpoint(old, path)
    new = ISBLSampler(make_dataset(), 4, pool_field="lab", seed=3, **ON)
    new._load(path, end_of_epoch=True)
    np.testing.assert_array_equal(new.table.scores, old.table.scores)
    np.testing.assert_array_equal(new.draw_counts, old.draw_counts)
    assert new.table.alpha == 0.75  # the configured start, no controller state
    assert not new.persistently_hard.any()
    # Observed examples count as observed in the saved epoch: no decay yet.
    np.testing.assert_array_equal(
        new.table.last_observed, np.where(old.table.seen, 2, -1)
    )
    np.testing.assert_array_equal(new.table.latest_scores, old.table.scores)
    assert stream(new, epochs=1)  # and it trains on
    plain = ISBLSampler(make_dataset(), 4, pool_field="lab", seed=3)
    plain._load(path, end_of_epoch=True)
    for name in ("scores", "quarantined", "seen"):
        np.testing.assert_array_equal(
            getattr(plain.table, name), getattr(old.table, name)
        )
    for k in range(len(plain.pool_names)):
        np.testing.assert_array_equal(
            plain.table.probabilities(k), old.table.probabilities(k)
        )


def test_checkpoints_move_between_option_sets(tmp_path):
    on = ISBLSampler(make_dataset(), 4, pool_field="lab", seed=3, **ON)
    stream(on, epochs=2)
    Checkpointer(tmp_path, {"s": on}).save_checkpoint()
    off = ISBLSampler(make_dataset(), 4, pool_field="lab", seed=3)
    Checkpointer(tmp_path, {"s": off}).recover_if_possible()
    np.testing.assert_array_equal(off.table.scores, on.table.scores)
    assert off.table.alpha == 0.75


# -------------------------------------------------------------- Brain
YAML = f"""
output_folder: !PLACEHOLDER
mining_sampler: !include:{REPO}/hparams/isbl.yaml
    batch_size: 4
    alpha: 1.0
    pool_field: kind
    capacity: 0.2
    refresh_every: 2
    unseen_score: max
    uniform_mix: 0.001
    is_beta: 0.5
    is_anneal_epochs: 2
    score_decay: 0.1
    score_clip_quantile: 0.9
checkpointer: !new:hardmine.checkpoint.AtomicCheckpointer
    checkpoints_dir: !ref <output_folder>/save
"""


Regressor = padded_regressor_class()


def test_brain_trains_with_every_option_from_yaml(tmp_path, monkeypatch):
    hparams = load_hyperpyyaml(YAML, {"output_folder": str(tmp_path)})
    torch.manual_seed(0)
    brain = Regressor(
        modules={"model": torch.nn.Linear(3, 1)},
        opt_class=lambda p: torch.optim.SGD(p, lr=0.05),
        hparams=hparams,
        run_opts={"device": "cpu"},
        checkpointer=hparams["checkpointer"],
    )
    calls = []
    original = ISBLSampler.batch_weights

    def recording(self, ids):
        calls.append(list(ids))
        return original(self, ids)

    monkeypatch.setattr(ISBLSampler, "batch_weights", recording)
    brain.fit(range(1, 5), regression_dataset(), train_loader_kwargs={"batch_size": 4})
    sampler = brain.live_sampler
    assert len(calls) == 4 * len(sampler)  # one lookup per trained batch
    stats = brain.mining_stats
    assert stats["sampler_is_beta"] == 1.0
    assert 0 < stats["sampler_coverage_epoch"] <= 1
    assert stats["sampler_sharpness"] != 1.0
    assert "sampler_n_persistently_hard" in stats and "sampler_capacity_kl" in stats
    lines = (tmp_path / "mining_stats.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["sampler_is_beta"] == 1.0
    brain.checkpointer.save_and_keep_only()
    saved = next((tmp_path / "save").glob("CKPT*/mining_sampler*"))
    with np.load(saved) as arrays:
        assert {"capacity_state", "streak", "last_observed"} <= set(arrays.files)
