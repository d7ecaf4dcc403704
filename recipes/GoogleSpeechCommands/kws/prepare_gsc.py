"""Data preparation for Google Speech Commands (v0.01 / v0.02 layout).

Reads the official release layout::

    <data_folder>/<word>/<speaker>_nohash_<n>.wav
    <data_folder>/_background_noise_/*.wav
    <data_folder>/validation_list.txt   (lines like "yes/0a1b2c3d_nohash_0.wav")
    <data_folder>/testing_list.txt

and writes ``train.csv``, ``valid.csv`` and ``test.csv`` with the columns
ID, duration, wav, start, stop, command, pool. A file named in neither list is
a training file. ``wav`` paths are written as ``$data_root/<word>/<file>`` and
resolved when the CSV is loaded.

Tasks
-----
"12"
    The ten command words, ``_unknown_`` for every other word and
    ``_silence_``: 1 s crops of the background-noise files (start/stop are
    sample offsets). Each noise file is cut into disjoint train (first 80 %),
    valid (next 10 %) and test (last 10 %) regions, so silence crops never
    leak between splits.
"35"
    Every word folder is its own class (35 words in v0.02, 30 in v0.01); no
    silence class.

The ``pool`` column is ``targets`` for the ten command words and
``negatives`` for everything else (other words, ``_unknown_``, ``_silence_``).

Example
-------
>>> import tempfile, os
>>> from hardmine.synthetic.gsc import generate_gsc
>>> with tempfile.TemporaryDirectory() as tmp:
...     root = generate_gsc(os.path.join(tmp, "gsc"), words=("yes", "no", "cat"),
...                         n_speakers=4, repetitions=1, valid_speakers=1,
...                         test_speakers=1, background_seconds=12.0)
...     csvs = prepare_gsc(root, os.path.join(tmp, "save"))
...     sorted(csvs), open(csvs["train"]).readline().strip()
(['test', 'train', 'valid'], 'ID,duration,wav,start,stop,command,pool')
"""

import csv
import json
import logging
import os

import numpy as np
import soundfile as sf

from hardmine.validation import check_choice, check_int, check_number

logger = logging.getLogger(__name__)

KEYWORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
UNKNOWN = "_unknown_"
SILENCE = "_silence_"
NOISE_FOLDER = "_background_noise_"
SPLITS = ("train", "valid", "test")
# Fraction of every background-noise file reserved for each split's silence.
NOISE_REGIONS = {"train": (0.0, 0.8), "valid": (0.8, 0.9), "test": (0.9, 1.0)}
HEADER = ["ID", "duration", "wav", "start", "stop", "command", "pool"]


def prepare_gsc(
    data_folder,
    save_folder,
    task="12",
    validation_list=None,
    testing_list=None,
    silence_per_split=0.1,
    silence_seconds=1.0,
    seed=1234,
    skip_prep=False,
):
    """Write train/valid/test CSV files for a speech-commands task.

    Arguments
    ---------
    data_folder : str
        Root of the extracted corpus (one folder per word).
    save_folder : str
        Where the CSV files go.
    task : str
        "12" (10 keywords + unknown + silence) or "35" (every word).
    validation_list, testing_list : str, optional
        Official split lists; default ``<data_folder>/validation_list.txt``
        and ``<data_folder>/testing_list.txt``.
    silence_per_split : float
        Task "12": number of ``_silence_`` crops in each split as a fraction of
        that split's word examples (0 disables the class).
    silence_seconds : float
        Length of each silence crop.
    seed : int
        Seed of the silence crop positions.
    skip_prep : bool
        Return the CSV paths without touching anything.

    Returns
    -------
    dict
        ``{"train": path, "valid": path, "test": path}``.
    """
    task = check_choice("task", str(task), ("12", "35"))
    check_number("silence_per_split", silence_per_split, minimum=0.0)
    check_number("silence_seconds", silence_seconds, minimum=0.0, strict=True)
    seed = check_int("seed", seed)
    csvs = {split: os.path.join(save_folder, f"{split}.csv") for split in SPLITS}
    if skip_prep:
        return csvs

    if not os.path.isdir(data_folder):
        raise FileNotFoundError(f"data_folder {data_folder!r} does not exist")
    data_folder = os.path.abspath(data_folder)
    validation_list = validation_list or os.path.join(
        data_folder, "validation_list.txt"
    )
    testing_list = testing_list or os.path.join(data_folder, "testing_list.txt")

    options = {
        "data_folder": data_folder,
        "task": task,
        "validation_list": os.path.abspath(validation_list),
        "testing_list": os.path.abspath(testing_list),
        "silence_per_split": silence_per_split,
        "silence_seconds": silence_seconds,
        "seed": seed,
    }
    opts_file = os.path.join(save_folder, "prepare_gsc.json")
    if _already_done(csvs, opts_file, options):
        logger.info("GSC CSV files already prepared in %s, skipping", save_folder)
        return csvs

    words = _word_folders(data_folder)
    if task == "12" and not set(words) & set(KEYWORDS):
        raise FileNotFoundError(
            f"no keyword folders ({', '.join(KEYWORDS)}) in {data_folder}; "
            "is this a Speech Commands folder?"
        )
    if task == "12":
        missing = [w for w in KEYWORDS if w not in words]
        if missing:
            logger.warning("keyword folders missing from %s: %s", data_folder, missing)
    if not words:
        raise FileNotFoundError(f"no word folders in {data_folder}")

    listed = {
        "valid": _read_list(validation_list, data_folder),
        "test": _read_list(testing_list, data_folder),
    }
    both = listed["valid"] & listed["test"]
    if both:
        raise ValueError(
            f"{len(both)} files are in both {validation_list} and {testing_list}, "
            f"e.g. {sorted(both)[0]}"
        )

    rows = {split: [] for split in SPLITS}
    for word in words:
        for name in sorted(os.listdir(os.path.join(data_folder, word))):
            if not name.endswith(".wav"):
                continue
            rel = f"{word}/{name}"
            split = (
                "valid"
                if rel in listed["valid"]
                else "test"
                if rel in listed["test"]
                else "train"
            )
            info = sf.info(os.path.join(data_folder, word, name))
            label = word
            if task == "12" and word not in KEYWORDS:
                label = UNKNOWN
            rows[split].append(
                {
                    "ID": f"{word}_{name[: -len('.wav')]}",
                    "duration": f"{info.frames / info.samplerate:.4f}",
                    "wav": f"$data_root/{rel}",
                    "start": 0,
                    "stop": info.frames,
                    "command": label,
                    "pool": "targets" if word in KEYWORDS else "negatives",
                }
            )

    if task == "12" and silence_per_split > 0:
        noises = _noise_files(data_folder, silence_seconds)
        rng = np.random.default_rng(seed)
        for split in SPLITS:
            count = int(round(silence_per_split * len(rows[split])))
            rows[split].extend(
                _silence_rows(noises, split, count, silence_seconds, rng)
            )

    os.makedirs(save_folder, exist_ok=True)
    for split in SPLITS:
        if not rows[split]:
            logger.warning("the %s split of %s is empty", split, data_folder)
        with open(csvs[split], "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=HEADER)
            writer.writeheader()
            writer.writerows(rows[split])
        logger.info("%s: %d examples -> %s", split, len(rows[split]), csvs[split])
    with open(opts_file, "w") as f:
        json.dump(options, f, indent=2, sort_keys=True)
    return csvs


def _already_done(csvs, opts_file, options):
    if not all(os.path.exists(p) for p in csvs.values()) or not os.path.exists(
        opts_file
    ):
        return False
    with open(opts_file) as f:
        return json.load(f) == options


def _word_folders(data_folder):
    """Sorted word folders (every sub-folder not starting with "_")."""
    return sorted(
        name
        for name in os.listdir(data_folder)
        if not name.startswith((".", "_"))
        and os.path.isdir(os.path.join(data_folder, name))
    )


def _read_list(path, data_folder):
    """Entries of an official split list, each checked to exist."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"split list {path!r} does not exist")
    entries = set()
    with open(path) as f:
        for number, line in enumerate(f, start=1):
            rel = line.strip().replace("\\", "/")
            if not rel:
                continue
            if not os.path.isfile(os.path.join(data_folder, rel)):
                raise FileNotFoundError(
                    f"{path}, line {number}: listed file {rel!r} is not in {data_folder}"
                )
            entries.add(rel)
    return entries


def _noise_files(data_folder, silence_seconds):
    """(path, relative path, frames, rate) of every usable background-noise file."""
    folder = os.path.join(data_folder, NOISE_FOLDER)
    if not os.path.isdir(folder):
        raise FileNotFoundError(
            f"background-noise folder {folder!r} does not exist (needed for "
            "the _silence_ class; set silence_per_split: 0 to drop it)"
        )
    noises = []
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".wav"):
            continue
        info = sf.info(os.path.join(folder, name))
        if info.frames < silence_seconds * info.samplerate:
            logger.warning("%s is shorter than one silence crop, skipped", name)
            continue
        noises.append((f"{NOISE_FOLDER}/{name}", info.frames, info.samplerate))
    if not noises:
        raise FileNotFoundError(
            f"no background-noise .wav of at least {silence_seconds} s in {folder}"
        )
    return noises


def _silence_rows(noises, split, count, silence_seconds, rng):
    """``count`` crops spread over the noise files, inside the split's region."""
    rows = []
    low, high = NOISE_REGIONS[split]
    for i in range(count):
        rel, frames, rate = noises[i % len(noises)]
        crop = int(round(silence_seconds * rate))
        first = int(low * frames)
        last = max(
            first, int(high * frames) - crop
        )  # region may be shorter than a crop
        start = min(int(rng.integers(first, last + 1)), frames - crop)
        name = os.path.splitext(os.path.basename(rel))[0]
        rows.append(
            {
                "ID": f"silence_{split}_{i:05d}_{name}",
                "duration": f"{crop / rate:.4f}",
                "wav": f"$data_root/{rel}",
                "start": start,
                "stop": start + crop,
                "command": SILENCE,
                "pool": "negatives",
            }
        )
    return rows


if __name__ == "__main__":  # pragma: no cover - manual use
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_folder")
    parser.add_argument("save_folder")
    parser.add_argument("--task", default="12", choices=["12", "35"])
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    print(prepare_gsc(args.data_folder, args.save_folder, task=args.task))
