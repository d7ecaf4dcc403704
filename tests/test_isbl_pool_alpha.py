"""Per-pool loss powers (``pool_alpha``): hard-negative mining for keyword spotting."""

import numpy as np
import pytest
from hyperpyyaml import load_hyperpyyaml
from scipy.stats import chisquare
from speechbrain.dataio.dataset import DynamicItemDataset

from hardmine.isbl import ISBLSampler
from hardmine.loss_table import LossPowerTable
from hardmine.validation import ConfigError

REPO = __import__("pathlib").Path(__file__).resolve().parents[1]
LABELS = ["yes"] * 12 + ["no"] * 8 + ["_unknown_"] * 20 + ["_silence_"] * 5
POOLS = {"targets": ["yes", "no"], "negatives": ["_unknown_", "_silence_"]}
HARD_NEGATIVES = {"targets": 0.0, "negatives": 1.0}


def make_dataset():
    data = {f"utt{i:04d}": {"lab": lab} for i, lab in enumerate(LABELS)}
    dataset = DynamicItemDataset(data)
    dataset.set_output_keys(["id"])
    return dataset


def sampler_with(losses=None, **kwargs):
    options = {"pool_field": "lab", "pools": POOLS, "seed": 5, **kwargs}
    sampler = ISBLSampler(make_dataset(), batch_size=300, **options)
    if losses is not None:
        sampler.observe(sampler.ids, losses)
    return sampler


def losses_for_test():
    rng = np.random.default_rng(3)
    losses = rng.exponential(1.0, size=len(LABELS))
    losses[::7] = 0.0
    return losses


def expected(losses, powers, shares, pool_of, eps=1e-6):
    want = np.zeros(len(losses))
    for k, power in enumerate(powers):
        members = pool_of == k
        w = np.power(losses[members], power) + eps
        want[members] = shares[k] * w / w.sum()
    return want


def test_each_pool_draws_with_its_own_power():
    losses = losses_for_test()
    sampler = sampler_with(losses, pool_alpha=HARD_NEGATIVES)
    names = sampler.pool_names
    powers = [HARD_NEGATIVES[n] for n in names]
    want = expected(losses, powers, sampler.pool_mix_probs, sampler.table.pool_of)
    np.testing.assert_allclose(sampler.draw_probabilities(), want, rtol=1e-12)
    sampler.set_epoch(1)
    counts = np.zeros(len(LABELS))
    for b in range(200):
        np.add.at(counts, sampler.draw_global_batch(b, world=1), 1)
    assert chisquare(counts, want * counts.sum()).pvalue > 1e-3
    # The keywords are drawn uniformly whatever their losses: the power is 0.
    targets = sampler.table.pool_of == names.index("targets")
    assert np.ptp(want[targets]) < 1e-12
    # ... and the same losses with one alpha would not give that.
    plain = sampler_with(losses, alpha=1.0)
    assert np.ptp(plain.draw_probabilities()[targets]) > 1e-2


def test_unnamed_pools_keep_alpha_and_options_compose():
    losses = losses_for_test()
    sampler = sampler_with(
        losses, alpha=0.5, pool_alpha={"negatives": 2.0}, uniform_mix=0.1
    )
    names = sampler.pool_names
    powers = [{"targets": 0.5, "negatives": 2.0}[n] for n in names]
    pool_of = sampler.table.pool_of
    isbl = expected(losses, powers, np.ones(len(names)), pool_of)
    sizes = np.bincount(pool_of)
    within = 0.9 * isbl + 0.1 / sizes[pool_of]
    want = within * sampler.pool_mix_probs[pool_of]
    np.testing.assert_allclose(sampler.draw_probabilities(), want, rtol=1e-10)


def test_unseen_examples_take_their_pools_power():
    table = LossPowerTable(np.array([0, 0, 1, 1]), alpha=1.0, unseen_score="max")
    table.set_pool_alpha([0.0, 2.0])
    table.observe_indices(np.array([0, 2]), np.array([4.0, 3.0]))
    # Pool 0 (power 0): seen and unseen weigh the same. Pool 1: the unseen
    # example scores the pool's maximum, 3, so both weigh 3^2 + eps.
    np.testing.assert_allclose(table.probabilities(0), [0.5, 0.5])
    np.testing.assert_allclose(table.probabilities(1), [0.5, 0.5])
    table.observe_indices(np.array([3]), np.array([1.0]))
    w = np.array([9.0, 1.0]) + 1e-6
    np.testing.assert_allclose(table.probabilities(1), w / w.sum())


def test_powers_enter_the_digest_and_one_power_is_refused():
    table = LossPowerTable(np.array([0, 1]), alpha=1.0)
    before = table.digest()
    table.set_pool_alpha([1.0, 0.5])
    assert table.digest() != before
    with pytest.raises(ValueError, match="per pool"):
        table.set_alpha(0.3)
    with pytest.raises(ValueError, match="one power per pool"):
        table.set_pool_alpha([1.0])
    with pytest.raises(ValueError, match="finite and >= 0"):
        table.set_pool_alpha([1.0, -1.0])
    table.set_pool_alpha(None)
    assert table.digest() == before


def test_checkpoint_round_trip_keeps_the_draws():
    losses = losses_for_test()
    sampler = sampler_with(losses, pool_alpha=HARD_NEGATIVES)
    state = sampler.table.state_dict()
    fresh = sampler_with(pool_alpha=HARD_NEGATIVES)
    fresh.table.load_state_dict(state)
    np.testing.assert_allclose(
        fresh.draw_probabilities(), sampler.draw_probabilities(), rtol=1e-12
    )
    assert fresh.table.digest() == sampler.table.digest()


@pytest.mark.parametrize(
    "pool_alpha, field, words",
    [
        ({"keywords": 1.0}, "pool_alpha", "unknown pool 'keywords'"),
        ({"targets": -1.0}, "pool_alpha.targets", ">= 0"),
        ({"targets": float("inf")}, "pool_alpha.targets", "finite"),
        ({"targets": "high"}, "pool_alpha.targets", "number"),
        ([0.0, 1.0], "pool_alpha", "must map pool names"),
    ],
)
def test_bad_pool_alpha_names_the_field(pool_alpha, field, words):
    with pytest.raises(ConfigError) as err:
        sampler_with(pool_alpha=pool_alpha)
    assert err.value.field == field
    assert words in str(err.value)


def test_pool_alpha_with_a_capacity_is_refused():
    with pytest.raises(ConfigError) as err:
        sampler_with(pool_alpha=HARD_NEGATIVES, capacity=0.1)
    assert err.value.field == "pool_alpha" and "capacity" in str(err.value)


def test_kws_yaml_handle_reaches_the_sampler(tmp_path):
    yaml = REPO / "recipes/GoogleSpeechCommands/kws/hparams/kws_isbl.yaml"
    with open(yaml) as f:
        hparams = load_hyperpyyaml(
            f,
            {
                "output_folder": str(tmp_path),
                "isbl_pool_field": "lab",
                "isbl_pools": POOLS,
                "isbl_pool_alpha": HARD_NEGATIVES,
            },
        )
    sampler = hparams["mining_sampler"](make_dataset())
    np.testing.assert_array_equal(
        sampler.pool_alpha, [HARD_NEGATIVES[n] for n in sampler.pool_names]
    )
    with open(yaml) as f:
        default = load_hyperpyyaml(
            f,
            {
                "output_folder": str(tmp_path),
                "isbl_pool_field": "lab",
                "isbl_pools": POOLS,
            },
        )
    assert default["mining_sampler"](make_dataset()).pool_alpha is None
