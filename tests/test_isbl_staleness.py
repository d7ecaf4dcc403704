"""ISBL staleness: scores not refreshed for an epoch move towards their pool mean."""

import numpy as np
import pytest
from speechbrain.dataio.dataset import DynamicItemDataset
from speechbrain.utils.checkpoints import Checkpointer

from hardmine.isbl import ISBLSampler

# Pool a: a0..a3, pool b: b0..b2.
LABELS = ["a", "a", "a", "a", "b", "b", "b"]
A0, A1, A2, A3, B0, B1, B2 = range(7)


def make_sampler(decay=0.25):
    data = {f"x{i}": {"lab": lab} for i, lab in enumerate(LABELS)}
    return ISBLSampler(
        DynamicItemDataset(data), 4, pool_field="lab", alpha=1.0, score_decay=decay
    )


def observe(sampler, losses):
    sampler.observe([sampler.ids[i] for i in losses], list(losses.values()))


def two_epochs(sampler):
    sampler.set_epoch(1)
    observe(sampler, {A0: 2.0, A1: 4.0, A2: 6.0, A3: np.nan, B0: 1.0, B1: 3.0})
    sampler.set_epoch(2)  # everything scored was observed in epoch 1: no decay
    assert sampler.stats().get("n_decayed", 0) == 0
    observe(sampler, {A0: 2.0, B0: 1.0})


def test_stale_scores_move_a_fraction_d_to_the_pool_mean():
    sampler = make_sampler(0.25)
    two_epochs(sampler)
    assert sampler.table.scores.tolist() == [2.0, 4.0, 6.0, 0.0, 1.0, 3.0, 1.0]
    sampler.set_epoch(3)
    # Pool a: scored a0, a1, a2 (a3 is quarantined), mean 4; pool b: b0, b1,
    # mean 2 (b2 was never observed). Stale: a1, a2, b1 (last seen in epoch 1).
    # L <- L + 0.25 * (mean - L), exact in binary floating point here.
    assert sampler.table.scores.tolist() == [
        2.0,
        4.0 + 0.25 * (4.0 - 4.0),
        6.0 + 0.25 * (4.0 - 6.0),
        0.0,
        1.0,
        3.0 + 0.25 * (2.0 - 3.0),
        1.0,
    ]
    assert sampler.stats()["n_decayed"] == 3
    assert sampler.table.unseen.tolist() == [False] * 6 + [True]
    assert sampler.table.quarantined[A3]
    # The draw weights follow the new scores.
    p_a = np.array([2.0, 4.0, 5.5, 0.0]) + 1e-6
    np.testing.assert_allclose(
        sampler.table.probabilities(0), p_a / p_a.sum(), rtol=1e-12
    )
    # The same epoch again changes nothing; the next decays again.
    sampler.set_epoch(3)
    assert sampler.table.scores[A2] == 5.5
    sampler.set_epoch(4)  # nothing was observed in epoch 3: all five move
    assert sampler.stats()["n_decayed"] == 5
    mean_a = (2.0 + 4.0 + 5.5) / 3
    assert sampler.table.scores[A2] == pytest.approx(5.5 + 0.25 * (mean_a - 5.5))


def test_no_decay_when_off():
    sampler = make_sampler(0.0)
    two_epochs(sampler)
    before = sampler.table.scores.copy()
    sampler.set_epoch(3)
    np.testing.assert_array_equal(sampler.table.scores, before)
    assert "n_decayed" not in sampler.stats()


@pytest.mark.parametrize("decay", [0.5, 0.0])
def test_last_observed_epochs_are_checkpointed(tmp_path, decay):
    sampler = make_sampler(decay)
    two_epochs(sampler)
    np.testing.assert_array_equal(sampler.table.last_observed, [2, 1, 1, 1, 2, 1, -1])
    Checkpointer(tmp_path, {"sampler": sampler}).save_checkpoint(end_of_epoch=True)
    resumed = make_sampler(decay)
    Checkpointer(tmp_path, {"sampler": resumed}).recover_if_possible()
    np.testing.assert_array_equal(resumed.table.last_observed, [2, 1, 1, 1, 2, 1, -1])
    sampler.set_epoch(3)
    resumed.set_epoch(3)
    np.testing.assert_array_equal(resumed.table.scores, sampler.table.scores)
    assert resumed.table.digest() == sampler.table.digest()
