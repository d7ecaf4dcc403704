"""Shared pieces of the separation data preparation scripts.

Both ``prepare_wsj0mix.py`` and ``prepare_librimix.py`` turn a dataset folder
into SpeechBrain CSV manifests. What they share lives here: checking audio
files with ``soundfile.info`` (existence, sample rate, length), building the
manifest columns, writing a CSV atomically and deciding whether existing CSVs
are still current.

Two kinds of problems are told apart. A folder that is missing or in the
wrong place (no data folder, no split folder, a missing ``s2/``, another
version's folder, a split without any mixture) means the path or the layout
is wrong, and :class:`LayoutError` stops the preparation at once. A bad file
(a companion file missing, an unreadable header, no samples, another sample
rate, a length that does not fit its mixture) only costs its mixture: the
mixture is left out of the manifest and the file is named in the bad-file
report (:class:`hardmine.tasks.prep_report.BadFiles`), unless the
preparation is strict.

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

from hardmine.tasks.prep_report import (
    BadFiles,
    already_prepared,
    checked_frames,
    save_options,
)

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
    "reuse_manifests",
    "write_manifests",
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


def check_group(mix_path, other_paths, fs, exact=True, bad=None):
    """Check a mixture and its sources (and noise); return the mixture frames.

    Every file must exist, be readable, hold samples and have the sample
    rate ``fs``. With ``exact`` (the ``min`` versions) every file must have
    the mixture's length; otherwise (``max``) none may be longer than the
    mixture. When all companion files agree on a length and the mixture alone
    differs, the mixture is the file at fault; otherwise each companion file
    that does not fit is.

    Arguments
    ---------
    mix_path : str
        The mixture file.
    other_paths : list of str
        Its sources (and noise).
    fs : int
        The expected sample rate.
    exact : bool
        Whether every length must equal the mixture's.
    bad : BadFiles, optional
        Where bad files are recorded. Without it the first bad file raises
        a :class:`LayoutError` naming it.

    Returns
    -------
    int or None
        The mixture's frames, or None when a file of the group is bad (the
        mixture is then to be left out).

    Example
    -------
    >>> import os, tempfile
    >>> import numpy as np
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     paths = [os.path.join(tmp, f"{k}.wav") for k in ("mix", "s1", "s2")]
    ...     for path, n in zip(paths, (800, 800, 700)):
    ...         sf.write(path, np.zeros(n), 8000)
    ...     bad = BadFiles()
    ...     frames = check_group(paths[0], paths[1:], 8000, bad=bad)
    ...     frames, [os.path.basename(p) for p in bad.entries]
    (None, ['s2.wav'])
    """
    group = BadFiles() if bad is None else bad
    mix_frames = checked_frames(mix_path, group, fs)
    frames = {path: checked_frames(path, group, fs) for path in other_paths}
    if mix_frames is not None:
        wrong = [
            path
            for path, n in frames.items()
            if n is not None and ((n != mix_frames) if exact else (n > mix_frames))
        ]
        lengths = {n for n in frames.values() if n is not None}
        if (
            len(other_paths) > 1
            and len(wrong) == len(other_paths)
            and len(lengths) == 1
        ):
            relation = "differs from" if exact else "is shorter than"
            group.add(
                mix_path,
                f"length {mix_frames} samples {relation} the "
                f"{lengths.pop()} samples of all its companion files",
            )
        else:
            relation = "differs from" if exact else "is longer than"
            for path in wrong:
                group.add(
                    path,
                    f"length {frames[path]} samples {relation} the mixture's "
                    f"{mix_frames} samples ({mix_path})",
                )
    for path in [mix_path, *other_paths]:
        if path in group:
            if bad is None:
                raise LayoutError(path, group.entries[str(path)])
            return None
    return mix_frames


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


def scan_split(split_dir, mix_folder, source_folders, check_files=True):
    """List ``(name, mix_path, [other paths])`` for one split folder.

    Every folder must exist and the mixture folder must hold at least one
    ``.wav`` file (:class:`LayoutError` otherwise). With ``check_files`` a
    mixture without all its companion files raises as well; without it the
    missing files are left for :func:`check_group` to record.
    """
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
        for path in others if check_files else []:
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


def reuse_manifests(outputs, inputs, base, savepath, name, options):
    """Whether the manifests in ``savepath`` can be used without a new scan.

    They can when they are newer than the data (:func:`csv_up_to_date`) and
    were written with the same ``options``
    (:func:`hardmine.tasks.prep_report.already_prepared`, reading
    ``<savepath>/<name>.json``).
    """
    outputs = list(outputs)
    if not csv_up_to_date(outputs, inputs, base):
        return False
    if not already_prepared(outputs, savepath, name, options):
        logger.info(
            "Manifests in %s were made with other options; rebuilding.", savepath
        )
        return False
    logger.info(
        "Manifests in %s are newer than the data and were made with the same "
        "options; skipping.",
        savepath,
    )
    return True


def write_manifests(
    tables,
    outputs,
    fields,
    bad,
    savepath,
    name,
    options,
    strict=False,
    split_dirs=None,
    what=None,
):
    """Write the report, check that no split is empty, write the manifests.

    Arguments
    ---------
    tables : dict
        Split key -> the manifest rows (dicts) left after the bad mixtures.
    outputs : dict
        Split key -> CSV path.
    fields : list of str
        The CSV columns.
    bad : BadFiles
        The bad files found; written to ``prep_report.csv`` in ``savepath``.
    savepath : str
        Folder of the manifests and the report.
    name : str
        Name of the options file (``<savepath>/<name>.json``), written last.
    options : dict
        The options the manifests are made with.
    strict : bool
        Bad files raise one PrepError naming them all.
    split_dirs : dict, optional
        Split key -> folder, to name a split left empty.
    what : str, optional
        The preparation's name in the log (default ``name``).

    Raises
    ------
    PrepError
        With ``strict`` and at least one bad file.
    LayoutError
        When leaving out the bad mixtures empties a split.
    """
    split_dirs = split_dirs or {}
    options_path = os.path.join(savepath, f"{name}.json")
    if os.path.exists(options_path):
        os.remove(options_path)  # the manifests are about to change
    report = bad.finish(savepath, strict=strict, what=what or name)
    logger.info(
        "%s: %d mixtures kept; %d bad audio files (listed in %s)",
        what or name,
        sum(len(rows) for rows in tables.values()),
        len(bad),
        report,
    )
    for key, rows in tables.items():
        if not rows:
            raise LayoutError(
                split_dirs.get(key, key),
                f"no usable mixture left in split {key!r}: every one has a bad "
                f"file (listed in {report})",
            )
    for key, rows in tables.items():
        write_csv_atomic(outputs[key], fields, rows)
        logger.info("Wrote %s (%d mixtures)", outputs[key], len(rows))
    save_options(savepath, name, options)
