"""SourceSampler: ISBL over the sources of dynamic mixing.

The within-speaker draws follow (L^alpha + eps) / sum over the speaker, the
speaker choice follows successive draws proportional to the speakers'
source counts, every mixture has distinct speakers, a mixture's loss
reaches all its sources, and checkpoints restore the table and replay the
plans of a resumed epoch.
"""

import functools

import numpy as np
import pytest
from scipy import stats

from hardmine.isbl import ISBLSampler
from hardmine.sampler_choice import choose_sampler
from hardmine.source_sampler import SourceSampler, dataset_id
from hardmine.tasks.dynamic_mixing import (
    DynamicMixingDataset,
    SourceTable,
    draw_speakers,
    parse_mixture_id,
)
from hardmine.validation import ConfigError

# Four speakers with 1, 2, 3 and 4 sources.
SPEAKERS = ["a"] + ["b"] * 2 + ["c"] * 3 + ["d"] * 4


def _dataset(speakers=SPEAKERS, num_spks=2, mixtures=40):
    table = SourceTable(
        [f"/nowhere/{i}.wav" for i in range(len(speakers))],
        [f"src{i}" for i in range(len(speakers))],
        speakers,
    )
    return DynamicMixingDataset(
        table, num_spks=num_spks, sample_rate=8000, mixtures_per_epoch=mixtures
    )


def _speaker_rows(sampler, dataset, batches, first=0):
    rows = [sampler.draw_global_batch(b) for b in range(first, first + batches)]
    sources = np.concatenate(rows)
    return sources, dataset.sources.speaker_of[sources]


def test_within_speaker_draws_follow_the_loss_power_equation():
    dataset = _dataset(mixtures=4000)
    alpha, eps = 1.5, 0.01
    sampler = SourceSampler(dataset, batch_size=1000, seed=7, alpha=alpha, eps=eps)
    sampler.set_epoch(1)
    # Known losses: five mixtures that hold every source once.
    mixtures = [(0, 9), (1, 8), (2, 7), (3, 6), (4, 5)]
    mixture_losses = [0.2, 1.0, 3.0, 0.5, 2.0]
    sampler.observe(
        [f"dm-e1-n{n}-s{a}-s{b}" for n, (a, b) in enumerate(mixtures)],
        mixture_losses,
    )
    losses = np.empty(10)
    for (a, b), loss in zip(mixtures, mixture_losses, strict=True):
        losses[[a, b]] = loss
    assert np.array_equal(sampler.loss_table.scores, losses)

    sources, speakers = _speaker_rows(sampler, dataset, 4)
    sources, speakers = sources.reshape(-1), speakers.reshape(-1)
    table = dataset.sources
    observed, expected = [], []
    for k in range(len(table.speaker_names)):
        members = table.members(k)
        weights = losses[members] ** alpha + eps
        drawn = np.bincount(sources[speakers == k], minlength=len(speakers))
        observed += drawn[members].tolist()
        expected += (weights / weights.sum() * (speakers == k).sum()).tolist()
        assert np.allclose(
            sampler.source_probabilities()[members], weights / weights.sum()
        )
    # One constraint per speaker (its total); speaker "a" has one source.
    ddof = len(table.speaker_names) - 1
    chi2, p = stats.chisquare(observed, expected, ddof=ddof)
    assert p > 0.001, (chi2, p)
    # Speaker d: the source with loss 2.0 (twice) beats the one with 0.5.
    drawn_d = np.bincount(sources, minlength=10)
    assert drawn_d[5] > 3 * drawn_d[6]


def test_speakers_are_distinct_and_drawn_by_their_source_counts():
    dataset = _dataset(mixtures=8000)
    sampler = SourceSampler(dataset, batch_size=2000, seed=3, alpha=0.0)
    sampler.set_epoch(1)
    _, speakers = _speaker_rows(sampler, dataset, 4)
    assert np.all(speakers[:, 0] != speakers[:, 1])
    sizes = np.array([1, 2, 3, 4]) / 10
    pairs = [(a, b) for a in range(4) for b in range(4) if a != b]
    expected_p = np.array([sizes[a] * sizes[b] / (1 - sizes[a]) for a, b in pairs])
    assert np.isclose(expected_p.sum(), 1.0)
    counts = {pair: 0 for pair in pairs}
    for a, b in speakers.tolist():
        counts[(a, b)] += 1
    observed = np.array([counts[pair] for pair in pairs])
    chi2, p = stats.chisquare(observed, expected_p * len(speakers))
    assert p > 0.001, (chi2, p)


def test_three_speakers_per_mixture_are_always_distinct():
    rng = np.random.default_rng(0)
    rows = draw_speakers(rng, np.array([1, 50, 1, 1]), 5000, 3)
    assert rows.shape == (5000, 3)
    assert all(len(set(row)) == 3 for row in rows.tolist())
    with pytest.raises(ConfigError, match="^num_spks: "):
        draw_speakers(rng, np.array([3, 0, 4]), 1, 3)


def test_observe_updates_every_source_of_each_mixture():
    dataset = _dataset(["a", "b", "c", "d", "e", "f"], num_spks=3)
    sampler = SourceSampler(dataset, batch_size=2, seed=0, alpha=1.0)
    sampler.set_epoch(1)
    plans = next(iter(sampler))
    assert [len(p) for p in plans] == [5, 5]  # epoch, number, three sources
    assert all(len(set(dataset.sources.speaker_of[list(p[2:])])) == 3 for p in plans)
    ids = [dataset_id((1, 0, 0, 1, 2)), dataset_id((1, 1, 3, 5, 4))]
    sampler.observe(ids, [5.0, float("nan")])
    table = sampler.loss_table
    assert table.scores[[0, 1, 2]].tolist() == [5.0, 5.0, 5.0]
    assert table.quarantined.tolist() == [False] * 3 + [True] * 3
    sampler.observe([dataset_id((1, 2, 4, 0, 1))], [2.0])  # latest loss wins
    assert table.scores[[0, 1, 2, 4]].tolist() == [2.0, 2.0, 5.0, 2.0]
    assert table.quarantined.tolist() == [False] * 3 + [True, False, True]
    with pytest.raises(ValueError, match="not a dynamic-mixing mixture id"):
        sampler.observe(["utt1"], [1.0])
    with pytest.raises(ValueError, match="outside the table"):
        sampler.observe(["dm-e1-n0-s0-s1-s99"], [1.0])


def _loss_of(plan):
    epoch, number, *sources = plan
    return float((sum(s * s for s in sources) + number) % 7) + 0.5


def test_checkpoint_round_trip_and_mid_epoch_resume_replay_the_plans(tmp_path):
    dataset = _dataset(mixtures=24)
    options = dict(batch_size=3, seed=5, alpha=1.0, uniform_mix=0.01)
    first = SourceSampler(dataset, **options)
    first.set_epoch(2)
    path = tmp_path / "sampler.npz"
    plans = []
    for b, batch in enumerate(first):
        plans.append(batch)
        first.observe([dataset_id(p) for p in batch], [_loss_of(p) for p in batch])
        if b == 2:
            first._save(path)
            saved_scores = first.loss_table.scores.copy()
    assert len(plans) == 8

    resumed = SourceSampler(dataset, **options)
    resumed._load(path, end_of_epoch=False)
    assert resumed.epoch == 2
    assert np.array_equal(resumed.loss_table.scores, saved_scores)
    resumed.set_epoch(2)  # SpeechBrain calls it again: the resume point stays
    replay = []
    for b, batch in enumerate(resumed):
        replay.append(batch)
        if b < 3:
            # SpeechBrain's fast-forward pulls placeholders (valid slots).
            assert all(isinstance(i, int) and 0 <= i < len(dataset) for i in batch)
            continue
        assert batch == plans[b], b  # then the same plans, live
        resumed.observe([dataset_id(p) for p in batch], [_loss_of(p) for p in batch])
    assert len(replay) == len(plans)
    assert np.array_equal(resumed.loss_table.scores, first.loss_table.scores)
    # The placeholders' items are mixtures the sampler can read back.
    assert parse_mixture_id(dataset_id(dataset.plan(replay[0][0])))[0] == 0

    other = SourceSampler(_dataset(SPEAKERS + ["e"], mixtures=24), **options)
    with pytest.raises(ValueError, match="different training set"):
        other._load(path, end_of_epoch=False)


def test_rank_shards_cover_the_global_batch():
    dataset = _dataset(mixtures=16)
    shards = []
    for rank in range(2):
        sampler = SourceSampler(dataset, 2, seed=1, rank=rank, world_size=2)
        sampler.set_epoch(1)
        shards.append(list(sampler))
    assert len(shards[0]) == len(shards[1]) == 4
    numbers = sorted(p[1] for shard in shards for batch in shard for p in batch)
    assert numbers == list(range(16))  # every draw number once over the ranks


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"pool_field": "spk"}, "pool_field"),
        ({"pools": {"x": ["a"]}}, "pools"),
        ({"pool_mix": "uniform"}, "pool_mix"),
        ({"pool_alpha": {"s1": 0.0}}, "pool_alpha"),
        ({"reference": "reference_losses.csv"}, "reference"),
        ({"is_beta": 0.5}, "is_beta"),
        ({"alpha": -1.0}, "alpha"),
        ({"batch_size": 0}, "batch_size"),
        ({"epoch_length": 0}, "epoch_length"),
    ],
)
def test_bad_options_name_their_field(options, field):
    kwargs = {"batch_size": 2, **options}
    with pytest.raises(ConfigError, match=f"^{field}: "):
        SourceSampler(_dataset(), **kwargs)


def test_the_recipe_choice_under_dynamic_mixing():
    isbl = functools.partial(
        ISBLSampler, batch_size=2, alpha=0.5, pool_field=None, pools={}, pool_mix={}
    )
    factory = choose_sampler("isbl", isbl=isbl, dynamic_mixing=True)
    sampler = factory(_dataset())
    assert isinstance(sampler, SourceSampler)
    assert sampler.loss_table.alpha == 0.5 and sampler.batch_size == 2
    assert choose_sampler("isbl", isbl=isbl, dynamic_mixing=False) is isbl
    assert choose_sampler(None, isbl=isbl, dynamic_mixing=True) is None
    with pytest.raises(ConfigError, match="^sampler: catpow"):
        choose_sampler("catpow", isbl=isbl, catpow=isbl, dynamic_mixing=True)
    with pytest.raises(ConfigError, match="^dynamic_mixing: "):
        choose_sampler("isbl", isbl=isbl, dynamic_mixing="yes")
    with pytest.raises(ConfigError, match="^sampler: "):
        SourceSampler(object(), batch_size=2)
