"""Shared pieces of the separation data preparation scripts.

Both ``prepare_wsj0mix.py`` and ``prepare_librimix.py`` turn a dataset folder
into SpeechBrain CSV manifests. What they share lives here: checking audio
files with ``soundfile.info`` (existence, sample rate, length), building the
manifest columns, writing a CSV atomically and deciding whether existing CSVs
are still current.

Example
-------
>>> import os, tempfile
>>> fields = separation_fields(2)
>>> fields[:4]
['ID', 'duration', 'mix_wav', 'mix_wav_format']
>>> with tempfile.TemporaryDirectory() as tmp:
...     path = os.path.join(tmp, "m.csv")
...     write_csv_atomic(path, ["ID", "duration"], [{"ID": "a", "duration": 1.5}])
...     print(open(path).read().strip())
ID,duration
a,1.5
"""

import csv
import logging
import os
import tempfile

import soundfile as sf

__all__ = [
    "LayoutError",
    "audio_frames",
    "check_group",
    "find_base",
    "scan_split",
    "separation_fields",
    "wav_columns",
    "write_csv_atomic",
    "csv_up_to_date",
]

logger = logging.getLogger(__name__)


class LayoutError(ValueError):
    """A dataset folder does not have the expected layout or content.

    Arguments
    ---------
    path : str
        The folder or file at fault.
    message : str
        What is wrong with it.

    Example
    -------
    >>> str(LayoutError("/data/wav8k/min/tr/s2", "missing folder"))
    'missing folder: /data/wav8k/min/tr/s2'
    """

    def __init__(self, path, message):
        self.path = str(path)
        super().__init__(f"{message}: {self.path}")


def audio_frames(path, fs=None):
    """Return the number of frames of an audio file, checking it first.

    Raises ``LayoutError`` naming ``path`` when the file is missing, cannot be
    parsed, or has a sample rate other than ``fs``.
    """
    if not os.path.isfile(path):
        raise LayoutError(path, "missing audio file")
    try:
        info = sf.info(path)
    except (RuntimeError, sf.LibsndfileError) as err:
        raise LayoutError(path, f"unreadable audio file ({err})") from err
    if fs is not None and info.samplerate != fs:
        raise LayoutError(path, f"sample rate {info.samplerate} Hz, expected {fs} Hz")
    return info.frames


def check_group(mix_path, other_paths, fs, exact=True):
    """Check a mixture and its sources (and noise); return the mixture frames.

    With ``exact`` (the ``min`` versions) every file must have the mixture's
    length; otherwise (``max``) none may be longer than the mixture.
    """
    frames = audio_frames(mix_path, fs)
    if frames == 0:
        raise LayoutError(mix_path, "empty mixture file")
    for path in other_paths:
        other = audio_frames(path, fs)
        if (other != frames) if exact else (other > frames):
            relation = "differs from" if exact else "is longer than"
            raise LayoutError(
                path,
                f"length {other} samples {relation} the mixture's {frames} "
                f"samples ({mix_path})",
            )
    return frames


def find_base(datapath, fs, version, splits):
    """Return the folder holding the split folders, accepting either the
    dataset root (containing ``wav8k/``) or the ``wav8k/min`` folder itself."""
    if not os.path.isdir(datapath):
        raise LayoutError(datapath, "data folder not found")
    rate = f"wav{fs // 1000}k"
    candidates = [
        os.path.join(datapath, rate, version),
        os.path.join(datapath, version),
        datapath,
    ]
    for candidate in candidates:
        if any(os.path.isdir(os.path.join(candidate, s)) for s in splits):
            base = os.path.abspath(candidate)
            parent, name = os.path.split(base)
            if name in ("min", "max") and name != version:
                raise LayoutError(
                    base, f"folder is the {name!r} version, not {version!r}"
                )
            parent = os.path.basename(parent)
            if parent in ("wav8k", "wav16k") and parent != rate:
                raise LayoutError(base, f"folder is under {parent}, not {rate}")
            return base
    expected = os.path.join(datapath, rate, version, "{" + ",".join(splits) + "}")
    raise LayoutError(expected, f"no {rate}/{version} split folders found, expected")


def scan_split(split_dir, mix_folder, source_folders):
    """List ``(name, mix_path, [other paths])`` for one split folder, checking
    that every folder exists and every mixture has all its companion files."""
    for folder in [mix_folder] + source_folders:
        path = os.path.join(split_dir, folder)
        if not os.path.isdir(path):
            raise LayoutError(path, "missing folder")
    mix_dir = os.path.join(split_dir, mix_folder)
    names = sorted(f for f in os.listdir(mix_dir) if f.lower().endswith(".wav"))
    if not names:
        raise LayoutError(mix_dir, "no .wav mixtures in")
    entries = []
    for name in names:
        others = [os.path.join(split_dir, f, name) for f in source_folders]
        for path in others:
            if not os.path.isfile(path):
                raise LayoutError(path, "missing file for mixture " + name)
        entries.append((name, os.path.join(mix_dir, name), others))
    return entries


def separation_fields(n_spks, noise=False):
    """Column names of a separation manifest."""
    fields = ["ID", "duration"]
    for prefix in ["mix"] + [f"s{i}" for i in range(1, n_spks + 1)]:
        fields += [f"{prefix}_wav", f"{prefix}_wav_format", f"{prefix}_wav_opts"]
    if noise:
        fields += ["noise_wav", "noise_wav_format", "noise_wav_opts"]
    return fields


def wav_columns(prefix, path):
    """The three manifest cells describing one wav file."""
    return {
        f"{prefix}_wav": path,
        f"{prefix}_wav_format": "wav",
        f"{prefix}_wav_opts": "",
    }


def write_csv_atomic(path, fieldnames, rows):
    """Write ``rows`` (dicts) to ``path`` so readers never see a partial file.

    The CSV is written to a temporary file in the same folder and renamed into
    place, which is atomic on POSIX file systems.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".csv", dir=folder, text=True)
    try:
        with os.fdopen(fd, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fieldnames)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def csv_up_to_date(csv_paths, inputs, datapath):
    """Whether existing manifests can be reused instead of rebuilt.

    True when every CSV exists, is newer than every path in ``inputs``
    (folders change their modification time when files are added or
    removed), and its first entry lies under ``datapath`` (so manifests made
    from another copy of the data are rebuilt).
    """
    root = os.path.realpath(datapath)
    for csv_path in csv_paths:
        if not os.path.isfile(csv_path):
            return False
        stamp = os.path.getmtime(csv_path)
        if any(os.path.exists(p) and os.path.getmtime(p) >= stamp for p in inputs):
            return False
        with open(csv_path, newline="") as handle:
            first = next(csv.DictReader(handle), None)
        if first is None or "mix_wav" not in first:
            return False
        if not os.path.realpath(first["mix_wav"]).startswith(root + os.sep):
            return False
    return True
