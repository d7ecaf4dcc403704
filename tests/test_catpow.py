"""Tests of the category/dataset power sampler (hardmine/catpow.py)."""

import collections
import json
import os
import pathlib
import socket
import subprocess
import sys

import numpy as np
import pytest
import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml
from scipy.stats import chisquare
from speechbrain.dataio.dataloader import make_dataloader
from speechbrain.dataio.dataset import DynamicItemDataset
from speechbrain.utils.checkpoints import Checkpointer

from hardmine.brain import HardMiningBrain
from hardmine.catpow import (
    CategoryDatasetPowerSampler,
    CategoryPowerSampler,
    cut_batches,
    read_espnet_files,
)
from hardmine.validation import ConfigError

HPARAMS = pathlib.Path(__file__).resolve().parents[1] / "hparams" / "catpow.yaml"

# (dataset, category) -> number of utterances; deliberately imbalanced
LAYOUT = {
    ("a", "en"): 40,
    ("a", "fr"): 10,
    ("a", "de"): 3,
    ("b", "en"): 20,
    ("b", "sw"): 5,
    ("c", "fr"): 8,
}


def make_rows(seed=0, layout=LAYOUT):
    """Rows (id, duration, lang, corpus) with integer durations 1..5 s."""
    rng = np.random.default_rng(seed)
    rows = []
    for (corpus, lang), count in layout.items():
        for _ in range(count):
            rows.append(
                (f"utt{len(rows):03d}", float(rng.integers(1, 6)), lang, corpus)
            )
    order = rng.permutation(len(rows))  # interleave groups in dataset order
    return [rows[i] for i in order]


def make_dataset(rows):
    data = {
        uid: {"duration": dur, "lang": lang, "corpus": corpus}
        for uid, dur, lang, corpus in rows
    }
    return DynamicItemDataset(data)


def expected_probabilities(rows, beta_l, beta_d):
    """P(d) and P(l | d) straight from the equations."""
    n_ld = collections.defaultdict(float)
    for _, dur, lang, corpus in rows:
        n_ld[(corpus, lang)] += dur
    n_d = collections.defaultdict(float)
    for (corpus, _), bins in n_ld.items():
        n_d[corpus] += bins
    total = sum(n_d.values())
    p_d = {d: (n / total) ** beta_d for d, n in n_d.items()}
    z = sum(p_d.values())
    p_d = {d: v / z for d, v in p_d.items()}
    p_l = {}
    for d in n_d:
        w = {g: (n / n_d[d]) ** beta_l for g, n in n_ld.items() if g[0] == d}
        z = sum(w.values())
        p_l.update({g: v / z for g, v in w.items()})
    return p_d, p_l


def chi2_pvalue(observed, probs):
    observed = np.asarray(observed, dtype=float)
    probs = np.asarray(probs, dtype=float)
    return chisquare(observed, probs / probs.sum() * observed.sum()).pvalue


def flat_draws(batches):
    return [i for batch in batches for i in batch]


def group_counts(sampler, batches):
    groups = sampler.groups
    return collections.Counter(
        groups[g] for g in sampler.group_of_index(flat_draws(batches))
    )


def check_frequencies(counts, rows, beta_l, beta_d):
    """p-values of the dataset and per-dataset category chi-square tests."""
    p_d, p_l = expected_probabilities(rows, beta_l, beta_d)
    datasets = sorted(p_d)
    per_dataset = [sum(n for g, n in counts.items() if g[0] == d) for d in datasets]
    pvalues = {"dataset": chi2_pvalue(per_dataset, [p_d[d] for d in datasets])}
    for d in datasets:
        groups = sorted(g for g in p_l if g[0] == d)
        if len(groups) > 1:
            pvalues[d] = chi2_pvalue(
                [counts.get(g, 0) for g in groups], [p_l[g] for g in groups]
            )
    return pvalues


# --------------------------------------------------------------- distributions
@pytest.mark.parametrize(
    "beta_l,beta_d", [(0.0, 0.0), (0.3, 0.3), (1.0, 1.0), (0.0, 1.0), (1.0, 0.3)]
)
def test_dataset_and_category_frequencies_follow_the_power_laws(beta_l, beta_d):
    rows = make_rows()
    sampler = CategoryDatasetPowerSampler(
        make_dataset(rows),
        batch_bins=12,
        category_field="lang",
        dataset_field="corpus",
        category_upsampling_factor=beta_l,
        dataset_upsampling_factor=beta_d,
        dataset_scaling_factor=150.0,
        seed=11,
    )
    counts = group_counts(sampler, list(sampler))
    assert sum(counts.values()) == sampler.num_draws > 12000
    pvalues = check_frequencies(counts, rows, beta_l, beta_d)
    assert min(pvalues.values()) > 1e-3, pvalues


def test_frequency_test_rejects_the_wrong_power():
    rows = make_rows()
    sampler = CategoryDatasetPowerSampler(
        make_dataset(rows),
        batch_bins=12,
        category_field="lang",
        dataset_field="corpus",
        category_upsampling_factor=0.3,
        dataset_upsampling_factor=0.3,
        dataset_scaling_factor=150.0,
    )
    counts = group_counts(sampler, list(sampler))
    assert min(check_frequencies(counts, rows, 0.3, 0.3).values()) > 1e-3
    wrong = check_frequencies(counts, rows, 1.0, 1.0)
    assert wrong["dataset"] < 1e-9 and wrong["a"] < 1e-9


def test_reported_probabilities_match_the_equations():
    rows = make_rows()
    sampler = CategoryDatasetPowerSampler(
        make_dataset(rows),
        batch_bins=12,
        category_field="lang",
        dataset_field="corpus",
        category_upsampling_factor=0.3,
        dataset_upsampling_factor=0.6,
    )
    p_d, p_l = expected_probabilities(rows, 0.3, 0.6)
    assert sampler.dataset_probabilities == pytest.approx(p_d, rel=1e-12)
    assert sampler.category_probabilities == pytest.approx(p_l, rel=1e-12)
    joint = {g: p_d[g[0]] * p for g, p in p_l.items()}
    assert sampler.group_probabilities == pytest.approx(joint, rel=1e-12)


@pytest.mark.parametrize("beta", [0.0, 0.3, 1.0])
def test_single_level_sampler_follows_category_power(beta):
    rows = make_rows()
    sampler = CategoryPowerSampler(
        make_dataset(rows),
        batch_bins=12,
        category_field="lang",
        upsampling_factor=beta,
        dataset_scaling_factor=120.0,
        seed=5,
    )
    n_l = collections.defaultdict(float)
    for _, dur, lang, _ in rows:
        n_l[lang] += dur
    total = sum(n_l.values())
    langs = sorted(n_l)
    cats = sampler.table.category_of[flat_draws(list(sampler))]
    observed = np.bincount(cats, minlength=len(langs))
    assert sampler.table.category_names == langs
    assert chi2_pvalue(observed, [(n_l[c] / total) ** beta for c in langs]) > 1e-3
    if beta != 1.0:
        assert chi2_pvalue(observed, [n_l[c] for c in langs]) < 1e-9


def test_round_robin_inside_each_group():
    rows = make_rows()
    sampler = CategoryDatasetPowerSampler(
        make_dataset(rows),
        batch_bins=12,
        category_field="lang",
        dataset_field="corpus",
        category_upsampling_factor=0.0,
        dataset_upsampling_factor=0.0,
        dataset_scaling_factor=12.0,
    )
    draws = flat_draws(sampler.plan())
    groups = sampler.group_of_index(draws)
    for g, (corpus, lang) in enumerate(sampler.groups):
        members = sorted(i for i, r in enumerate(rows) if r[2:] == (lang, corpus))
        seq = [d for d, gg in zip(draws, groups) if gg == g]
        k = len(members)
        assert len(seq) > k  # every group wraps around at least once
        assert sorted(seq[:k]) == members  # one full shuffled pass first
        assert seq[k : 2 * k] == seq[: len(seq[k : 2 * k])]  # same order again
        counts = collections.Counter(seq)
        assert max(counts.values()) - min(counts[m] for m in members) <= 1


# ----------------------------------------------------------------- invariants
def check_batch_rule(batches, bins, batch_bins, min_bs, max_bs, last_complete):
    for n, batch in enumerate(batches):
        size = len(batch)
        total = sum(bins[i] for i in batch)
        assert size >= 1
        if max_bs is not None:
            assert size <= max_bs
        closed = (total > batch_bins and size >= min_bs) or (
            max_bs is not None and size >= max_bs
        )
        if n < len(batches) - 1 or last_complete:
            assert closed, (n, batch)
        # it did not close one utterance earlier
        head = total - bins[batch[-1]]
        early = (head > batch_bins and size - 1 >= min_bs) or (
            max_bs is not None and size - 1 >= max_bs
        )
        assert not early, (n, batch)


@pytest.mark.parametrize(
    "min_bs,max_bs,batch_bins",
    [(1, None, 12), (4, None, 6), (1, 3, 12), (2, 5, 9), (1, 1, 5)],
)
def test_batches_follow_size_and_bins_rules(min_bs, max_bs, batch_bins):
    rows = make_rows()
    bins = {i: r[1] for i, r in enumerate(rows)}
    for drop_last in (False, True):
        sampler = CategoryDatasetPowerSampler(
            make_dataset(rows),
            batch_bins=batch_bins,
            category_field="lang",
            dataset_field="corpus",
            min_batch_size=min_bs,
            max_batch_size=max_bs,
            drop_last=drop_last,
            dataset_scaling_factor=3.0,
        )
        for epoch in range(4):
            sampler.set_epoch(epoch)
            batches = list(sampler)
            assert len(batches) == len(sampler)
            check_batch_rule(batches, bins, batch_bins, min_bs, max_bs, drop_last)
            if not drop_last:
                assert sum(map(len, batches)) == sampler.num_draws


def test_float_durations_follow_the_same_rules():
    rng = np.random.default_rng(7)
    rows = [(u, float(rng.uniform(0.3, 4.0)), lang, c) for u, _, lang, c in make_rows()]
    bins = {i: r[1] for i, r in enumerate(rows)}
    for leaf in ("uniform", "isbl"):
        sampler = CategoryDatasetPowerSampler(
            make_dataset(rows),
            batch_bins=7.5,
            category_field="lang",
            dataset_field="corpus",
            min_batch_size=2,
            max_batch_size=6,
            drop_last=True,
            dataset_scaling_factor=4.0,
            leaf=leaf,
        )
        batches = list(sampler)
        assert len(batches) > 50
        check_batch_rule(batches, bins, 7.5, 2, 6, True)


def test_drop_last_removes_only_an_incomplete_final_batch():
    rows = make_rows()
    kwargs = dict(batch_bins=12, category_field="lang", dataset_field="corpus")
    found = 0
    for epoch in range(12):
        keep = CategoryDatasetPowerSampler(
            make_dataset(rows), drop_last=False, **kwargs
        )
        drop = CategoryDatasetPowerSampler(make_dataset(rows), drop_last=True, **kwargs)
        keep.set_epoch(epoch)
        drop.set_epoch(epoch)
        kept, dropped = list(keep), list(drop)
        last = kept[-1]
        complete = sum(rows[i][1] for i in last) > 12
        if complete:
            assert dropped == kept
        else:
            found += 1
            assert dropped == kept[:-1]
    assert found > 0  # the case was exercised


def test_cut_batches_matches_a_sequential_loop():
    rng = np.random.default_rng(3)
    for trial in range(30):
        bins = rng.integers(1, 50, rng.integers(1, 400)).astype(float)
        batch_bins = float(rng.integers(50, 300))
        min_bs = int(rng.integers(1, 6))
        max_bs = None if trial % 3 == 0 else int(rng.integers(min_bs, 12))
        expected, current, acc = [], [], 0.0
        for i, b in enumerate(bins):
            if (acc > batch_bins and len(current) >= min_bs) or (
                max_bs is not None and len(current) >= max_bs
            ):
                expected.append(current)
                current, acc = [], 0.0
            current.append(i)
            acc += b
        complete = (acc > batch_bins and len(current) >= min_bs) or (
            max_bs is not None and len(current) >= max_bs
        )
        expected.append(current)
        prefix = np.concatenate([[0.0], np.cumsum(bins)])
        starts, ends, last_complete = cut_batches(prefix, batch_bins, min_bs, max_bs)
        got = [list(range(s, e)) for s, e in zip(starts, ends)]
        assert got == expected
        assert last_complete == complete


def test_epoch_length_follows_the_formula():
    rows = make_rows()
    durations = np.array([r[1] for r in rows])
    for factor in (1.0, 1.2, 3.7):
        sampler = CategoryDatasetPowerSampler(
            make_dataset(rows),
            batch_bins=12,
            category_field="lang",
            dataset_field="corpus",
            dataset_scaling_factor=factor,
        )
        want = int(factor * durations.sum() / durations.mean())
        assert sampler.num_draws == want
        assert sum(map(len, sampler)) == want


def test_plans_are_reproducible_per_epoch_and_leave_global_rngs_alone():
    rows = make_rows()
    kwargs = dict(batch_bins=12, category_field="lang", dataset_field="corpus", seed=4)
    first = CategoryDatasetPowerSampler(make_dataset(rows), **kwargs)
    first.set_epoch(2)
    np.random.seed(0)  # noqa: NPY002 (the legacy global state is under test)
    torch.manual_seed(0)
    np_state, torch_state = np.random.get_state()[1].copy(), torch.get_rng_state()  # noqa: NPY002 (the legacy global state is under test)
    plan2 = list(first)
    assert np.array_equal(np.random.get_state()[1], np_state)  # noqa: NPY002 (the legacy global state is under test)
    assert torch.equal(torch.get_rng_state(), torch_state)
    np.random.seed(99)  # global state must not matter  # noqa: NPY002 (the legacy global state is under test)
    second = CategoryDatasetPowerSampler(make_dataset(rows), **kwargs)
    second.set_epoch(2)
    assert list(second) == plan2
    assert list(first) == plan2  # iterating again repeats the epoch
    second.set_epoch(3)
    assert list(second) != plan2
    other_seed = CategoryDatasetPowerSampler(
        make_dataset(rows), **{**kwargs, "seed": 5}
    )
    other_seed.set_epoch(2)
    assert list(other_seed) != plan2


# ------------------------------------------------------------- input sources
def write_sources(tmp_path, rows):
    csv = tmp_path / "train.csv"
    csv.write_text(
        "ID,duration,lang,corpus\n"
        + "".join(f"{u},{d},{lang},{c}\n" for u, d, lang, c in rows)
    )
    (tmp_path / "shape").write_text(
        "".join(f"{u} {int(d)},80\n" for u, d, _, _ in rows)
    )
    by_cat, by_ds = collections.defaultdict(list), collections.defaultdict(list)
    for u, _, lang, c in rows:
        by_cat[lang].append(u)
        by_ds[c].append(u)
    (tmp_path / "category2utt").write_text(
        "".join(f"{k} {' '.join(v)}\n" for k, v in reversed(list(by_cat.items())))
    )
    (tmp_path / "dataset2utt").write_text(
        "".join(f"{k} {' '.join(v)}\n" for k, v in by_ds.items())
    )
    (tmp_path / "utt2dataset").write_text("".join(f"{u} {c}\n" for u, _, _, c in rows))
    return {
        name: str(tmp_path / name)
        for name in ("shape", "category2utt", "dataset2utt", "utt2dataset")
    } | {"csv": str(csv)}


def test_csv_and_espnet_files_give_the_same_batches(tmp_path):
    rows = make_rows()
    paths = write_sources(tmp_path, rows)
    dataset = DynamicItemDataset.from_csv(paths["csv"])
    options = dict(
        batch_bins=14,
        min_batch_size=2,
        max_batch_size=6,
        category_upsampling_factor=0.4,
        dataset_upsampling_factor=0.7,
        seed=3,
    )
    from_csv = CategoryDatasetPowerSampler(
        dataset, category_field="lang", dataset_field="corpus", **options
    )
    variants = [
        CategoryDatasetPowerSampler.from_espnet_files(
            shape_file=paths["shape"],
            category2utt_file=paths["category2utt"],
            utt2dataset_file=paths["utt2dataset"],
            **options,
        ),
        CategoryDatasetPowerSampler.from_espnet_files(
            shape_file=[paths["shape"]],
            category2utt_file=paths["category2utt"],
            dataset2utt_file=paths["dataset2utt"],
            utt2dataset_file=paths["utt2dataset"],
            **options,
        ),
        # a YAML factory receives the training set first
        CategoryDatasetPowerSampler.from_espnet_files(
            dataset,
            shape_file=paths["shape"],
            category2utt_file=paths["category2utt"],
            dataset2utt_file=paths["dataset2utt"],
            **options,
        ),
    ]
    for epoch in range(3):
        from_csv.set_epoch(epoch)
        want = list(from_csv)
        for sampler in variants:
            assert sampler.groups == from_csv.groups
            sampler.set_epoch(epoch)
            assert list(sampler) == want
    single_csv = CategoryPowerSampler(
        dataset, batch_bins=14, category_field="lang", upsampling_factor=0.5
    )
    single_files = CategoryPowerSampler.from_espnet_files(
        shape_file=paths["shape"],
        category2utt_file=paths["category2utt"],
        batch_bins=14,
        upsampling_factor=0.5,
    )
    assert list(single_csv) == list(single_files)


def test_dataset_order_decides_indices_with_files(tmp_path):
    rows = make_rows()
    paths = write_sources(tmp_path, rows)
    subset = make_dataset(rows[::-1][:50])  # other order, a subset
    sampler = CategoryDatasetPowerSampler.from_espnet_files(
        subset,
        shape_file=paths["shape"],
        category2utt_file=paths["category2utt"],
        utt2dataset_file=paths["utt2dataset"],
        batch_bins=12,
    )
    assert sampler.table.ids == subset.data_ids
    reference = CategoryDatasetPowerSampler(
        subset, batch_bins=12, category_field="lang", dataset_field="corpus"
    )
    assert list(sampler) == list(reference)


# ---------------------------------------------------------------------- errors
def expect_error(exc, match, build):
    with pytest.raises(exc, match=match):
        build()


def test_bad_configuration_fails_with_the_field_named(tmp_path):
    rows = make_rows()
    data = make_dataset(rows)

    def build(**kw):
        base = dict(batch_bins=12, category_field="lang", dataset_field="corpus")
        return lambda: CategoryDatasetPowerSampler(data, **{**base, **kw})

    expect_error(
        ConfigError,
        "category_upsampling_factor: must be >= 0",
        build(category_upsampling_factor=-0.1),
    )
    expect_error(
        ConfigError,
        "dataset_upsampling_factor: must be >= 0",
        build(dataset_upsampling_factor=-1),
    )
    expect_error(
        ConfigError,
        "dataset_scaling_factor: must be >= 1",
        build(dataset_scaling_factor=0.9),
    )
    expect_error(
        ConfigError,
        r"batch_bins: 4 is smaller than utterance 'utt\d+' \(5 bins\)",
        build(batch_bins=4),
    )
    expect_error(
        ConfigError,
        "category_field: no field 'language'",
        build(category_field="language"),
    )
    expect_error(ConfigError, "dataset_field: no field 'db'", build(dataset_field="db"))
    expect_error(
        ConfigError, "bins_field: no field 'length'", build(bins_field="length")
    )
    expect_error(
        ConfigError,
        "max_batch_size: must be >= 3",
        build(min_batch_size=3, max_batch_size=2),
    )
    expect_error(ConfigError, "leaf: must be one of", build(leaf="sumtree"))
    expect_error(
        ConfigError, "rank: must be < world_size=2", build(rank=2, world_size=2)
    )
    ddp = build(world_size=4, rank=0, min_batch_size=2)()
    expect_error(
        ConfigError,
        "min_batch_size: must be >= the number of processes",
        lambda: iter(ddp),
    )

    bad = make_dataset(rows[:-1] + [(rows[-1][0], "n/a", "en", "a")])
    expect_error(
        ConfigError,
        "bins_field: example 'utt\\d+': duration='n/a'",
        lambda: CategoryDatasetPowerSampler(bad, 12, "lang"),
    )
    zero = make_dataset(rows[:-1] + [(rows[-1][0], 0.0, "en", "a")])
    expect_error(
        ValueError,
        "has size 0.0",
        lambda: CategoryDatasetPowerSampler(zero, 12, "lang"),
    )
    empty_cat = make_dataset(rows[:-1] + [(rows[-1][0], 1.0, "", "a")])
    expect_error(
        ConfigError,
        "category_field: example .* has an empty 'lang'",
        lambda: CategoryDatasetPowerSampler(empty_cat, 12, "lang"),
    )


def test_bad_espnet_files_fail_with_the_file_named(tmp_path):
    rows = make_rows()[:6]
    paths = write_sources(tmp_path, rows)
    shape, c2u = paths["shape"], paths["category2utt"]
    ids = [r[0] for r in rows]

    def read(**kw):
        return lambda: read_espnet_files(
            **{"shape_file": shape, "category2utt_file": c2u, **kw}
        )

    def write(name, text):
        path = tmp_path / name
        path.write_text(text)
        return str(path)

    missing = write("c2u_missing", f"en {' '.join(ids[:-1])}\n")
    expect_error(
        ValueError,
        f"c2u_missing: utterance '{ids[-1]}' is missing",
        read(category2utt_file=missing),
    )
    empty = write("c2u_empty", f"en {' '.join(ids)}\nxx\n")
    expect_error(
        ValueError,
        "c2u_empty: category 'xx' has no utterances",
        read(category2utt_file=empty),
    )
    twice = write("c2u_twice", f"en {' '.join(ids)}\nfr {ids[0]}\n")
    expect_error(
        ValueError,
        f"utterance '{ids[0]}' is in category 'en' and 'fr'",
        read(category2utt_file=twice),
    )
    unknown = write("c2u_unknown", f"en {' '.join(ids)} ghost\n")
    expect_error(
        ValueError,
        "utterance 'ghost' of category 'en' is not in",
        read(category2utt_file=unknown),
    )
    u2d = write("u2d_missing", "".join(f"{u} a\n" for u in ids[1:]))
    expect_error(
        ValueError,
        f"u2d_missing: utterance '{ids[0]}' is missing",
        read(utt2dataset_file=u2d),
    )
    d2u = write("d2u", f"b {' '.join(ids)}\n")
    u2d_all = write("u2d_all", "".join(f"{u} a\n" for u in ids))
    expect_error(
        ValueError,
        "is in dataset 'a' here but in 'b'",
        read(dataset2utt_file=d2u, utt2dataset_file=u2d_all),
    )
    bad_shape = write("shape_bad", f"{ids[0]} abc\n")
    expect_error(
        ValueError,
        "shape_bad: utterance .* has no numeric shape",
        read(shape_file=bad_shape),
    )
    expect_error(
        ConfigError, "shape_file: exactly one", read(shape_file=[shape, shape])
    )
    expect_error(
        ConfigError,
        "batch_bins: required",
        lambda: CategoryDatasetPowerSampler.from_espnet_files(
            shape_file=shape, category2utt_file=c2u
        ),
    )


# --------------------------------------------------------------- DDP sharding
@pytest.mark.parametrize("leaf", ["uniform", "isbl"])
@pytest.mark.parametrize("world", [2, 3])
def test_ranks_get_disjoint_shards_covering_each_batch(leaf, world):
    rows = make_rows()
    kwargs = dict(
        batch_bins=10,
        category_field="lang",
        dataset_field="corpus",
        min_batch_size=world,
        dataset_scaling_factor=2.0,
        leaf=leaf,
        seed=8,
    )
    single = CategoryDatasetPowerSampler(make_dataset(rows), world_size=1, **kwargs)
    single.set_epoch(1)
    full = list(single)
    shards = []
    for rank in range(world):
        sampler = CategoryDatasetPowerSampler(
            make_dataset(rows), rank=rank, world_size=world, **kwargs
        )
        sampler.set_epoch(1)
        shards.append(list(sampler))
        if leaf == "uniform":
            assert len(sampler) == len(shards[-1])
    lengths = {len(s) for s in shards}
    assert len(lengths) == 1  # every rank steps the same number of times
    n = lengths.pop()
    assert n in (len(full), len(full) - 1)
    if n == len(full) - 1:
        assert len(full[-1]) < world  # only a final batch too small to share
    for b in range(n):
        parts = [shards[r][b] for r in range(world)]
        assert all(parts)
        merged = [None] * len(full[b])
        for r, part in enumerate(parts):
            merged[r::world] = part  # positions are disjoint and cover the batch
        assert merged == full[b]


# ------------------------------------------------------------------ ISBL leaf
def isbl_sampler(rows, **kw):
    base = dict(
        batch_bins=12,
        category_field="lang",
        dataset_field="corpus",
        category_upsampling_factor=0.5,
        dataset_upsampling_factor=0.5,
        dataset_scaling_factor=60.0,
        leaf="isbl",
        alpha=0.75,
        eps=1e-6,
        seed=2,
    )
    return CategoryDatasetPowerSampler(make_dataset(rows), **{**base, **kw})


def test_isbl_leaf_keeps_the_planned_group_sequence():
    rows = make_rows()
    live = isbl_sampler(rows, dataset_scaling_factor=3.0)
    uniform = isbl_sampler(rows, dataset_scaling_factor=3.0, leaf="uniform")
    for s in (live, uniform):
        s.set_epoch(4)
    drawn = flat_draws(list(live))
    planned = live.group_sequence()
    assert np.array_equal(planned, uniform.group_sequence())
    assert np.array_equal(live.group_of_index(drawn), planned[: len(drawn)])
    assert len(drawn) == live.num_draws  # drop_last False: nothing is lost


def test_isbl_leaf_follows_loss_power_within_groups_and_power_laws_across():
    rows = make_rows()
    sampler = isbl_sampler(rows)
    rng = np.random.default_rng(1)
    losses = rng.uniform(0.5, 6.0, len(rows))
    sampler.observe([r[0] for r in rows], torch.tensor(losses))
    sampler.set_epoch(1)
    batches = list(sampler)
    draws = np.array(flat_draws(batches))
    check_batch_rule(batches, {i: r[1] for i, r in enumerate(rows)}, 12, 1, None, False)
    groups = sampler.group_of_index(draws)
    weights = losses**0.75 + 1e-6
    tested = 0
    for g, (corpus, lang) in enumerate(sampler.groups):
        members = [i for i, r in enumerate(rows) if r[2:] == (lang, corpus)]
        if len(members) < 5:
            continue
        observed = np.array([np.sum(draws[groups == g] == m) for m in members])
        assert observed.sum() > 50 * len(members) ** 0.5
        assert chi2_pvalue(observed, weights[members]) > 1e-3, (corpus, lang)
        if len(members) >= 20:
            assert chi2_pvalue(observed, np.ones(len(members))) < 1e-6  # not uniform
        tested += 1
    assert tested >= 3
    counts = group_counts(sampler, batches)
    assert min(check_frequencies(counts, rows, 0.5, 0.5).values()) > 1e-3


def test_isbl_leaf_reacts_to_losses_during_the_epoch():
    rows = make_rows()
    sampler = isbl_sampler(rows, alpha=1.0, eps=1e-9, dataset_scaling_factor=10.0)
    hard = next(i for i, r in enumerate(rows) if r[2:] == ("en", "a"))
    group = sampler.group_of_index([hard])[0]
    members = [i for i, r in enumerate(rows) if r[2:] == ("en", "a")]
    seen_after = []
    it = iter(sampler)
    next(it)
    # after this feedback the group has one hard member and all others easy
    sampler.observe(
        [rows[i][0] for i in members], [100.0 if i == hard else 0.0 for i in members]
    )
    for batch in it:
        seen_after.extend(i for i in batch if sampler.group_of_index([i])[0] == group)
    assert len(seen_after) > 100
    assert all(i == hard for i in seen_after)
    others = len(rows) - len(members)  # still at the initial score 1
    assert sampler.stats()["mean_score"] == pytest.approx((100.0 + others) / len(rows))


def test_observe_rejects_unknown_ids_and_mismatched_lengths():
    sampler = isbl_sampler(make_rows())
    with pytest.raises(ValueError, match="'nobody' is not in the training set"):
        sampler.observe(["nobody"], [1.0])
    with pytest.raises(ValueError, match="2 ids but 1 losses"):
        sampler.observe(["utt000", "utt001"], [1.0])
    uniform = isbl_sampler(make_rows(), leaf="uniform")
    uniform.observe(["nobody"], [1.0])  # the uniform leaf ignores feedback


# ----------------------------------------------- ISBL leaf options reach it
# Two groups of 12 utterances with equal group probabilities and ~40,000
# draws: about 20,000 per group, so the within-group chi-square tells apart
# loss powers as close as alpha = 0.75 and 1 (a deviation of the expected
# leaf probabilities by the other option is rejected at p << 1e-6).
LEAF_LAYOUT = {("a", "en"): 12, ("a", "fr"): 12}


def leaf_sampler(**kw):
    rows = make_rows(seed=5, layout=LEAF_LAYOUT)
    base = dict(
        batch_bins=120,
        category_field="lang",
        dataset_field="corpus",
        category_upsampling_factor=0.0,
        dataset_scaling_factor=1700.0,
        leaf="isbl",
        seed=13,
    )
    return rows, CategoryDatasetPowerSampler(make_dataset(rows), **{**base, **kw})


def leaf_weights(scores, alpha, eps, quarantined=None):
    """``L ** alpha + eps`` (``eps`` alone for a quarantined example)."""
    scores = np.asarray(scores, dtype=np.float64)
    powered = np.power(scores, alpha)
    if quarantined is not None:
        powered = np.where(quarantined, 0.0, powered)
    return powered + eps


def leaf_counts(sampler, epoch=1):
    """Draws of every utterance over one epoch without feedback."""
    sampler.set_epoch(epoch)
    counts = np.zeros(len(sampler.table), dtype=np.int64)
    for batch in sampler:
        np.add.at(counts, batch, 1)
    assert counts.sum() == sampler.num_draws > 40_000
    return counts


def leaf_pvalue(observed, weights, min_expected=5.0):
    """Chi-square p-value of draws against weights, pooling sparse cells."""
    observed = np.asarray(observed, dtype=np.float64)
    expected = np.asarray(weights, dtype=np.float64)
    expected = expected / expected.sum() * observed.sum()
    small = expected < min_expected
    obs = np.append(observed[~small], observed[small].sum())
    exp = np.append(expected[~small], expected[small].sum())
    if exp[-1] == 0:
        obs, exp = obs[:-1], exp[:-1]
    assert obs.size >= 3
    return chisquare(obs, exp).pvalue


def check_leaf_draws(sampler, counts, right, wrong):
    """Per group: the draws fit ``right`` weights and reject ``wrong`` ones."""
    groups = sampler.group_of_index(np.arange(len(sampler.table)))
    for g in range(len(sampler.groups)):
        members = np.flatnonzero(groups == g)
        assert np.array_equal(sampler.loss_table.members(g), members)
        np.testing.assert_allclose(
            sampler.loss_table.probabilities(g),
            right[members] / right[members].sum(),
            rtol=1e-12,
            atol=0,
        )
        observed = counts[members]
        assert observed.sum() > 18_000
        assert leaf_pvalue(observed, right[members]) > 1e-3, sampler.groups[g]
        assert leaf_pvalue(observed, wrong[members]) < 1e-6, sampler.groups[g]


@pytest.mark.parametrize("alpha,other", [(0.75, 1.0), (1.0, 0.75), (0.5, 0.75)])
def test_isbl_leaf_draws_with_the_configured_alpha(alpha, other):
    rows, sampler = leaf_sampler(alpha=alpha, eps=1e-6)
    assert sampler.loss_table.alpha == alpha
    losses = np.random.default_rng(3).permutation(np.linspace(0.25, 8.0, len(rows)))
    sampler.observe([r[0] for r in rows], losses)
    np.testing.assert_array_equal(sampler.loss_table.scores, losses)
    counts = leaf_counts(sampler)
    check_leaf_draws(
        sampler,
        counts,
        right=leaf_weights(losses, alpha, 1e-6),
        wrong=leaf_weights(losses, other, 1e-6),
    )


@pytest.mark.parametrize("eps,other", [(0.5, 1e-6), (1e-6, 0.5)])
def test_isbl_leaf_draws_with_the_configured_eps(eps, other):
    rows, sampler = leaf_sampler(alpha=1.0, eps=eps)
    assert sampler.loss_table.eps == eps
    losses = np.random.default_rng(4).permutation(np.linspace(0.5, 6.0, len(rows)))
    losses[[1, 7, 14]] = 0.0  # learned perfectly: weight eps
    losses[[4, 19]] = np.nan  # broken audio: quarantined, weight eps
    sampler.observe([r[0] for r in rows], losses)
    quarantined = np.isnan(losses)
    assert np.array_equal(sampler.loss_table.quarantined, quarantined)
    assert sampler.stats()["n_quarantined"] == 2
    scores = np.where(quarantined, 0.0, losses)
    np.testing.assert_array_equal(sampler.loss_table.scores, scores)
    counts = leaf_counts(sampler)
    floor = quarantined | (scores == 0)
    if eps >= 0.1:
        # weight 0.5 against ~45 per group: about 1 % of the draws each
        assert np.all(counts[floor] > 100)
    else:
        assert counts[floor].sum() == 0
    check_leaf_draws(
        sampler,
        counts,
        right=leaf_weights(scores, 1.0, eps, quarantined),
        wrong=leaf_weights(scores, 1.0, other, quarantined),
    )


@pytest.mark.parametrize(
    "transform,other", [("db_to_power", "identity"), ("identity", "db_to_power")]
)
def test_isbl_leaf_draws_with_the_configured_transform(transform, other):
    rows, sampler = leaf_sampler(alpha=0.75, transform=transform)
    assert sampler.loss_table.transform == transform
    losses = np.random.default_rng(6).permutation(np.linspace(0.0, 12.0, len(rows)))
    sampler.observe([r[0] for r in rows], losses)

    def hardness(name):
        return 10.0 ** (losses / 10.0) if name == "db_to_power" else losses

    np.testing.assert_allclose(
        sampler.loss_table.scores, hardness(transform), rtol=1e-14
    )
    counts = leaf_counts(sampler)
    check_leaf_draws(
        sampler,
        counts,
        right=leaf_weights(hardness(transform), 0.75, 1e-6),
        wrong=leaf_weights(hardness(other), 0.75, 1e-6),
    )


def test_isbl_leaf_scores_blend_with_the_configured_momentum():
    m = 0.6
    rows, sampler = leaf_sampler(alpha=1.0, momentum=m)
    assert sampler.loss_table.momentum == m
    ids = [r[0] for r in rows]
    rising = np.random.default_rng(8).permutation(np.linspace(0.5, 8.0, len(rows)))
    falling = 8.5 - rising  # the opposite order of hardness
    sampler.observe(ids, rising)
    # How a first observation meets the initial score is the table's own
    # rule; from the second observation on, every one is blended in.
    first = np.array(sampler.loss_table.scores)
    assert np.all(np.isfinite(first)) and not np.array_equal(first, np.ones(len(rows)))
    sampler.observe(ids, rising)
    second = m * first + (1 - m) * rising
    np.testing.assert_allclose(sampler.loss_table.scores, second, rtol=1e-12)
    sampler.observe(ids, falling)
    third = m * second + (1 - m) * falling
    np.testing.assert_allclose(sampler.loss_table.scores, third, rtol=1e-12)
    # Repeats within one call are blended in order too.
    sampler.observe([ids[0], ids[0]], [2.0, 5.0])
    third[0] = m * (m * third[0] + (1 - m) * 2.0) + (1 - m) * 5.0
    np.testing.assert_allclose(sampler.loss_table.scores, third, rtol=1e-12)
    counts = leaf_counts(sampler)
    check_leaf_draws(
        sampler,
        counts,
        right=leaf_weights(third, 1.0, 1e-6),
        wrong=leaf_weights(np.r_[5.0, falling[1:]], 1.0, 1e-6),  # latest loss only
    )
    # Another momentum leaves other scores behind: ~0.9 keeps more of the past.
    other = 0.9 * (0.9 * first + 0.1 * rising) + 0.1 * falling
    assert np.max(np.abs(other - third)[1:]) > 0.5


def loss_of(uid, epoch):
    """A fixed, id-dependent training loss (identical in every run)."""
    return 0.5 + (int(uid[3:]) * 7 + epoch * 3) % 11


@pytest.mark.parametrize("leaf", ["uniform", "isbl"])
def test_mid_epoch_resume_through_speechbrain_loader_repeats_the_run(tmp_path, leaf):
    rows = make_rows()
    epoch, stop_after = 2, 7

    def setup(ckpt_dir):
        sampler = isbl_sampler(rows, leaf=leaf, dataset_scaling_factor=2.0)
        dataset = make_dataset(rows)
        dataset.set_output_keys(["id"])
        loader = make_dataloader(dataset, batch_sampler=sampler)
        checkpointer = Checkpointer(ckpt_dir, {"sampler": sampler, "loader": loader})
        return sampler, loader, checkpointer

    def train(sampler, loader, checkpointer, stop=None):
        seen = []
        sampler.set_epoch(epoch)
        for n, batch in enumerate(loader, 1):
            seen.append(list(batch.id))
            sampler.observe(batch.id, [loss_of(u, epoch) for u in batch.id])
            if n == stop:
                checkpointer.save_checkpoint(end_of_epoch=False)
                break
        return seen

    ref_sampler, ref_loader, ref_ckpt = setup(tmp_path / "ref")
    reference = train(ref_sampler, ref_loader, ref_ckpt)
    sampler, loader, checkpointer = setup(tmp_path / "run")
    first = train(sampler, loader, checkpointer, stop=stop_after)
    assert first == reference[:stop_after]
    resumed_sampler, resumed_loader, resumed_ckpt = setup(tmp_path / "run")
    resumed_ckpt.recover_if_possible()
    rest = train(resumed_sampler, resumed_loader, resumed_ckpt)
    assert len(rest) > 5
    assert rest == reference[stop_after:]
    if leaf == "isbl":
        # the restored table carried the losses seen before the interruption
        assert np.array_equal(
            resumed_sampler.loss_table.scores, ref_sampler.loss_table.scores
        )
        assert (
            resumed_sampler.loss_table.n_observations
            == ref_sampler.loss_table.n_observations
        )


def test_checkpoint_from_another_training_set_is_refused(tmp_path):
    rows = make_rows()
    sampler = isbl_sampler(rows)
    sampler.observe([rows[0][0]], [2.0])
    path = tmp_path / "sampler.ckpt"
    sampler._save(path)
    other = isbl_sampler(rows[:-1])
    with pytest.raises(ValueError, match="different training set"):
        other._load(path, end_of_epoch=True)
    uniform = isbl_sampler(rows, leaf="uniform")
    with pytest.raises(ValueError, match="leaf='isbl'"):
        uniform._load(path, end_of_epoch=True)
    same = isbl_sampler(rows)
    same._load(path, end_of_epoch=True)
    assert np.array_equal(same.loss_table.scores, sampler.loss_table.scores)


# ------------------------------------------------------------------------ YAML
def test_yaml_fragment_builds_a_factory(tmp_path):
    rows = make_rows()
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "catpow_beta_l: 0.3\n"
        "catpow_batch_bins: 15\n"
        f"mining_sampler: !include:{HPARAMS}\n"
        "    batch_bins: !ref <catpow_batch_bins>\n"
        "    category_field: lang\n"
        "    dataset_field: corpus\n"
        "    category_upsampling_factor: !ref <catpow_beta_l>\n"
    )
    with open(recipe) as f:
        hparams = load_hyperpyyaml(f, overrides={"catpow_beta_l": 0.0})
    sampler = hparams["mining_sampler"](make_dataset(rows))
    assert isinstance(sampler, CategoryDatasetPowerSampler)
    assert sampler.batch_bins == 15 and sampler.category_upsampling_factor == 0.0
    assert sampler.dataset_scaling_factor == 1.2 and sampler.leaf == "uniform"
    assert sampler.handles_distributed is True
    incomplete = tmp_path / "incomplete.yaml"
    incomplete.write_text(
        f"mining_sampler: !include:{HPARAMS}\n    category_field: lang\n"
    )
    with open(incomplete) as f, pytest.raises(Exception, match="batch_bins"):
        load_hyperpyyaml(f)


# ------------------------------------------------------------ with the brain
class _Regressor(HardMiningBrain):
    def compute_forward(self, batch, stage):
        return self.modules.model(batch.x.data)

    def compute_objectives(self, predictions, batch, stage):
        return ((predictions - batch.y.data) ** 2).mean(dim=1)


def test_brain_trains_with_the_isbl_leaf_from_yaml(tmp_path):
    rows = make_rows()
    data = {}
    for n, (uid, dur, lang, corpus) in enumerate(rows):
        x = [dur, float(n % 7), 1.0]
        data[uid] = {
            "x_raw": x,
            "y_raw": [x[0] - x[1]],
            "duration": dur,
            "lang": lang,
            "corpus": corpus,
        }
    dataset = DynamicItemDataset(data)

    @sb.utils.data_pipeline.takes("x_raw", "y_raw")
    @sb.utils.data_pipeline.provides("x", "y")
    def tensors(x, y):
        yield torch.tensor(x, dtype=torch.float32)
        yield torch.tensor(y, dtype=torch.float32)

    dataset.add_dynamic_item(tensors)
    dataset.set_output_keys(["id", "x", "y"])
    hparams = load_hyperpyyaml(
        f"""
output_folder: {tmp_path}
mining_sampler: !include:{HPARAMS}
    batch_bins: 12
    category_field: lang
    dataset_field: corpus
    category_upsampling_factor: 0.5
    leaf: isbl
    alpha: 1.0
checkpointer: !new:speechbrain.utils.checkpoints.Checkpointer
    checkpoints_dir: !ref <output_folder>/save
"""
    )
    torch.manual_seed(0)
    brain = _Regressor(
        modules={"model": torch.nn.Linear(3, 1)},
        opt_class=lambda p: torch.optim.SGD(p, lr=0.01),
        hparams=hparams,
        run_opts={"device": "cpu"},
        checkpointer=hparams["checkpointer"],
    )
    brain.fit(range(1, 4), dataset, train_loader_kwargs={"batch_size": 1})
    sampler = brain.live_sampler
    assert isinstance(sampler, CategoryDatasetPowerSampler) and sampler.leaf == "isbl"
    assert sampler.epoch == 3  # the brain moved the epochs along
    assert sampler.loss_table.n_observations == int(sampler.draw_counts.sum()) > 3 * 80
    assert not np.all(sampler.loss_table.scores == 1.0)


# ------------------------------------------------------- real 2-process group
def _ddp_worker(out_dir):
    """Run under torch.distributed.run: each rank records its shards and table."""
    torch.distributed.init_process_group("gloo")
    rank = torch.distributed.get_rank()
    rows = make_rows()
    kwargs = dict(min_batch_size=2, dataset_scaling_factor=3.0, batch_bins=10)
    live = isbl_sampler(rows, **kwargs)
    live.set_epoch(1)
    shards = []
    for batch in live:
        shards.append(batch)
        ids = [rows[i][0] for i in batch]
        live.observe(ids, [loss_of(u, 1) for u in ids])
    uniform = isbl_sampler(rows, leaf="uniform", **kwargs)
    uniform.set_epoch(1)
    uniform_shards = list(uniform)
    record = {
        "live": shards,
        "uniform": uniform_shards,
        "scores": live.loss_table.scores.tolist(),
        "n_observations": live.loss_table.n_observations,
    }
    (pathlib.Path(out_dir) / f"rank{rank}.json").write_text(json.dumps(record))
    torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_two_process_gloo_group_shards_and_shares_the_table(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(HPARAMS.parents[1]))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    cmd += ["--master_addr", "127.0.0.1", "--master_port", str(port)]
    cmd += [__file__, str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]

    # one process replaying the whole global batches with the same feedback
    rows = make_rows()
    kwargs = dict(min_batch_size=2, dataset_scaling_factor=3.0, batch_bins=10)
    single = isbl_sampler(rows, world_size=1, **kwargs)
    single.set_epoch(1)
    expected = []
    for batch in single:
        expected.append(batch)
        ids = [rows[i][0] for i in batch]
        single.observe(ids, [loss_of(u, 1) for u in ids])
    uniform = isbl_sampler(rows, leaf="uniform", world_size=1, **kwargs)
    uniform.set_epoch(1)
    for key, full in (("live", expected), ("uniform", list(uniform))):
        a, b = ranks[0][key], ranks[1][key]
        assert len(a) == len(b) >= len(full) - 1 > 10
        for n, (part0, part1) in enumerate(zip(a, b, strict=True)):
            merged = [None] * (len(part0) + len(part1))
            merged[0::2], merged[1::2] = part0, part1
            assert merged == full[n], (key, n)
    assert ranks[0]["scores"] == ranks[1]["scores"] != [1.0] * len(rows)
    assert ranks[0]["n_observations"] == ranks[1]["n_observations"] > 0


if __name__ == "__main__":
    _ddp_worker(sys.argv[1])
