"""A keyword-spotting benchmark set with a known difficulty structure.

Written in the Google Speech Commands layout (the same words, speakers and
file naming as :mod:`hardmine.synthetic.gsc`), so the recipe's preparation
runs unchanged, with three kinds of hard example listed per clip:

* **low SNR**: every clip gets a crop of one of the ``_background_noise_``
  recordings (the same noises the silence class is cut from) at an SNR drawn
  from ``low_snr_db`` for a ``low_snr_fraction`` of the clips (about 30 % at
  or below 0 dB by default) and from ``high_snr_db`` for the others;
* **rare keywords**: ``rare_words`` keep only ``rare_fraction`` of their
  training clips (validation and test keep every clip, so their accuracy can
  be measured);
* **mislabelled clips**: ``mislabel_fraction`` of the training clips are
  stored in the folder of another keyword (label noise, as in real crowd
  collections).

``benchmark_subgroups.csv`` in the corpus root lists every clip: its path
(as in the official lists), split, the word actually spoken, the folder it
is filed under, its SNR and its subgroup flags (``low_snr``, ``rare``,
``mislabelled``). Every value follows from the arguments and ``seed``.

Example
-------
>>> import csv, os, tempfile
>>> with tempfile.TemporaryDirectory() as tmp:
...     root = make_hard_gsc(os.path.join(tmp, "gsc"), words=("yes", "no", "up", "bed"),
...                          rare_words=("up",), n_speakers=6, repetitions=2,
...                          valid_speakers=1, test_speakers=1, background_seconds=2.0)
...     with open(os.path.join(root, SUBGROUPS_FILE)) as f:
...         rows = list(csv.DictReader(f))
>>> len(rows) == 4 * 6 * 2 - 6  # up: 4 training speakers x 2 clips, 2 of 8 kept
True
>>> sorted(rows[0])
['low_snr', 'mislabelled', 'path', 'rare', 'snr_db', 'split', 'spoken', 'word']
"""

import csv
import os

import numpy as np
import soundfile as sf

from hardmine.synthetic.gsc import (
    BACKGROUND_NAMES,
    CORE_KEYWORDS,
    _background,
    _distinct_specs,
    _speaker,
    _speaker_ids,
    synthesize_word,
)
from hardmine.validation import ConfigError, check_int, check_number

__all__ = ["make_hard_gsc", "HARD_WORDS", "RARE_WORDS", "SUBGROUPS_FILE"]

#: The ten keywords plus eight words of the "unknown" class.
HARD_WORDS = CORE_KEYWORDS + (
    "bed",
    "cat",
    "dog",
    "bird",
    "tree",
    "happy",
    "house",
    "wow",
)
#: Keywords with few training clips by default.
RARE_WORDS = ("down", "left", "off")
#: Sidecar file listing every clip's subgroups.
SUBGROUPS_FILE = "benchmark_subgroups.csv"
_FIELDS = [
    "path",
    "split",
    "spoken",
    "word",
    "snr_db",
    "low_snr",
    "rare",
    "mislabelled",
]


def _pair(field, value):
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(field, f"must be a (low, high) pair, got {value!r}") from None
    if low > high:
        raise ConfigError(field, f"low {low} is above high {high}")
    return low, high


def make_hard_gsc(
    root,
    words=HARD_WORDS,
    rare_words=RARE_WORDS,
    n_speakers=40,
    repetitions=3,
    valid_speakers=5,
    test_speakers=8,
    rare_fraction=0.2,
    low_snr_fraction=0.3,
    low_snr_db=(-8.0, 0.0),
    high_snr_db=(0.0, 20.0),
    mislabel_fraction=0.02,
    background_seconds=30.0,
    sample_rate=16000,
    seed=0,
):
    """Write the benchmark corpus in the official layout; return ``root``.

    Arguments
    ---------
    root : str
        Output folder (created).
    words : sequence of str
        Word folders; keywords of the 12-class task are those in
        ``CORE_KEYWORDS``, the others form its "unknown" class.
    rare_words : sequence of str
        Words that keep only ``rare_fraction`` of their training clips.
    n_speakers, repetitions, valid_speakers, test_speakers : int
        As in :func:`hardmine.synthetic.gsc.generate_gsc`.
    rare_fraction : float
        Share of a rare word's training clips that are kept, in (0, 1].
    low_snr_fraction : float
        Share of clips whose SNR comes from ``low_snr_db``.
    low_snr_db, high_snr_db : (float, float)
        SNR ranges (dB over the word's span) of the two subgroups.
    mislabel_fraction : float
        Share of training clips filed under another keyword's folder.
    background_seconds : float
        Length of each background recording.
    sample_rate : int
        Sampling rate.
    seed : int
        Seed of every random choice.
    """
    words = list(words)
    if not words or len(set(words)) != len(words):
        raise ConfigError("words", f"need distinct word names, got {words!r}")
    missing = sorted(set(rare_words) - set(words))
    if missing:
        raise ConfigError("rare_words", f"{missing} are not among the words")
    n_speakers = check_int("n_speakers", n_speakers, minimum=2)
    repetitions = check_int("repetitions", repetitions, minimum=1)
    valid_speakers = check_int("valid_speakers", valid_speakers, minimum=0)
    test_speakers = check_int("test_speakers", test_speakers, minimum=0)
    if valid_speakers + test_speakers >= n_speakers:
        raise ConfigError("n_speakers", f"{n_speakers} leave no training speaker")
    rare_fraction = check_number("rare_fraction", rare_fraction, 0.0, 1.0, strict=False)
    if rare_fraction <= 0.0:
        raise ConfigError("rare_fraction", f"must be > 0, got {rare_fraction}")
    low_fraction = check_number("low_snr_fraction", low_snr_fraction, 0.0, 1.0)
    mislabel_fraction = check_number("mislabel_fraction", mislabel_fraction, 0.0, 0.5)
    low_db, high_db = _pair("low_snr_db", low_snr_db), _pair("high_snr_db", high_snr_db)
    sr = check_int("sample_rate", sample_rate, minimum=8000)
    check_number("background_seconds", background_seconds, minimum=2.0)

    rng = np.random.default_rng([seed, 7])
    specs = _distinct_specs(words)
    speakers = _speaker_ids(rng, n_speakers)
    traits = {spk: _speaker(rng) for spk in speakers}
    order = rng.permutation(n_speakers)
    split_of = {speakers[i]: "train" for i in order}
    for i in order[:valid_speakers]:
        split_of[speakers[i]] = "valid"
    for i in order[valid_speakers : valid_speakers + test_speakers]:
        split_of[speakers[i]] = "test"
    noises = {
        name: _background(name, background_seconds, sr, rng)
        for name in BACKGROUND_NAMES
    }

    # Which training clips of a rare word survive: a fixed share, chosen at random.
    clips = [(w, s, r) for w in words for s in speakers for r in range(repetitions)]
    drop = set()
    for word in rare_words:
        train = [c for c in clips if c[0] == word and split_of[c[1]] == "train"]
        keep = max(1, int(round(rare_fraction * len(train))))
        for k in rng.permutation(len(train))[keep:]:
            drop.add(train[int(k)])
    clips = [c for c in clips if c not in drop]
    train_clips = [c for c in clips if split_of[c[1]] == "train"]
    n_wrong = int(round(mislabel_fraction * len(train_clips)))
    keywords = [w for w in words if w in CORE_KEYWORDS]
    wrong = {}
    for k in rng.permutation(len(train_clips))[:n_wrong]:
        clip = train_clips[int(k)]
        others = [w for w in keywords if w != clip[0]]
        wrong[clip] = others[int(rng.integers(len(others)))]

    os.makedirs(root, exist_ok=True)
    rows, lists = [], {"valid": [], "test": []}
    for word, spk, rep in clips:
        wav = synthesize_word(specs[word], traits[spk], rng, sr)[:sr]
        out = np.zeros(sr, dtype=np.float64)
        onset = int(rng.integers(0, sr - len(wav) + 1))
        speech = wav * rng.uniform(0.2, 0.6)
        out[onset : onset + len(wav)] = speech
        low = bool(rng.random() < low_fraction)
        snr = float(rng.uniform(*(low_db if low else high_db)))
        noise = noises[BACKGROUND_NAMES[int(rng.integers(len(BACKGROUND_NAMES)))]]
        start = int(rng.integers(0, len(noise) - sr))
        crop = noise[start : start + sr].astype(np.float64)
        gain = np.sqrt(
            np.mean(speech**2) / 10 ** (snr / 10) / max(np.mean(crop**2), 1e-12)
        )
        out += gain * crop
        peak = np.abs(out).max()
        if peak > 0.99:
            out *= 0.99 / peak
        folder = wrong.get((word, spk, rep), word)
        # A clip filed under another word gets a number that word's own clips
        # of this speaker never use.
        n = rep if folder == word else repetitions * (1 + words.index(word)) + rep
        rel = f"{folder}/{spk}_nohash_{n}.wav"
        os.makedirs(os.path.join(root, folder), exist_ok=True)
        sf.write(os.path.join(root, rel), out.astype(np.float32), sr, subtype="PCM_16")
        split = split_of[spk]
        if split in lists:
            lists[split].append(rel)
        rows.append(
            {
                "path": rel,
                "split": split,
                "spoken": word,
                "word": folder,
                "snr_db": f"{snr:.2f}",
                "low_snr": int(snr <= 0.0),
                "rare": int(word in rare_words),
                "mislabelled": int(folder != word),
            }
        )

    noise_dir = os.path.join(root, "_background_noise_")
    os.makedirs(noise_dir, exist_ok=True)
    for name, noise in noises.items():
        sf.write(os.path.join(noise_dir, f"{name}.wav"), noise, sr, subtype="PCM_16")
    with open(os.path.join(noise_dir, "README.md"), "w") as f:
        f.write("Long background-noise recordings; 1 s crops form the silence class.\n")
    for name, split in (("validation_list.txt", "valid"), ("testing_list.txt", "test")):
        with open(os.path.join(root, name), "w") as f:
            f.write("".join(line + "\n" for line in sorted(lists[split])))
    with open(os.path.join(root, SUBGROUPS_FILE), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=_FIELDS)
        writer.writeheader()
        writer.writerows(sorted(rows, key=lambda r: r["path"]))
    return root


#: Arguments of the cached benchmark set (``hard_gsc_default``).
DEFAULT_ARGS = {
    "n_speakers": 50,
    "repetitions": 4,
    "valid_speakers": 6,
    "test_speakers": 12,
    "low_snr_db": [-20.0, -6.0],
    "high_snr_db": [0.0, 12.0],
    "seed": 0,
}


def hard_gsc_default(cache_dir=None):
    """The KWS benchmark set with :data:`DEFAULT_ARGS`, generated once and cached.

    About 3,600 clips (50 speakers x 18 words x 4, less the dropped rare-word
    clips): 32 training, 6 validation and 12 test speakers. It lives in
    ``<cache>/gsc-hard-v1`` (``cache_dir``, else ``$HARDMINE_CACHE``, else
    ``~/.cache/hardmine``).
    """
    from hardmine.synthetic.cache import cached_dataset

    return cached_dataset(
        "gsc-hard-v1",
        lambda root: make_hard_gsc(root, **DEFAULT_ARGS),
        {"generator": "hard_gsc", "version": 1, **DEFAULT_ARGS},
        cache_dir=cache_dir,
    )
