"""Reference (holdout) losses: the table's excess scores, the CSV, the folds, the recipe."""

import csv
import importlib.util
import pathlib
import sys

import numpy as np
import pytest
from conftest import KWS_TINY_MODEL
from hyperpyyaml import load_hyperpyyaml

from hardmine.isbl import ISBLSampler, read_reference
from hardmine.loss_table import LossPowerTable
from hardmine.tasks import kws_reference
from hardmine.tasks.kws import dataio_prep
from hardmine.validation import ConfigError

RECIPE = (
    pathlib.Path(__file__).resolve().parents[2] / "recipes/GoogleSpeechCommands/kws"
)
TINY_CLASSES = 5  # yes, no, up + _unknown_ (cat) + _silence_


def _hparams(tmp_path, corpus, overrides=None):
    overrides = {
        "data_folder": corpus,
        "output_folder": str(tmp_path / "out"),
        "n_classes": TINY_CLASSES,
        "tdnn_channels": 8,
        "emb_dim": 8,
        "n_mels": 20,
        "augment": False,
        **(overrides or {}),
    }
    with open(RECIPE / "hparams" / "kws_isbl.yaml") as f:
        hparams = load_hyperpyyaml(f, overrides)
    sys.path.insert(0, str(RECIPE))
    try:
        from prepare_gsc import prepare_gsc
    finally:
        sys.path.remove(str(RECIPE))
    prepare_gsc(corpus, hparams["save_folder"])
    return hparams


# ------------------------------------------------------------------- table
def test_excess_scores_per_transform():
    table = LossPowerTable(np.zeros(3, dtype=int), alpha=1.0)
    table.set_reference([1.0, 1.0, 1.0])
    table.observe_indices(np.arange(3), np.array([3.0, 0.5, np.nan]))
    assert table.scores.tolist() == [2.0, 0.0, 0.0]
    assert table.quarantined.tolist() == [False, False, True]
    # In decibels the excess is a ratio: 10^((l - r)/10).
    db = LossPowerTable(np.zeros(2, dtype=int), transform="db_to_power")
    db.set_reference([-10.0, -10.0])
    db.observe_indices(np.arange(2), np.array([-10.0, 0.0]))
    np.testing.assert_allclose(db.scores, [1.0, 10.0])
    with pytest.raises(ValueError, match="one reference loss per example"):
        table.set_reference([1.0])
    with pytest.raises(ValueError, match="#1"):
        table.set_reference([1.0, np.inf, 0.0])


def test_draws_follow_the_excess_not_the_loss():
    from scipy.stats import chisquare

    table = LossPowerTable(np.zeros(4, dtype=int), alpha=1.0, eps=1e-6)
    reference = np.array([0.0, 2.0, 0.0, 3.0])
    losses = np.array([1.0, 3.0, 2.0, 3.5])  # excess 1, 1, 2, 0.5
    table.set_reference(reference)
    table.observe_indices(np.arange(4), losses)
    want = np.array([1.0, 1.0, 2.0, 0.5]) + 1e-6
    want /= want.sum()
    np.testing.assert_allclose(table.probabilities(0), want)
    draws = table.draw(np.zeros(20000, dtype=np.int64), np.random.default_rng(0))
    counts = np.bincount(draws, minlength=4)
    assert chisquare(counts, want * counts.sum()).pvalue > 1e-3
    # The losses alone would rank example 3 first: the test has power.
    plain = losses / losses.sum()
    assert chisquare(counts, plain * counts.sum()).pvalue < 1e-9


# --------------------------------------------------------------------- CSV
def _write(path, rows, header=("ID", "loss")):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return str(path)


@pytest.mark.parametrize(
    "rows, header, words",
    [
        ([("a", "1.0")], ("ID", "loss"), "no loss for example 'b'"),
        ([("a", "1.0"), ("b", "nan")], ("ID", "loss"), "example 'b' has loss 'nan'"),
        ([("a", "1.0"), ("b", "x")], ("ID", "loss"), "example 'b' has loss 'x'"),
        ([("a", "1.0"), ("b", "2")], ("ID", "value"), "needs the columns ID and loss"),
    ],
)
def test_bad_reference_files_name_the_field(tmp_path, rows, header, words):
    path = _write(tmp_path / "ref.csv", rows, header)
    with pytest.raises(ConfigError) as err:
        read_reference(path, ["a", "b"])
    assert err.value.field == "reference" and words in str(err.value)
    with pytest.raises(ConfigError, match="^reference: .* does not exist"):
        read_reference(str(tmp_path / "none.csv"), ["a"])


def test_sampler_reads_the_reference(tmp_path):
    from speechbrain.dataio.dataset import DynamicItemDataset

    data = {f"u{i}": {"lab": "x"} for i in range(4)}
    path = _write(tmp_path / "ref.csv", [(f"u{i}", str(i)) for i in range(4)])
    sampler = ISBLSampler(DynamicItemDataset(data), batch_size=2, reference=path)
    sampler.observe(["u0", "u3"], [2.0, 2.0])
    assert sampler.table.scores.tolist() == [2.0, 1.0, 1.0, 0.0]
    assert sampler.reference == path


# ------------------------------------------------------------------- folds
def test_folds_partition_the_ids_evenly_and_reproducibly():
    ids = [f"u{i}" for i in range(101)]
    fold = kws_reference.folds_of(ids, 3, seed=4)
    assert np.bincount(fold).tolist() == [34, 34, 33]
    assert fold.tolist() == kws_reference.folds_of(ids, 3, seed=4).tolist()
    assert fold.tolist() != kws_reference.folds_of(ids, 3, seed=5).tolist()
    with pytest.raises(ConfigError, match="^isbl_reference_folds: "):
        kws_reference.folds_of(ids, 1, seed=0)
    assert kws_reference.reference_file(0, "r.csv") is None
    with pytest.raises(ConfigError, match="^isbl_reference_epochs: "):
        kws_reference.reference_file(-1, "r.csv")


def test_every_clip_is_scored_by_a_model_that_never_trained_on_it(
    tmp_path, tiny_corpus, monkeypatch
):
    hparams = _hparams(tmp_path, tiny_corpus, {"batch_size": 4})
    datasets, _, _ = dataio_prep(hparams, tiny_corpus)
    train = datasets["train"]
    seen = []  # (shuffle, indices) per loader: training or scoring
    real_loader = kws_reference._loader

    def spy(dataset, indices, batch_size, shuffle, seed):
        seen.append((shuffle, set(int(i) for i in indices)))
        return real_loader(dataset, indices, batch_size, shuffle, seed)

    monkeypatch.setattr(kws_reference, "_loader", spy)
    path = str(tmp_path / "ref" / "reference_losses.csv")

    def write(epochs):
        return kws_reference.write_reference_losses(
            path,
            hparams["modules"],
            hparams["opt_class"],
            train,
            epochs,
            seed=3,
            batch_size=4,
        )

    losses = write(2)
    # Per fold: 2 training loaders on the same examples, then one scoring loader.
    assert [s for s, _ in seen] == [True, True, False, True, True, False]
    for k in range(2):
        trained, scored = seen[3 * k][1], seen[3 * k + 2][1]
        assert trained == seen[3 * k + 1][1]
        assert not trained & scored
        assert trained | scored == set(range(len(train)))
    rows = list(csv.DictReader(open(path)))
    assert [r["ID"] for r in rows] == list(train.data_ids)
    fold = kws_reference.folds_of(list(train.data_ids), 2, 3)
    assert [int(r["fold"]) for r in rows] == fold.tolist()
    assert all(np.isfinite(v) and v >= 0 for v in losses.values())
    # The sampler reads it back exactly (six decimals).
    back = read_reference(path, list(train.data_ids))
    np.testing.assert_allclose(back, [losses[i] for i in train.data_ids], atol=1e-6)

    # Same settings: kept, no training; other settings: rebuilt.
    seen.clear()
    write(2)
    assert seen == []
    write(1)
    assert len(seen) == 4


def _train_module():
    spec = importlib.util.spec_from_file_location("kws_train_ref", RECIPE / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_recipe_trains_with_reference_losses(tmp_path, tiny_corpus):
    out = tmp_path / "run"
    argv = [
        str(RECIPE / "hparams" / "kws_isbl.yaml"),
        "--data_folder",
        tiny_corpus,
        "--output_folder",
        str(out),
        "--number_of_epochs",
        "1",
        "--n_classes",
        str(TINY_CLASSES),
        "--augment",
        "False",
        "--isbl_reference_epochs",
        "1",
        *KWS_TINY_MODEL,
    ]
    _train_module().main(argv)
    rows = list(csv.DictReader(open(out / "save" / "reference_losses.csv")))
    train_ids = [r["ID"] for r in csv.DictReader(open(out / "save" / "train.csv"))]
    assert sorted(r["ID"] for r in rows) == sorted(train_ids)
    assert (out / "test_results.csv").exists()
    # Without the ISBL sampler the references would feed nothing: refused.
    with pytest.raises(ConfigError, match="^isbl_reference_epochs: "):
        plain = [str(RECIPE / "hparams" / "kws.yaml"), *argv[1:]]
        plain[plain.index("--output_folder") + 1] = str(tmp_path / "plain")
        _train_module().main(plain)
