"""Build SpeechBrain CSV manifests for WSJ0-2mix / WSJ0-3mix.

Expected layout (as produced by the official mixing scripts)::

    <datapath>/wav8k/min/{tr,cv,tt}/{mix,s1,s2[,s3]}/<name>.wav

``datapath`` may also point straight at ``<...>/wav8k/min``. Every mixture
needs a file of the same name in each source folder; for the ``min`` version
all of them must have the mixture's length, for ``max`` no source may be
longer than its mixture.

A wrong layout (missing data, split or source folder, another version's
folder, a split without mixtures) stops the preparation with the folder's
path before anything is written. A bad file (missing, unreadable, empty,
another sample rate, a length that does not fit) leaves its mixture out of
the manifest and is listed with its reason in ``prep_report.csv`` next to
the CSVs; ``strict_prep`` turns the list into one error instead. Manifests
newer than the data and made with the same options are reused without a
new scan.

Usage as a script::

    python prepare_wsj0mix.py <datapath> <savepath> [--n_spks 2] [--fs 8000] \
        [--version min] [--strict_prep]
"""

import argparse
import logging
import os
import sys

from hardmine.tasks.manifest import (
    LayoutError,
    check_group,
    find_base,
    reuse_manifests,
    scan_split,
    separation_fields,
    wav_columns,
    write_manifests,
)
from hardmine.tasks.prep_report import BadFiles
from hardmine.validation import ConfigError, check_choice

logger = logging.getLogger(__name__)

SPLITS = {"train": "tr", "valid": "cv", "test": "tt"}
#: Name of the options file saved next to the manifests (``<name>.json``).
OPTIONS_NAME = "prepare_wsj0mix"


def prepare_wsjmix(
    datapath,
    savepath,
    n_spks=2,
    fs=8000,
    version="min",
    skip_prep=False,
    strict_prep=False,
):
    """Write ``wsj_tr.csv``, ``wsj_cv.csv`` and ``wsj_tt.csv`` into ``savepath``.

    Arguments
    ---------
    datapath : str
        Dataset root containing ``wav8k/`` (or ``wav16k/``), or the
        ``wav8k/min`` folder itself.
    savepath : str
        Folder for the CSV files (created if needed).
    n_spks : int
        2 or 3.
    fs : int
        8000 or 16000; every file must have this sample rate.
    version : str
        "min" or "max".
    skip_prep : bool
        Only return the CSV paths, without checking or writing anything.
    strict_prep : bool
        Raise one :class:`hardmine.tasks.prep_report.PrepError` naming every
        bad file instead of leaving their mixtures out.

    Returns
    -------
    dict
        ``{"train": path, "valid": path, "test": path}``.

    Example
    -------
    >>> import tempfile
    >>> from hardmine.synthetic.layouts import make_wsj0mix
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     root = make_wsj0mix(tmp + "/data", sizes={"tr": 2, "cv": 1, "tt": 1},
    ...                         seconds=0.25)
    ...     csvs = prepare_wsjmix(root, tmp + "/save")
    ...     sorted(os.path.basename(p) for p in csvs.values())
    ['wsj_cv.csv', 'wsj_tr.csv', 'wsj_tt.csv']
    """
    check_choice("n_spks", n_spks, (2, 3))
    check_choice("fs", fs, (8000, 16000))
    check_choice("version", version, ("min", "max"))
    if not isinstance(strict_prep, bool):
        raise ConfigError("strict_prep", f"must be True or False, got {strict_prep!r}")
    outputs = {
        key: os.path.join(savepath, f"wsj_{folder}.csv")
        for key, folder in SPLITS.items()
    }
    if skip_prep:
        return outputs
    base = find_base(datapath, fs, version, list(SPLITS.values()))
    sources = [f"s{i}" for i in range(1, n_spks + 1)]
    inputs = [
        os.path.join(base, split, folder)
        for split in SPLITS.values()
        for folder in ["mix"] + sources
    ]
    options = {
        "datapath": os.path.abspath(os.fspath(datapath)),
        "n_spks": n_spks,
        "fs": fs,
        "version": version,
        "strict_prep": strict_prep,
    }
    if reuse_manifests(outputs.values(), inputs, base, savepath, OPTIONS_NAME, options):
        return outputs

    # Check the layout of every split before reading any file.
    split_dirs = {key: os.path.join(base, split) for key, split in SPLITS.items()}
    for split_dir in split_dirs.values():
        if not os.path.isdir(split_dir):
            raise LayoutError(split_dir, "missing split folder")
    groups = {
        key: scan_split(split_dir, "mix", sources, check_files=False)
        for key, split_dir in split_dirs.items()
    }
    # Then every file; a mixture with a bad file is left out.
    bad = BadFiles()
    tables = {}
    for key, entries in groups.items():
        rows = []
        for name, mix_path, others in entries:
            frames = check_group(mix_path, others, fs, version == "min", bad)
            if frames is None:
                continue
            row = {"ID": name[: -len(".wav")], "duration": frames / fs}
            row.update(wav_columns("mix", mix_path))
            for i, path in enumerate(others, start=1):
                row.update(wav_columns(f"s{i}", path))
            rows.append(row)
        tables[key] = rows
    write_manifests(
        tables,
        outputs,
        separation_fields(n_spks),
        bad,
        savepath,
        OPTIONS_NAME,
        options,
        strict=strict_prep,
        split_dirs=split_dirs,
        what="WSJ0-mix preparation",
    )
    return outputs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("datapath")
    parser.add_argument("savepath")
    parser.add_argument("--n_spks", type=int, default=2)
    parser.add_argument("--fs", type=int, default=8000)
    parser.add_argument("--version", default="min")
    parser.add_argument(
        "--strict_prep",
        action="store_true",
        help="stop with one error naming every bad file instead of leaving "
        "their mixtures out",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        outputs = prepare_wsjmix(
            args.datapath,
            args.savepath,
            args.n_spks,
            args.fs,
            args.version,
            strict_prep=args.strict_prep,
        )
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for key, path in outputs.items():
        print(f"{key}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
