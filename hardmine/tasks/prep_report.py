"""What the data preparations share: the bad-file report and the skip rule.

A real corpus of 100,000 clips has a few that cannot be used: unreadable,
empty, at the wrong sample rate. A preparation checks every file it lists,
leaves the bad ones out of its CSVs and names each once in
:class:`BadFiles`, which writes them to ``prep_report.csv`` (``path,reason``)
next to the CSVs and logs how many there were. With ``strict=True`` the same
list becomes one :class:`PrepError` that names them all, so a user fixes the
corpus in one go rather than one file per run.

The skip rule is SpeechBrain's: when the CSVs exist and were written with the
same options (saved as JSON beside them by :func:`save_options`), the corpus
is not scanned again; any changed option rebuilds them
(:func:`already_prepared`).

Example
-------
>>> import os, tempfile
>>> with tempfile.TemporaryDirectory() as tmp:
...     bad = BadFiles()
...     frames = checked_frames(os.path.join(tmp, "gone.wav"), bad)
...     report = bad.finish(tmp, strict=False, what="demo")
...     frames, len(bad), open(report).read().splitlines()[1].endswith("missing file")
(None, 1, True)
"""

import csv
import json
import logging
import os

import soundfile as sf

__all__ = [
    "REPORT_NAME",
    "PrepError",
    "BadFiles",
    "checked_frames",
    "already_prepared",
    "save_options",
]

logger = logging.getLogger(__name__)

#: File name of the bad-file report written next to the CSVs.
REPORT_NAME = "prep_report.csv"


class PrepError(ValueError):
    """Preparation found bad files and was asked to be strict.

    Example
    -------
    >>> err = PrepError({"/d/a.wav": "empty file", "/d/b.wav": "unreadable"})
    >>> str(err).splitlines()[0]
    '2 bad audio files (strict_prep is on):'
    """

    def __init__(self, entries, report=None):
        self.entries = dict(entries)
        lines = [f"{len(self.entries)} bad audio files (strict_prep is on):"]
        lines += [f"  {path}: {reason}" for path, reason in self.entries.items()]
        if report:
            lines.append(f"(also listed in {report})")
        super().__init__("\n".join(lines))


class BadFiles:
    """The files a preparation leaves out, each named once with its reason.

    Example
    -------
    >>> bad = BadFiles()
    >>> bad.add("/d/a.wav", "empty file")
    >>> bad.add("/d/a.wav", "another reason")  # first reason kept
    >>> len(bad), bad.entries["/d/a.wav"], "/d/a.wav" in bad
    (1, 'empty file', True)
    """

    def __init__(self):
        self.entries = {}

    def add(self, path, reason):
        """Record ``path`` as bad (once; the first reason is kept)."""
        self.entries.setdefault(str(path), str(reason))

    def __len__(self):
        return len(self.entries)

    def __contains__(self, path):
        return str(path) in self.entries

    def finish(self, folder, strict=False, what="preparation"):
        """Write the report into ``folder``, log the count, raise if strict.

        The report is written even when empty (a header only), so an old
        report never outlives the corpus it described.

        Returns
        -------
        str
            The report's path.

        Raises
        ------
        PrepError
            With ``strict`` and at least one bad file.
        """
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, REPORT_NAME)
        with open(path, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", "reason"])
            writer.writerows(sorted(self.entries.items()))
        if self.entries:
            if strict:
                raise PrepError(self.entries, report=path)
            logger.warning(
                "%s: left out %d bad audio files (listed in %s)",
                what,
                len(self.entries),
                path,
            )
        return path


def checked_frames(path, bad, fs=None):
    """Frames of an audio file, or ``None`` after recording why it is bad.

    A file is bad when it is missing, its header cannot be parsed, it holds
    no samples, or (with ``fs``) its sample rate differs.

    Arguments
    ---------
    path : str
        The audio file.
    bad : BadFiles
        Where a bad file is recorded.
    fs : int, optional
        The expected sample rate.
    """
    if not os.path.isfile(path):
        bad.add(path, "missing file")
        return None
    try:
        info = sf.info(path)
    except (RuntimeError, sf.LibsndfileError) as err:
        bad.add(path, f"unreadable ({err})".replace("\n", " "))
        return None
    if info.frames <= 0:
        bad.add(path, "zero-length file")
        return None
    if fs is not None and info.samplerate != fs:
        bad.add(path, f"sample rate {info.samplerate} Hz, expected {fs} Hz")
        return None
    return info.frames


def _options_path(folder, name):
    return os.path.join(folder, f"{name}.json")


def already_prepared(outputs, folder, name, options):
    """Whether every file of ``outputs`` exists and ``options`` match the saved ones.

    ``options`` must be JSON-serialisable; they are compared after a JSON
    round trip, so tuples and lists compare equal.

    Example
    -------
    >>> import os, tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     out = [os.path.join(tmp, "train.csv")]
    ...     _ = open(out[0], "w").write("ID\\n")
    ...     _ = save_options(tmp, "prep", {"fs": 8000})
    ...     (already_prepared(out, tmp, "prep", {"fs": 8000}),
    ...      already_prepared(out, tmp, "prep", {"fs": 16000}))
    (True, False)
    """
    path = _options_path(folder, name)
    if not os.path.isfile(path) or not all(os.path.isfile(p) for p in outputs):
        return False
    with open(path) as handle:
        try:
            saved = json.load(handle)
        except json.JSONDecodeError:
            return False
    return saved == json.loads(json.dumps(options))


def save_options(folder, name, options):
    """Save the options the CSVs in ``folder`` were made with (written last)."""
    os.makedirs(folder, exist_ok=True)
    path = _options_path(folder, name)
    tmp = path + ".tmp"
    with open(tmp, "w") as handle:
        json.dump(options, handle, indent=2, sort_keys=True)
    os.replace(tmp, path)
    return path
