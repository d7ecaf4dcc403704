"""ISBL noise guard: persistently hard examples are flagged and their scores capped."""

import numpy as np
import pytest
from speechbrain.dataio.dataset import DynamicItemDataset
from speechbrain.utils.checkpoints import Checkpointer

from hardmine.isbl import ISBLSampler
from hardmine.loss_table import LossPowerTable


def test_streaks_flags_and_caps_follow_the_rule():
    table = LossPowerTable(
        np.zeros(5, dtype=int), alpha=1.0, score_clip_quantile=0.5, persistent_visits=2
    )
    table.observe_indices(np.arange(5), [1.0, 2.0, 3.0, 4.0, 5.0])
    assert np.all(np.isinf(table.clip_thresholds))  # nothing before a refresh
    assert not table.persistently_hard.any()
    table.refresh_guard()
    assert table.clip_thresholds[0] == np.quantile([1.0, 2.0, 3.0, 4.0, 5.0], 0.5)
    # Example 4: two visits above the median 3.0 flag it; its score is capped.
    table.observe_indices([4], [9.0])
    assert table.scores[4] == 9.0 and not table.persistently_hard[4]
    table.observe_indices([4], [8.0])
    assert table.persistently_hard[4] and table.scores[4] == 3.0
    # A non-finite visit leaves the streak; a visit at or below the
    # threshold resets it and clears the flag.
    table.observe_indices([4], [np.nan])
    assert table.persistently_hard[4]
    table.observe_indices([4], [7.0])
    assert table.persistently_hard[4] and table.scores[4] == 3.0
    table.observe_indices([4], [3.0])
    assert not table.persistently_hard[4] and table.scores[4] == 3.0
    # The lifted flag stays in the run's record; nothing else was ever flagged.
    assert table.ever_persistently_hard.tolist() == [False] * 4 + [True]
    # Repeats in one batch are consecutive visits.
    table.observe_indices([0, 0], [6.0, 6.0])
    assert table.persistently_hard[0] and table.scores[0] == 3.0
    # A refresh that lowers the threshold caps the flagged scores again.
    table.observe_indices([1, 2, 3], [0.5, 0.5, 0.5])
    table.refresh_guard()
    low = table.clip_thresholds[0]
    assert low < 3.0 and table.scores[0] == low
    weights = np.asarray(table.scores) + 1e-6
    np.testing.assert_allclose(table.probabilities(0), weights / weights.sum())


def mislabelled_stream(guard, n=500, n_bad=10, epochs=8, seed=0):
    """Clean examples' losses fall with every visit; mislabelled ones stay high."""
    rng = np.random.default_rng(seed)
    bad = np.zeros(n, dtype=bool)
    bad[rng.choice(n, n_bad, replace=False)] = True
    base = rng.lognormal(0.0, 0.5, n)
    options = {"score_clip_quantile": 0.9, "refresh_every": 4} if guard else {}
    data = {f"u{i:04d}": {"lab": "x"} for i in range(n)}
    sampler = ISBLSampler(DynamicItemDataset(data), batch_size=16, seed=3, **options)
    visits = np.zeros(n)
    for epoch in range(1, epochs + 1):
        sampler.set_epoch(epoch)
        for shard in sampler:
            idx = np.array(shard)
            visits[idx] += 1
            noise = rng.lognormal(0.0, 0.3, idx.size)
            clean = base[idx] * np.exp(-0.3 * visits[idx]) * noise
            losses = np.where(bad[idx], 3.0 * noise, clean)
            sampler.observe([sampler.ids[i] for i in idx], losses)
    return sampler, bad


def test_mislabelled_examples_are_flagged_and_capped():
    sampler, bad = mislabelled_stream(guard=True)
    flags = np.asarray(sampler.persistently_hard)
    assert flags[bad].sum() >= bad.sum() / 2  # at least half of them
    assert flags[~bad].sum() <= 0.02 * (~bad).sum()  # few false flags
    assert sampler.stats()["n_persistently_hard"] == flags.sum()
    threshold = sampler.table.clip_thresholds[0]
    assert np.all(np.asarray(sampler.table.scores)[flags] <= threshold)
    rows = {row["index"]: row for row in sampler.hardest(len(sampler.ids))}
    assert all(rows[i]["persistently_hard"] for i in np.flatnonzero(flags))
    # Capped, they take a smaller share of the draws than without the guard.
    unguarded, same_bad = mislabelled_stream(guard=False)
    np.testing.assert_array_equal(bad, same_bad)
    assert not unguarded.persistently_hard.any()
    share = sampler.draw_probabilities()[bad].sum()
    assert share < 0.5 * unguarded.draw_probabilities()[bad].sum()


@pytest.mark.parametrize("k", [1, 3])
def test_guard_flags_survive_a_checkpoint(tmp_path, k):
    data = {f"u{i}": {"lab": "x"} for i in range(6)}
    options = {"score_clip_quantile": 0.5, "persistent_visits": k, "refresh_every": 1}
    sampler = ISBLSampler(DynamicItemDataset(data), 2, **options)
    for _ in range(k + 1):  # the first visit meets no threshold yet
        sampler.observe(sampler.ids, [1.0, 1.0, 1.0, 1.0, 1.0, 9.0])
    assert sampler.persistently_hard.tolist() == [False] * 5 + [True]
    Checkpointer(tmp_path, {"sampler": sampler}).save_checkpoint()
    resumed = ISBLSampler(DynamicItemDataset(data), 2, **options)
    Checkpointer(tmp_path, {"sampler": resumed}).recover_if_possible()
    np.testing.assert_array_equal(resumed.persistently_hard, sampler.persistently_hard)
    np.testing.assert_array_equal(
        resumed.table.clip_thresholds, sampler.table.clip_thresholds
    )
    assert resumed.table.digest() == sampler.table.digest()
    # The capped example keeps its latest loss for reports, across the resume.
    assert sampler.table.scores[5] < 9.0 == sampler.table.latest_scores[5]
    np.testing.assert_array_equal(
        resumed.table.latest_scores, sampler.table.latest_scores
    )


def test_ever_flagged_survives_a_checkpoint_and_older_files(tmp_path):
    data = {f"u{i}": {"lab": "x"} for i in range(6)}
    options = {"score_clip_quantile": 0.5, "persistent_visits": 1, "refresh_every": 1}
    sampler = ISBLSampler(DynamicItemDataset(data), 2, **options)
    for _ in range(2):
        sampler.observe(sampler.ids, [1.0, 1.0, 1.0, 1.0, 1.0, 9.0])
    sampler.observe(["u5"], [0.5])  # learned: the flag lifts, the record stays
    assert not sampler.persistently_hard.any()
    assert sampler.ever_persistently_hard.tolist() == [False] * 5 + [True]
    assert sampler.stats()["n_ever_persistently_hard"] == 1
    rows = {row["id"]: row for row in sampler.hardest(6)}
    assert rows["u5"]["ever_persistently_hard"] and not rows["u5"]["persistently_hard"]
    assert not rows["u0"]["ever_persistently_hard"]
    Checkpointer(tmp_path, {"sampler": sampler}).save_checkpoint()
    resumed = ISBLSampler(DynamicItemDataset(data), 2, **options)
    Checkpointer(tmp_path, {"sampler": resumed}).recover_if_possible()
    np.testing.assert_array_equal(
        resumed.ever_persistently_hard, sampler.ever_persistently_hard
    )
    assert resumed.table.digest() == sampler.table.digest()
    # A state saved before the record was kept: the flags of then stand in.
    state = sampler.table.state_dict()
    state["persistently_hard"] = np.arange(6) == 2
    del state["ever_persistently_hard"]
    older = LossPowerTable(np.zeros(6, dtype=int), score_clip_quantile=0.5)
    older.load_state_dict(state)
    assert older.ever_persistently_hard.tolist() == [False, False, True] + [False] * 3
