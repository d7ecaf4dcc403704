"""Speech Commands preparation and the synthetic corpus in the official layout."""

import csv
import doctest
import importlib.util
import os
import pathlib

import numpy as np
import pytest
import soundfile as sf

from hardmine.synthetic.gsc import (
    DEFAULT_WORDS,
    default_gsc,
    generate_gsc,
    word_spec,
)
from hardmine.validation import ConfigError

RECIPE = (
    pathlib.Path(__file__).resolve().parents[2] / "recipes/GoogleSpeechCommands/kws"
)


def _load_prepare():
    spec = importlib.util.spec_from_file_location(
        "prepare_gsc", RECIPE / "prepare_gsc.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


prep = _load_prepare()

WORDS = ("yes", "no", "up", "cat", "dog")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("gsc") / "speech_commands"
    generate_gsc(
        str(root),
        words=WORDS,
        n_speakers=5,
        repetitions=2,
        valid_speakers=1,
        test_speakers=1,
        background_seconds=12.0,
        seed=3,
    )
    return root


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def _list(path):
    return [line.strip() for line in open(path) if line.strip()]


def test_layout_matches_official_release(corpus):
    assert sorted(os.listdir(corpus)) == sorted(
        [*WORDS, "_background_noise_", "validation_list.txt", "testing_list.txt"]
    )
    for word in WORDS:
        names = os.listdir(corpus / word)
        assert len(names) == 5 * 2
        for name in names:
            speaker, tag, rep = name[: -len(".wav")].split("_")
            assert tag == "nohash" and len(speaker) == 8 and rep in {"0", "1"}
            int(speaker, 16)
            info = sf.info(str(corpus / word / name))
            assert info.samplerate == 16000 and info.frames <= 16000
            assert info.subtype == "PCM_16"
    # Validation and test speakers are disjoint from each other and from training.
    speakers = {
        name: {line.split("/")[1].split("_")[0] for line in _list(corpus / name)}
        for name in ("validation_list.txt", "testing_list.txt")
    }
    assert len(speakers["validation_list.txt"]) == 1
    assert len(speakers["testing_list.txt"]) == 1
    assert not speakers["validation_list.txt"] & speakers["testing_list.txt"]
    assert len(_list(corpus / "validation_list.txt")) == len(WORDS) * 2


def test_official_lists_decide_the_split(corpus, tmp_path):
    csvs = prep.prepare_gsc(str(corpus), str(tmp_path))
    ids = {split: {r["ID"] for r in _rows(csvs[split])} for split in csvs}
    valid_list, test_list = (
        _list(corpus / "validation_list.txt"),
        _list(corpus / "testing_list.txt"),
    )
    for rel in valid_list:
        word, name = rel.split("/")
        uid = f"{word}_{name[:-4]}"
        assert uid in ids["valid"] and uid not in ids["train"] | ids["test"]
    for rel in test_list:
        word, name = rel.split("/")
        assert f"{word}_{name[:-4]}" in ids["test"]
    n_words = sum(len(os.listdir(corpus / w)) for w in WORDS)
    word_ids = {i for s in ids.values() for i in s if not i.startswith("silence_")}
    assert len(word_ids) == n_words  # every file exactly once
    assert len([i for i in ids["train"] if not i.startswith("silence_")]) == (
        n_words - len(valid_list) - len(test_list)
    )


def test_custom_list_moves_a_file_into_its_split(corpus, tmp_path):
    train_file = next(
        f"yes/{n}"
        for n in sorted(os.listdir(corpus / "yes"))
        if f"yes/{n}"
        not in _list(corpus / "validation_list.txt")
        + _list(corpus / "testing_list.txt")
    )
    vlist = tmp_path / "my_valid.txt"
    vlist.write_text(train_file + "\n")
    csvs = prep.prepare_gsc(
        str(corpus), str(tmp_path / "out"), validation_list=str(vlist)
    )
    uid = "yes_" + train_file.split("/")[1][:-4]
    valid = [r for r in _rows(csvs["valid"]) if not r["ID"].startswith("silence_")]
    assert [r["ID"] for r in valid] == [uid]
    assert uid not in {r["ID"] for r in _rows(csvs["train"])}
    # The file the default list put in validation is now a training file.
    default_valid = _list(corpus / "validation_list.txt")[0]
    moved = "_".join([default_valid.split("/")[0], default_valid.split("/")[1][:-4]])
    assert moved in {r["ID"] for r in _rows(csvs["train"])}


def test_task12_labels_pools_and_silence(corpus, tmp_path):
    csvs = prep.prepare_gsc(
        str(corpus), str(tmp_path), task="12", silence_per_split=0.2
    )
    for split, path in csvs.items():
        rows = _rows(path)
        assert list(rows[0]) == prep.HEADER
        words = [r for r in rows if r["command"] != "_silence_"]
        silence = [r for r in rows if r["command"] == "_silence_"]
        assert len(silence) == round(0.2 * len(words))
        for r in words:
            word = r["ID"].split("_")[0]
            expected = word if word in prep.KEYWORDS else "_unknown_"
            assert r["command"] == expected
            assert r["pool"] == ("targets" if word in prep.KEYWORDS else "negatives")
            assert r["wav"] == f"$data_root/{word}/{r['ID'][len(word) + 1 :]}.wav"
            assert int(r["start"]) == 0
            assert (
                int(r["stop"])
                == sf.info(str(corpus / r["wav"][len("$data_root/") :])).frames
            )
        low, high = prep.NOISE_REGIONS[split]
        for r in silence:
            assert r["pool"] == "negatives"
            frames = sf.info(str(corpus / r["wav"][len("$data_root/") :])).frames
            start, stop = int(r["start"]), int(r["stop"])
            assert stop - start == 16000 and float(r["duration"]) == 1.0
            # Crops stay inside the split's region of the noise file: no leakage.
            assert low * frames - 1 <= start and stop <= high * frames + 1
    assert {r["command"] for r in _rows(csvs["train"])} == {
        "yes",
        "no",
        "up",
        "_unknown_",
        "_silence_",
    }


def test_task35_every_word_is_a_class(corpus, tmp_path):
    csvs = prep.prepare_gsc(str(corpus), str(tmp_path), task="35")
    rows = _rows(csvs["train"])
    assert {r["command"] for r in rows} == set(WORDS)
    assert {r["pool"] for r in rows if r["command"] == "cat"} == {"negatives"}
    assert {r["pool"] for r in rows if r["command"] == "yes"} == {"targets"}


def test_prepare_is_skipped_when_done_and_redone_when_options_change(corpus, tmp_path):
    csvs = prep.prepare_gsc(str(corpus), str(tmp_path))
    stamp = os.path.getmtime(csvs["train"])
    os.utime(csvs["train"], (stamp - 100, stamp - 100))
    prep.prepare_gsc(str(corpus), str(tmp_path))
    assert os.path.getmtime(csvs["train"]) == stamp - 100
    prep.prepare_gsc(str(corpus), str(tmp_path), task="35")
    assert os.path.getmtime(csvs["train"]) != stamp - 100
    assert "_silence_" not in {r["command"] for r in _rows(csvs["train"])}


def test_errors_name_the_path(corpus, tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        prep.prepare_gsc(str(tmp_path / "nowhere"), str(tmp_path / "o1"))
    with pytest.raises(FileNotFoundError, match="absent_list.txt"):
        prep.prepare_gsc(
            str(corpus),
            str(tmp_path / "o2"),
            testing_list=str(tmp_path / "absent_list.txt"),
        )
    # A listed file that is missing is a report entry, not an error.
    bad = tmp_path / "bad_list.txt"
    bad.write_text("yes/deadbeef_nohash_9.wav\n")
    prep.prepare_gsc(str(corpus), str(tmp_path / "o3"), validation_list=str(bad))
    [entry] = _rows(tmp_path / "o3" / "prep_report.csv")
    assert entry["path"].endswith("deadbeef_nohash_9.wav")
    assert "bad_list.txt, line 1" in entry["reason"]
    overlap = tmp_path / "overlap.txt"
    overlap.write_text(_list(corpus / "testing_list.txt")[0] + "\n")
    with pytest.raises(ValueError, match="in both"):
        prep.prepare_gsc(
            str(corpus), str(tmp_path / "o4"), validation_list=str(overlap)
        )
    with pytest.raises(ConfigError, match="task"):
        prep.prepare_gsc(str(corpus), str(tmp_path / "o5"), task="20")
    empty = tmp_path / "no_keywords"
    (empty / "cat").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no keyword folders"):
        prep.prepare_gsc(str(empty), str(tmp_path / "o6"))
    with pytest.raises(FileNotFoundError, match="_background_noise_"):
        nonoise = tmp_path / "nonoise"
        (nonoise / "yes").mkdir(parents=True)
        (nonoise / "validation_list.txt").write_text("")
        (nonoise / "testing_list.txt").write_text("")
        sf.write(str(nonoise / "yes" / "0000abcd_nohash_0.wav"), np.zeros(16000), 16000)
        prep.prepare_gsc(str(nonoise), str(tmp_path / "o7"))


def test_module_doctest():
    result = doctest.testmod(prep)
    assert result.attempted > 0 and result.failed == 0


def test_word_specs_are_distinct_and_stable():
    specs = [word_spec(w) for w in DEFAULT_WORDS]
    assert specs[0] == word_spec(DEFAULT_WORDS[0])
    signatures = {tuple((k, p) for k, p, _ in s["segments"]) for s in specs}
    assert len(signatures) == len(DEFAULT_WORDS)


def _spectral_profile(path):
    wav, sr = sf.read(path)
    frames = np.lib.stride_tricks.sliding_window_view(wav, 512)[::256] * np.hanning(512)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    loud = power.sum(axis=1) > 0.2 * power.sum(axis=1).max()
    return np.log(power[loud].mean(axis=0) + 1e-8)


def test_words_are_recognisable_across_speakers(tmp_path):
    """Nearest centroid on long-term spectra, trained on other speakers, beats chance.

    The noise is kept low here: the check is about word identity, and this
    crude feature is not meant to be noise-robust.
    """
    root = tmp_path / "clean"
    generate_gsc(
        str(root),
        words=WORDS,
        n_speakers=8,
        repetitions=2,
        valid_speakers=2,
        test_speakers=2,
        background_seconds=2.0,
        snr_db=(20.0, 30.0),
        seed=11,
    )
    held_out = set(_list(root / "validation_list.txt")) | set(
        _list(root / "testing_list.txt")
    )
    feats = {"train": [], "held": []}
    for index, word in enumerate(WORDS):
        for name in sorted(os.listdir(root / word)):
            part = "held" if f"{word}/{name}" in held_out else "train"
            feats[part].append((index, _spectral_profile(str(root / word / name))))
    centroids = np.stack(
        [
            np.mean([f for i, f in feats["train"] if i == k], axis=0)
            for k in range(len(WORDS))
        ]
    )
    guesses = [
        np.argmin(((centroids - f) ** 2).sum(axis=1)) == i for i, f in feats["held"]
    ]
    assert len(guesses) == 4 * 2 * len(WORDS)
    # Chance is 1/5: P(>= 50 % of 40 right by chance) < 1e-4.
    assert np.mean(guesses) >= 0.5


def test_generate_rejects_bad_sizes(tmp_path):
    with pytest.raises(ConfigError, match="n_speakers"):
        generate_gsc(
            str(tmp_path / "x"), n_speakers=2, valid_speakers=1, test_speakers=1
        )
    with pytest.raises(ConfigError, match="words"):
        generate_gsc(str(tmp_path / "x"), words=("yes", "yes"))


def test_default_cache_env_and_mismatch(tmp_path, monkeypatch):
    monkeypatch.setenv("HARDMINE_CACHE", str(tmp_path))
    kw = dict(
        words=("yes", "no"),
        n_speakers=3,
        repetitions=1,
        valid_speakers=1,
        test_speakers=1,
        background_seconds=2.0,
    )
    root = default_gsc(**kw)
    assert root == str(tmp_path / "gsc-default")
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".gsc-default-")]
    with pytest.raises(ConfigError, match="gsc-default"):
        default_gsc(**{**kw, "repetitions": 2})
