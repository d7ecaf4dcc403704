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

Files for training-time augmentation
------------------------------------
``noise_train.csv`` lists pieces of the *training* region of every
background-noise file, cut into ``noise_train/`` (in SpeechBrain's noise-CSV
format, for :class:`speechbrain.augment.time_domain.AddNoise`), so the noise
added to training clips never contains the audio of a validation or test
silence crop. With ``rir_folder``, ``rir.csv`` lists every ``.wav`` found
under it (for :class:`speechbrain.augment.time_domain.AddReverb`).

Bad files
---------
Unreadable, empty or wrong-rate clips and noise or impulse-response files,
and files named in a split list that do not exist, are left out and listed
once each in ``prep_report.csv`` (``path,reason``) next to the CSVs; with
``strict_prep=True`` they make one :class:`~hardmine.tasks.prep_report.PrepError`
that names them all. The CSVs are not rebuilt when they exist and were made
with the same options.

Example
-------
>>> import tempfile, os
>>> from hardmine.synthetic.gsc import generate_gsc
>>> with tempfile.TemporaryDirectory() as tmp:
...     root = generate_gsc(os.path.join(tmp, "gsc"), words=("yes", "no", "cat"),
...                         n_speakers=4, repetitions=1, valid_speakers=1,
...                         test_speakers=1, background_seconds=12.0)
...     csvs = prepare_gsc(root, os.path.join(tmp, "save"))
...     report = open(os.path.join(tmp, "save", "prep_report.csv")).read()
...     sorted(csvs), open(csvs["train"]).readline().strip(), report.strip()
(['test', 'train', 'valid'], 'ID,duration,wav,start,stop,command,pool', 'path,reason')
"""

import csv
import logging
import os

import numpy as np
import soundfile as sf

from hardmine.tasks.prep_report import (
    REPORT_NAME,
    BadFiles,
    already_prepared,
    checked_frames,
    save_options,
)
from hardmine.validation import ConfigError, check_choice, check_int, check_number

logger = logging.getLogger(__name__)

KEYWORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
UNKNOWN = "_unknown_"
SILENCE = "_silence_"
NOISE_FOLDER = "_background_noise_"
SPLITS = ("train", "valid", "test")
# Fraction of every background-noise file reserved for each split's silence.
NOISE_REGIONS = {"train": (0.0, 0.8), "valid": (0.8, 0.9), "test": (0.9, 1.0)}
HEADER = ["ID", "duration", "wav", "start", "stop", "command", "pool"]
#: Augmentation files written next to the CSVs (see the module docstring).
NOISE_CSV = "noise_train.csv"
NOISE_PIECES = "noise_train"
RIR_CSV = "rir.csv"
#: Length of the training-noise pieces: longer than a 1 s clip slowed down.
NOISE_PIECE_SECONDS = 2.0
# SpeechBrain's CSV format for the noise and impulse-response lists.
AUGMENT_HEADER = ["ID", "duration", "wav", "wav_format", "wav_opts"]


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
    strict_prep=False,
    sample_rate=16000,
    rir_folder=None,
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
    strict_prep : bool
        Raise one PrepError naming every bad file instead of leaving the bad
        files out.
    sample_rate : int
        The rate every clip, noise and impulse-response file must have.
    rir_folder : str, optional
        Folder searched recursively for room impulse responses (``.wav``);
        ``rir.csv`` is written when given.

    Returns
    -------
    dict
        ``{"train": path, "valid": path, "test": path}``.

    Raises
    ------
    hardmine.tasks.prep_report.PrepError
        With ``strict_prep`` and at least one bad file.
    """
    task = check_choice("task", str(task), ("12", "35"))
    check_number("silence_per_split", silence_per_split, minimum=0.0)
    check_number("silence_seconds", silence_seconds, minimum=0.0, strict=True)
    seed = check_int("seed", seed)
    sample_rate = check_int("sample_rate", sample_rate, minimum=1)
    if not isinstance(strict_prep, bool):
        raise ConfigError("strict_prep", f"must be True or False, got {strict_prep!r}")
    csvs = {split: os.path.join(save_folder, f"{split}.csv") for split in SPLITS}
    if skip_prep:
        return csvs

    if not os.path.isdir(data_folder):
        raise FileNotFoundError(f"data_folder {data_folder!r} does not exist")
    if rir_folder is not None and not os.path.isdir(rir_folder):
        raise ConfigError("rir_folder", f"{rir_folder!r} is not a folder")
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
        "strict_prep": strict_prep,
        "sample_rate": sample_rate,
        "rir_folder": None if rir_folder is None else os.path.abspath(rir_folder),
        "noise_piece_seconds": NOISE_PIECE_SECONDS,
    }
    outputs = [*csvs.values(), os.path.join(save_folder, REPORT_NAME)]
    if rir_folder is not None:
        outputs.append(os.path.join(save_folder, RIR_CSV))
    if already_prepared(outputs, save_folder, "prepare_gsc", options):
        logger.info("GSC CSV files already prepared in %s, skipping", save_folder)
        return csvs
    # A rebuild that stops half-way must not leave the old options behind.
    stale = os.path.join(save_folder, "prepare_gsc.json")
    if os.path.exists(stale):
        os.remove(stale)

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

    bad = BadFiles()
    listed = {
        "valid": _read_list(validation_list, data_folder, bad),
        "test": _read_list(testing_list, data_folder, bad),
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
            frames = checked_frames(
                os.path.join(data_folder, word, name), bad, fs=sample_rate
            )
            if frames is None:
                continue
            split = (
                "valid"
                if rel in listed["valid"]
                else "test"
                if rel in listed["test"]
                else "train"
            )
            label = word
            if task == "12" and word not in KEYWORDS:
                label = UNKNOWN
            rows[split].append(
                {
                    "ID": f"{word}_{name[: -len('.wav')]}",
                    "duration": f"{frames / sample_rate:.4f}",
                    "wav": f"$data_root/{rel}",
                    "start": 0,
                    "stop": frames,
                    "command": label,
                    "pool": "targets" if word in KEYWORDS else "negatives",
                }
            )

    need_silence = task == "12" and silence_per_split > 0
    noises = _noise_files(data_folder, silence_seconds, sample_rate, bad, need_silence)
    if need_silence and not noises:
        bad.finish(save_folder, strict=strict_prep, what="prepare_gsc")
        raise FileNotFoundError(
            f"no usable background-noise .wav of at least {silence_seconds} s in "
            f"{os.path.join(data_folder, NOISE_FOLDER)} for the _silence_ class "
            f"(bad files are listed in {os.path.join(save_folder, REPORT_NAME)}; "
            "set silence_per_split: 0 to drop the class)"
        )
    if need_silence:
        rng = np.random.default_rng(seed)
        for split in SPLITS:
            count = int(round(silence_per_split * len(rows[split])))
            rows[split].extend(
                _silence_rows(noises, split, count, silence_seconds, rng)
            )
    rirs = _rir_files(rir_folder, sample_rate, bad) if rir_folder is not None else []

    # Strict mode stops here, before any CSV is written.
    bad.finish(save_folder, strict=strict_prep, what="prepare_gsc")
    if rir_folder is not None and not rirs:
        raise ConfigError(
            "rir_folder", f"no usable .wav impulse response under {rir_folder}"
        )

    os.makedirs(save_folder, exist_ok=True)
    for split in SPLITS:
        if not rows[split]:
            logger.warning("the %s split of %s is empty", split, data_folder)
        _write_csv(csvs[split], HEADER, rows[split])
        logger.info("%s: %d examples -> %s", split, len(rows[split]), csvs[split])
    _write_noise_pieces(data_folder, noises, save_folder, sample_rate)
    if rir_folder is not None:
        _write_csv(os.path.join(save_folder, RIR_CSV), AUGMENT_HEADER, rirs)
        logger.info("%d impulse responses -> %s", len(rirs), RIR_CSV)
    save_options(save_folder, "prepare_gsc", options)
    return csvs


def _write_csv(path, header, rows):
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def _word_folders(data_folder):
    """Sorted word folders (every sub-folder not starting with "_")."""
    return sorted(
        name
        for name in os.listdir(data_folder)
        if not name.startswith((".", "_"))
        and os.path.isdir(os.path.join(data_folder, name))
    )


def _read_list(path, data_folder, bad):
    """Entries of an official split list; a missing listed file goes to ``bad``."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"split list {path!r} does not exist")
    entries = set()
    with open(path) as f:
        for number, line in enumerate(f, start=1):
            rel = line.strip().replace("\\", "/")
            if not rel:
                continue
            full = os.path.join(data_folder, rel)
            if not os.path.isfile(full):
                bad.add(full, f"missing file (listed in {path}, line {number})")
                continue
            entries.add(rel)
    return entries


def _noise_files(data_folder, silence_seconds, sample_rate, bad, required):
    """(relative path, frames, rate) of every usable background-noise file.

    Without ``required`` (no silence class) a missing folder gives ``[]``.
    """
    folder = os.path.join(data_folder, NOISE_FOLDER)
    if not os.path.isdir(folder):
        if not required:
            return []
        raise FileNotFoundError(
            f"background-noise folder {folder!r} does not exist (needed for "
            "the _silence_ class; set silence_per_split: 0 to drop it)"
        )
    noises = []
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".wav"):
            continue
        frames = checked_frames(os.path.join(folder, name), bad, fs=sample_rate)
        if frames is None:
            continue
        if frames < silence_seconds * sample_rate:
            logger.warning("%s is shorter than one silence crop, skipped", name)
            continue
        noises.append((f"{NOISE_FOLDER}/{name}", frames, sample_rate))
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


def _write_noise_pieces(data_folder, noises, save_folder, sample_rate):
    """Cut the training region of each noise file into pieces; list them.

    Writes ``noise_train/*.wav`` and ``noise_train.csv`` (none when there is
    no usable noise file). A region shorter than a piece is one piece.
    """
    csv_path = os.path.join(save_folder, NOISE_CSV)
    folder = os.path.join(save_folder, NOISE_PIECES)
    if os.path.isdir(folder):
        for name in os.listdir(folder):
            if name.endswith(".wav"):
                os.remove(os.path.join(folder, name))
    if not noises:
        if os.path.exists(csv_path):
            os.remove(csv_path)
        return
    os.makedirs(folder, exist_ok=True)
    piece = int(round(NOISE_PIECE_SECONDS * sample_rate))
    rows = []
    for rel, frames, _ in noises:
        low, high = NOISE_REGIONS["train"]
        first, last = int(low * frames), int(high * frames)
        source = os.path.join(data_folder, rel)
        # 16-bit sources stay 16-bit (exactly), anything else is stored as float.
        subtype = "PCM_16" if sf.info(source).subtype == "PCM_16" else "FLOAT"
        audio, _ = sf.read(source, start=first, stop=last, dtype="float32")
        if audio.ndim > 1:
            audio = audio.mean(axis=1)
        stem = os.path.splitext(os.path.basename(rel))[0]
        n_pieces = max(1, len(audio) // piece)
        for j in range(n_pieces):
            chunk = audio[j * piece : (j + 1) * piece]
            path = os.path.join(folder, f"{stem}_{j:04d}.wav")
            sf.write(path, chunk, sample_rate, subtype=subtype)
            rows.append(
                {
                    "ID": f"{stem}_{j:04d}",
                    "duration": f"{len(chunk) / sample_rate:.4f}",
                    "wav": path,
                    "wav_format": "wav",
                    "wav_opts": "",
                }
            )
    _write_csv(csv_path, AUGMENT_HEADER, rows)
    logger.info("%d training-noise pieces -> %s", len(rows), csv_path)


def _rir_files(rir_folder, sample_rate, bad):
    """Noise-CSV rows of every usable mono ``.wav`` under ``rir_folder``."""
    rows = []
    for root, dirs, files in os.walk(rir_folder):
        dirs.sort()
        for name in sorted(files):
            if not name.lower().endswith(".wav"):
                continue
            path = os.path.abspath(os.path.join(root, name))
            frames = checked_frames(path, bad, fs=sample_rate)
            if frames is None:
                continue
            channels = sf.info(path).channels
            if channels != 1:
                bad.add(path, f"{channels} channels, expected a mono impulse response")
                continue
            rel = os.path.relpath(path, rir_folder)
            rows.append(
                {
                    "ID": f"rir{len(rows):05d}_"
                    + os.path.splitext(rel)[0].replace(os.sep, "_"),
                    "duration": f"{frames / sample_rate:.4f}",
                    "wav": path,
                    "wav_format": "wav",
                    "wav_opts": "",
                }
            )
    return rows


if __name__ == "__main__":  # pragma: no cover - manual use
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_folder")
    parser.add_argument("save_folder")
    parser.add_argument("--task", default="12", choices=["12", "35"])
    parser.add_argument("--strict_prep", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    print(
        prepare_gsc(
            args.data_folder,
            args.save_folder,
            task=args.task,
            strict_prep=args.strict_prep,
        )
    )
