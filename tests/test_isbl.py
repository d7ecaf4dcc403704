"""ISBL sampler and loss table: distribution, updates, quarantine, config, resume."""

import math

import numpy as np
import pytest
import torch
from hyperpyyaml import load_hyperpyyaml
from scipy.stats import chisquare
from speechbrain.dataio.batch import PaddedBatch
from speechbrain.dataio.dataloader import SaveableDataLoader
from speechbrain.dataio.dataset import DynamicItemDataset
from speechbrain.utils.checkpoints import Checkpointer
from speechbrain.utils.epoch_loop import EpochCounter

from hardmine.isbl import ISBLSampler
from hardmine.loss_table import LossPowerTable
from hardmine.validation import ConfigError

REPO = __import__("pathlib").Path(__file__).resolve().parents[1]


def formula(losses, alpha, eps):
    w = np.power(np.asarray(losses, dtype=np.float64), alpha) + eps
    return w / w.sum()


def assert_matches(counts, probs, min_expected=5.0, pvalue=1e-3):
    """Chi-square goodness of fit, pooling cells with few expected draws."""
    counts = np.asarray(counts, dtype=np.float64)
    expected = np.asarray(probs, dtype=np.float64) * counts.sum()
    small = expected < min_expected
    obs = np.append(counts[~small], counts[small].sum())
    exp = np.append(expected[~small], expected[small].sum())
    if exp[-1] == 0:
        obs, exp = obs[:-1], exp[:-1]
    assert obs.size >= 2
    result = chisquare(obs, exp)
    assert result.pvalue > pvalue, f"chi-square p={result.pvalue:.2e}"
    return result


def make_dataset(labels):
    data = {f"utt{i:04d}": {"lab": lab} for i, lab in enumerate(labels)}
    dataset = DynamicItemDataset(data)
    dataset.set_output_keys(["id"])
    return dataset


def sample_counts(sampler, n_batches, epoch=1):
    sampler.set_epoch(epoch)
    counts = np.zeros(len(sampler.ids), dtype=np.int64)
    for b in range(n_batches):
        np.add.at(counts, sampler.draw_global_batch(b, world=1), 1)
    return counts


# ------------------------------------------------------------------ table
@pytest.mark.parametrize("alpha", [0.75, 0.5, 1.0, 0.0])
def test_table_draws_follow_equation(alpha):
    rng = np.random.default_rng(11)
    n = 40
    losses = rng.gamma(1.5, 1.0, size=n)
    losses[[3, 17]] = 0.0  # exactly zero: weight eps only (1 + eps at alpha 0)
    table = LossPowerTable(np.zeros(n, dtype=int), alpha=alpha, eps=1e-6)
    table.observe_indices(np.arange(n), losses)
    probs = formula(losses, alpha, 1e-6)
    np.testing.assert_allclose(table.probabilities(0), probs, rtol=1e-12, atol=0)
    draws = table.draw(np.zeros(120_000, dtype=int), np.random.default_rng(5))
    counts = np.bincount(draws, minlength=n)
    assert_matches(counts, probs)
    if alpha > 0:
        assert counts[3] + counts[17] == 0
        # Power: the same counts reject the uniform sampler.
        assert chisquare(counts, np.full(n, counts.sum() / n)).pvalue < 1e-9


def test_table_eps_matters_for_zero_losses():
    losses = np.array([0.0, 0.0, 0.0, 1.0, 4.0])
    table = LossPowerTable(np.zeros(5, dtype=int), alpha=1.0, eps=0.5)
    table.observe_indices(np.arange(5), losses)
    probs = formula(losses, 1.0, 0.5)
    np.testing.assert_allclose(table.probabilities(0), probs, rtol=1e-12)
    counts = np.bincount(
        table.draw(np.zeros(50_000, dtype=int), np.random.default_rng(1)), minlength=5
    )
    assert_matches(counts, probs)
    assert counts[:3].min() > 0


def test_table_huge_losses():
    losses = np.array([1e30, 2e30, 5e29, 1.0, 3.0, 0.0])
    table = LossPowerTable(np.zeros(6, dtype=int), alpha=0.75, eps=1e-6)
    table.observe_indices(np.arange(6), losses)
    probs = formula(losses, 0.75, 1e-6)
    np.testing.assert_allclose(table.probabilities(0), probs, rtol=1e-12)
    counts = np.bincount(
        table.draw(np.zeros(60_000, dtype=int), np.random.default_rng(2)), minlength=6
    )
    assert counts[3:].sum() == 0
    assert_matches(counts[:3], probs[:3] / probs[:3].sum())


def test_table_overflowing_transform_saturates():
    table = LossPowerTable(np.zeros(3, dtype=int), alpha=2.0, transform="exp")
    table.observe_indices([0, 1], [5000.0, 1.0])
    assert np.isfinite(table.pool_weight(0))
    assert table.n_quarantined == 0
    assert table.probabilities(0)[0] == pytest.approx(1.0)


def test_table_probabilities_exact_with_pools():
    rng = np.random.default_rng(4)
    pool_of = rng.integers(3, size=200)
    table = LossPowerTable(pool_of, alpha=0.75, eps=1e-6)
    losses = rng.exponential(2.0, size=200)
    table.observe_indices(np.arange(200), losses)
    for k in range(3):
        members = table.members(k)
        np.testing.assert_array_equal(members, np.flatnonzero(pool_of == k))
        np.testing.assert_allclose(
            table.probabilities(k), formula(losses[members], 0.75, 1e-6), rtol=1e-12
        )
    draws = table.draw(np.array([2, 0, 1] * 1000), rng)
    assert np.all(pool_of[draws] == np.array([2, 0, 1] * 1000))


def test_transforms_and_momentum():
    table = LossPowerTable(np.zeros(2, dtype=int), transform="db_to_power")
    table.observe_indices([0, 1], [-10.0, 20.0])
    np.testing.assert_allclose(table.scores, [0.1, 100.0], rtol=1e-15)
    table = LossPowerTable(np.zeros(2, dtype=int), transform="exp")
    table.observe_indices([0], [math.log(3.0)])
    assert table.scores[0] == pytest.approx(3.0, rel=1e-15)

    table = LossPowerTable(np.zeros(2, dtype=int), momentum=0.9)
    table.observe_indices([0], [11.0])
    assert table.scores[0] == 11.0  # the first loss replaces the initial 1.0
    table.observe_indices([0], [1.0])
    assert table.scores[0] == pytest.approx(0.9 * 11.0 + 0.1 * 1.0)
    # Repeats in one batch are applied in order.
    table.observe_indices([1, 1], [3.0, 5.0])
    assert table.scores[1] == pytest.approx(0.9 * 3.0 + 0.1 * 5.0)
    # Reports read the latest loss itself, not the average.
    assert table.latest_scores.tolist() == [1.0, 5.0]


def test_momentum_first_visits_replace_the_initial_score():
    # A -20 dB example scores 0.01 from its first visit on, not 0.90, 0.81, 0.73.
    table = LossPowerTable(
        np.zeros(3, dtype=int), transform="db_to_power", momentum=0.9
    )
    for _ in range(3):
        table.observe_indices([0], [-20.0])
    assert table.scores[0] == pytest.approx(0.01, rel=1e-12)
    # A NaN first visit does not count as seen; the next finite loss replaces.
    table.observe_indices([1, 1], [np.nan, 10.0])
    assert table.scores[1] == pytest.approx(10.0, rel=1e-12)
    # "seen" survives a save and load, so blending resumes where it was.
    other = LossPowerTable(
        np.zeros(3, dtype=int), transform="db_to_power", momentum=0.9
    )
    other.load_state_dict(table.state_dict())
    other.observe_indices([0, 2], [0.0, 0.0])
    assert other.scores[0] == pytest.approx(0.9 * 0.01 + 0.1 * 1.0)
    assert other.scores[2] == 1.0
    assert other.digest() == _after(table, [0, 2], [0.0, 0.0]).digest()


def _after(table, indices, losses):
    table.observe_indices(indices, losses)
    return table


def test_repeats_without_momentum_keep_last():
    table = LossPowerTable(np.zeros(3, dtype=int), alpha=1.0)
    table.observe_indices([2, 0, 2, 2], [7.0, 4.0, np.nan, 9.0])
    assert table.scores.tolist() == [4.0, 1.0, 9.0]
    assert table.n_quarantined == 0
    table.observe_indices([1, 1], [2.0, np.nan])
    assert table.n_quarantined == 1
    assert table.quarantined.tolist() == [False, True, False]


def test_negative_loss_with_identity_names_example_and_changes_nothing():
    table = LossPowerTable(np.zeros(3, dtype=int), ids=["a", "b", "c"])
    with pytest.raises(ConfigError, match=r"transform: example 'c' has negative"):
        table.observe_indices([0, 2], [5.0, -0.5])
    assert table.scores.tolist() == [1.0, 1.0, 1.0]


def test_table_state_round_trip():
    table = LossPowerTable(np.array([0, 1, 0, 1]), alpha=0.5)
    table.observe_indices([0, 1, 3], [4.0, np.nan, 9.0])
    other = LossPowerTable(np.array([0, 1, 0, 1]), alpha=0.5)
    other.load_state_dict(table.state_dict())
    np.testing.assert_array_equal(other.scores, table.scores)
    assert other.n_quarantined == 1
    for k in range(2):
        np.testing.assert_array_equal(other.probabilities(k), table.probabilities(k))
    with pytest.raises(ValueError, match="different pools"):
        LossPowerTable(np.array([0, 0, 1, 1])).load_state_dict(table.state_dict())


# ----------------------------------------------------------- quarantine
def test_nan_loss_quarantines_example():
    n = 50
    sampler = ISBLSampler(make_dataset(["x"] * n), batch_size=500, seed=3)
    sampler.observe([sampler.ids[7]], torch.tensor([float("nan")]))
    sampler.observe([sampler.ids[8]], torch.tensor([float("inf")]))
    assert sampler.stats()["n_quarantined"] == 2
    probs = sampler.draw_probabilities()
    assert probs[7] == pytest.approx(1e-6 / (48 * (1 + 1e-6) + 2e-6), rel=1e-12)
    counts = sample_counts(sampler, 100)
    assert counts[7] + counts[8] == 0
    assert_matches(counts, probs)
    # A finite loss releases the example.
    sampler.observe([sampler.ids[7]], [2.0])
    assert sampler.stats()["n_quarantined"] == 1
    assert sampler.table.scores[7] == 2.0


def test_sampler_does_not_collapse_onto_broken_examples():
    n = 30
    sampler = ISBLSampler(make_dataset(["x"] * n), batch_size=64, seed=9)
    healthy = [0, 1, 2]
    broken = [i for i in range(n) if i not in healthy]
    sampler.observe([sampler.ids[i] for i in broken], np.full(len(broken), np.nan))
    sampler.observe([sampler.ids[i] for i in healthy], [0.0, 0.0, 0.0])
    # Even with perfectly learned healthy examples (weight eps), broken ones
    # weigh no more: they share the draws evenly rather than dominating.
    probs = sampler.draw_probabilities()
    assert probs[broken].max() <= probs[healthy].min() * (1 + 1e-12)
    sampler.observe([sampler.ids[i] for i in healthy], [1.0, 2.0, 3.0])
    counts = sample_counts(sampler, 50)
    assert counts[broken].sum() == 0
    assert_matches(counts[healthy], formula([1.0, 2.0, 3.0], 0.75, 1e-6))


# ----------------------------------------------------- pools and mixes
LABELS = ["yes"] * 12 + ["no"] * 8 + ["_unknown_"] * 20 + ["_silence_"] * 5
POOLS = {"targets": ["yes", "no"], "negatives": ["_unknown_", "_silence_"]}


@pytest.mark.parametrize(
    ("pools", "mix", "expected_shares"),
    [
        (POOLS, "natural", {"targets": 20 / 45, "negatives": 25 / 45}),
        (POOLS, "uniform", {"targets": 0.5, "negatives": 0.5}),
        (POOLS, {"targets": 3, "negatives": 1}, {"targets": 0.75, "negatives": 0.25}),
        # 'natural' is the pool's size, on the scale of the numbers given.
        (
            POOLS,
            {"targets": "natural", "negatives": 5},
            {"targets": 0.8, "negatives": 0.2},
        ),
        # Keywords equally often, keywords and negatives at their share.
        (
            None,
            {"*": "equal", "_unknown_": "natural", "_silence_": "natural"},
            {"yes": 10 / 45, "no": 10 / 45, "_unknown_": 20 / 45, "_silence_": 5 / 45},
        ),
        (
            None,
            {"*": 1, "yes": "equal", "_silence_": "equal"},
            {"yes": 8.5 / 19, "no": 1 / 19, "_unknown_": 1 / 19, "_silence_": 8.5 / 19},
        ),
        (
            None,
            0.5,
            {
                k: math.sqrt(v) / sum(map(math.sqrt, [12, 8, 20, 5]))
                for k, v in {
                    "yes": 12,
                    "no": 8,
                    "_unknown_": 20,
                    "_silence_": 5,
                }.items()
            },
        ),
    ],
)
def test_pool_mix_and_within_pool_draws(pools, mix, expected_shares):
    dataset = make_dataset(LABELS)
    sampler = ISBLSampler(
        dataset, batch_size=400, pool_field="lab", pools=pools, pool_mix=mix, seed=21
    )
    shares = dict(zip(sampler.pool_names, sampler.pool_mix_probs, strict=True))
    assert shares == pytest.approx(expected_shares, rel=1e-12)
    rng = np.random.default_rng(0)
    losses = rng.exponential(1.0, size=len(LABELS))
    losses[::9] = 0.0
    sampler.observe(sampler.ids, losses)
    # Marginal per-draw probability: pool share x loss-power within the pool.
    pool_of = sampler.table.pool_of
    want = np.zeros(len(LABELS))
    for k, name in enumerate(sampler.pool_names):
        members = pool_of == k
        want[members] = expected_shares[name] * formula(losses[members], 0.75, 1e-6)
    np.testing.assert_allclose(sampler.draw_probabilities(), want, rtol=1e-12)
    counts = sample_counts(sampler, 250)
    assert_matches(counts, want)
    pool_counts = np.bincount(pool_of, weights=counts)
    assert_matches(pool_counts, [expected_shares[n] for n in sampler.pool_names])


def test_zero_weight_pool_is_never_drawn():
    sampler = ISBLSampler(
        make_dataset(LABELS),
        batch_size=200,
        pool_field="lab",
        pools=POOLS,
        pool_mix={"targets": 0.0, "negatives": 2.0},
    )
    counts = sample_counts(sampler, 20)
    assert counts[:20].sum() == 0 and counts[20:].sum() == 4000


# ------------------------------------------------------- live updates
def test_loss_update_changes_next_draws():
    n = 20
    sampler = ISBLSampler(make_dataset(["x"] * n), batch_size=300, seed=5)
    sampler.set_epoch(1)
    before = sampler.draw_global_batch(0)
    assert_matches(np.bincount(before, minlength=n), np.full(n, 1 / n))
    losses = np.arange(n, dtype=float)
    sampler.observe(sampler.ids, losses)
    counts = sample_counts(sampler, 100)
    assert_matches(counts, formula(losses, 0.75, 1e-6))
    # Same seed/epoch/batch, new table: different draws.
    assert not np.array_equal(before, sampler.draw_global_batch(0))


def test_live_iteration_uses_latest_losses():
    n = 50
    sampler = ISBLSampler(
        make_dataset(["x"] * n), batch_size=100, epoch_length=1000, seed=2
    )
    sampler.set_epoch(1)
    stream = iter(sampler)
    first = next(stream)
    assert first.count(0) < 15
    sampler.observe([sampler.ids[0]], [1e6])
    second = next(stream)
    # P(0) = 1e4.5 / (1e4.5 + 49): nearly every draw is example 0.
    assert second.count(0) > 90


def test_epochs_length_and_determinism():
    sampler = ISBLSampler(make_dataset(["x"] * 10), batch_size=3, seed=4)
    assert len(sampler) == 4
    sampler.set_epoch(1)
    one = list(sampler)
    assert [len(b) for b in one] == [3, 3, 3, 3]
    assert list(sampler) == one  # same epoch, same table: same stream
    sampler.set_epoch(2)
    assert list(sampler) != one
    other = ISBLSampler(make_dataset(["x"] * 10), batch_size=3, seed=5)
    other.set_epoch(1)
    assert list(other) != one
    longer = ISBLSampler(make_dataset(["x"] * 10), batch_size=3, epoch_length=25)
    assert len(longer) == 9
    assert sampler.draw_counts.sum() == 36  # three passes of 4 x 3


def test_global_batch_sharding_by_rank(monkeypatch):
    sampler = ISBLSampler(make_dataset(["x"] * 30), batch_size=4, seed=8)
    sampler.set_epoch(1)
    global_batches = [sampler.draw_global_batch(b, world=2) for b in range(4)]
    shards = {}
    for me in (0, 1):
        monkeypatch.setattr("hardmine.sampler_base.world_size", lambda: 2)
        monkeypatch.setattr("hardmine.sampler_base.rank", lambda me=me: me)
        assert len(sampler) == 4  # ceil(30 / (4 * 2))
        shards[me] = list(sampler)
    for b, full in enumerate(global_batches):
        assert shards[0][b] == full[0::2].tolist()
        assert shards[1][b] == full[1::2].tolist()
        assert len(shards[0][b]) == len(shards[1][b]) == 4


def test_stats_and_hardest():
    n = 16
    sampler = ISBLSampler(make_dataset(["x"] * n), batch_size=4)
    stats = sampler.stats()
    assert stats["draw_entropy"] == pytest.approx(1.0)
    assert stats["draw_ess"] == pytest.approx(n)
    losses = np.linspace(0.0, 3.0, n)
    sampler.observe(sampler.ids, losses)
    p = formula(losses, 0.75, 1e-6)
    stats = sampler.stats()
    assert stats["draw_entropy"] == pytest.approx(-(p * np.log(p)).sum() / np.log(n))
    assert stats["draw_ess"] == pytest.approx(1 / np.square(p).sum())
    assert stats["max_prob_ratio"] == pytest.approx(p.max() * n)
    assert stats["mean_score"] == pytest.approx(losses.mean())
    sampler.set_epoch(1)
    list(sampler)
    top = sampler.hardest(3)
    assert [t["index"] for t in top] == [15, 14, 13]
    assert top[0]["id"] == sampler.ids[15]
    assert top[0]["prob"] == pytest.approx(p[15])
    assert top[0]["draws"] == sampler.draw_counts[15]


# --------------------------------------------------------- config errors
@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"alpha": -0.5}, "alpha"),
        ({"alpha": float("inf")}, "alpha"),
        ({"eps": 0.0}, "eps"),
        ({"eps": -1e-6}, "eps"),
        ({"transform": "log"}, "transform"),
        ({"momentum": 1.0}, "momentum"),
        ({"batch_size": 0}, "batch_size"),
        ({"epoch_length": 0}, "epoch_length"),
        ({"seed": -1}, "seed"),
        ({"pool_field": "speaker"}, "pool_field"),
        ({"pools": {"a": ["yes"]}}, "pools"),
        ({"pool_field": "lab", "pools": {"t": ["yes", "no"]}}, "pools"),
        (
            {"pool_field": "lab", "pools": {**POOLS, "empty": ["maybe"]}},
            "pools",
        ),
        (
            {
                "pool_field": "lab",
                "pools": {"a": ["yes", "no", "_unknown_"], "b": ["no", "_silence_"]},
            },
            "pools",
        ),
        ({"pool_field": "lab", "pool_mix": "balanced"}, "pool_mix"),
        ({"pool_field": "lab", "pool_mix": True}, "pool_mix"),
        ({"pool_field": "lab", "pool_mix": [1, 2]}, "pool_mix"),
        ({"pool_field": "lab", "pools": POOLS, "pool_mix": {"targets": 1}}, "pool_mix"),
        (
            {
                "pool_field": "lab",
                "pools": POOLS,
                "pool_mix": {"targets": 1, "negatives": 1, "x": 1},
            },
            "pool_mix",
        ),
        (
            {
                "pool_field": "lab",
                "pools": POOLS,
                "pool_mix": {"targets": -1, "negatives": 1},
            },
            "pool_mix.targets",
        ),
        (
            {
                "pool_field": "lab",
                "pools": POOLS,
                "pool_mix": {"targets": 0, "negatives": 0},
            },
            "pool_mix",
        ),
        (
            {"pool_field": "lab", "pools": POOLS, "pool_mix": {"*": "balanced"}},
            "pool_mix.targets",
        ),
        (
            {"pool_field": "lab", "pools": POOLS, "pool_mix": {"targets": "equal"}},
            "pool_mix",
        ),
        (
            {"pool_field": "lab", "pools": POOLS, "pool_mix": {"*": True}},
            "pool_mix.targets",
        ),
        (
            {"pool_field": "lab", "pool_mix": {"*": "equal", "maybe": "natural"}},
            "pool_mix",
        ),
    ],
)
def test_config_errors_name_the_field(kwargs, field):
    args = {"batch_size": 4, **kwargs}
    with pytest.raises(ConfigError) as err:
        ISBLSampler(make_dataset(LABELS), **args)
    assert err.value.field == field
    assert str(err.value).startswith(f"{field}: ")


def test_config_error_messages_name_the_culprit():
    with pytest.raises(ConfigError, match="'speaker'"):
        ISBLSampler(make_dataset(LABELS), 4, pool_field="speaker")
    with pytest.raises(ConfigError, match="pool 'empty' has no examples"):
        ISBLSampler(
            make_dataset(LABELS),
            4,
            pool_field="lab",
            pools={**POOLS, "empty": ["maybe"]},
        )
    with pytest.raises(ConfigError, match="'_unknown_'.*is in no pool"):
        ISBLSampler(
            make_dataset(LABELS),
            4,
            pool_field="lab",
            pools={"t": ["yes", "no", "_silence_"]},
        )
    sampler = ISBLSampler(make_dataset(LABELS), 4)
    with pytest.raises(ConfigError, match="transform: example 'utt0001'"):
        sampler.observe(["utt0000", "utt0001"], [1.0, -2.0])
    with pytest.raises(ValueError, match="'nope' is not in the training set"):
        sampler.observe(["nope"], [1.0])


def test_yaml_fragment_builds_the_sampler(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "batch_size: 6\n"
        "isbl_alpha: 0.75\n"
        f"mining_sampler: !include:{REPO / 'hparams' / 'isbl.yaml'}\n"
        "    batch_size: !ref <batch_size>\n"
        "    alpha: !ref <isbl_alpha>\n"
        "    pool_field: lab\n"
    )
    with open(recipe) as handle:
        hparams = load_hyperpyyaml(handle, {"isbl_alpha": 0.5})
    sampler = hparams["mining_sampler"](make_dataset(LABELS))
    assert isinstance(sampler, ISBLSampler)
    assert sampler.batch_size == 6
    assert sampler.table.alpha == 0.5
    assert sampler.table.eps == 1e-6
    assert sampler.pool_names == sorted(set(LABELS))
    assert ISBLSampler.handles_distributed is True


# -------------------------------------------------------------- resume
def loss_of(index, epoch):
    """Deterministic per-example loss standing in for a model."""
    return ((index * 37 + epoch * 11) % 17) / 4.0


def build(tmp_path, n=40, batch_size=4, epochs=3):
    dataset = make_dataset(["a", "b"] * (n // 2))
    sampler = ISBLSampler(
        dataset, batch_size=batch_size, pool_field="lab", alpha=1.0, seed=77
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
    """Run epochs, observing losses; save and stop at (epoch, batch) if asked."""
    stream = []
    for epoch in counter:
        sampler.set_epoch(epoch)
        for step, batch in enumerate(loader, start=1):
            indices = [sampler._index_of[i] for i in batch.id]
            stream.append((epoch, tuple(indices)))
            sampler.observe(batch.id, [loss_of(i, epoch) for i in indices])
            if stop_at == (epoch, step):
                checkpointer.save_checkpoint(end_of_epoch=False)
                return stream
        checkpointer.save_and_keep_only(end_of_epoch=True, num_to_keep=1)
    return stream


@pytest.mark.parametrize("stop_at", [(2, 4), (1, 1), (2, 10), (3, 9)])
def test_resume_mid_epoch_reproduces_stream(tmp_path, stop_at):
    ref_objects = build(tmp_path / "ref")
    reference = train(*ref_objects)
    assert len(reference) == 30  # 3 epochs x 10 batches
    first = train(*build(tmp_path / "run"), stop_at=stop_at)
    # Fresh objects, as after a crash, then recover and continue.
    sampler, loader, counter, checkpointer = build(tmp_path / "run")
    checkpointer.recover_if_possible()
    assert sampler.epoch == stop_at[0]
    second = train(sampler, loader, counter, checkpointer)
    assert first + second == reference
    # Tables and draw counts end identical too.
    np.testing.assert_array_equal(ref_objects[0].table.scores, sampler.table.scores)
    np.testing.assert_array_equal(ref_objects[0].draw_counts, sampler.draw_counts)


def test_resume_restores_table_and_counts(tmp_path):
    sampler, loader, counter, checkpointer = build(tmp_path)
    train(sampler, loader, counter, checkpointer, stop_at=(2, 3))
    fresh, _, _, fresh_ckpt = build(tmp_path)
    fresh_ckpt.recover_if_possible()
    np.testing.assert_array_equal(fresh.table.scores, sampler.table.scores)
    np.testing.assert_array_equal(fresh.draw_counts, sampler.draw_counts)
    assert fresh.table.n_observations == sampler.table.n_observations
    assert fresh._resume_skip == 3
    # Another epoch resets the mid-epoch position.
    fresh.set_epoch(3)
    assert fresh._resume_skip == 0


def test_load_refuses_other_dataset(tmp_path):
    sampler, loader, counter, checkpointer = build(tmp_path / "a")
    train(sampler, loader, counter, checkpointer, stop_at=(1, 2))
    other = ISBLSampler(make_dataset(["a", "b"] * 21), batch_size=4)
    ckpt = checkpointer.find_checkpoint()
    with pytest.raises(ValueError, match="different training set"):
        other._load(ckpt.paramfiles["mining_sampler"], end_of_epoch=False)


def read_log(path):
    rows = []
    for line in path.read_text().splitlines():
        epoch, pos, *indices = map(int, line.split())
        rows.append(((epoch, pos), tuple(indices)))
    return rows


@pytest.mark.slow
def test_sigkill_and_restart_reproduces_stream(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    script = REPO / "tests" / "ddp_scripts" / "isbl_resume_run.py"
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")

    def run(name, log, pause):
        return subprocess.Popen(
            [sys.executable, str(script), str(tmp_path / name), str(log), str(pause)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    ref_log = tmp_path / "ref.log"
    ref = run("ref", ref_log, 0.0)
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
    victim = run("ckpt", first_log, 0.2)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if first_log.exists() and len(first_log.read_text().splitlines()) >= 14:
            break
        assert victim.poll() is None, victim.stderr.read().decode()[-2000:]
        time.sleep(0.02)
    else:
        pytest.fail("the training run never reached batch 14")
    victim.send_signal(signal.SIGKILL)
    assert victim.wait(timeout=30) == -signal.SIGKILL
    restarted = run("ckpt", second_log, 0.0)
    assert restarted.wait(timeout=180) == 0, restarted.stderr.read().decode()[-2000:]
    assert ref.wait(timeout=180) == 0, ref.stderr.read().decode()[-2000:]

    reference = read_log(ref_log)
    assert len(reference) == 30
    second = read_log(second_log)
    resume_at = second[0][0]
    assert resume_at[0] == 2 and resume_at[1] > 1, resume_at  # mid-epoch resume
    # Batches logged after the last completed checkpoint are redone.
    first = [row for row in read_log(first_log) if row[0] < resume_at]
    assert [r[1] for r in first + second] == [r[1] for r in reference]
    assert [r[0] for r in first + second] == [r[0] for r in reference]
