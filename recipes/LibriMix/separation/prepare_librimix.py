"""Build SpeechBrain CSV manifests for Libri2Mix / Libri3Mix.

Expected layout (as produced by the LibriMix generation scripts)::

    <datapath>/wav8k/min/{train-360|train-100,dev,test}/
        {mix_clean,mix_both,s1,s2[,s3],noise}/<name>.wav
    <datapath>/wav8k/min/metadata/mixture_<split>_mix_<clean|both>.csv

``datapath`` may also point straight at ``<...>/wav8k/min``. When the metadata
CSVs are present they define the mixtures; otherwise the folders are
scanned. Each manifest row also carries the noise file, so a recipe can add
or check the noise itself.

A wrong layout (missing data, split or source folder, another version's
folder, metadata without the needed columns or without any row, a split
without mixtures) stops the preparation with the path before anything is
written. A bad file (missing, unreadable, empty, another sample rate, a
length that does not fit the mixture or its metadata) leaves its mixture out
of the manifest and is listed with its reason in ``prep_report.csv`` next to
the CSVs; ``strict_prep`` turns the list into one error instead. Manifests
newer than the data and made with the same options are reused without a
new scan.

Usage as a script::

    python prepare_librimix.py <datapath> <savepath> [--n_spks 2] [--mixture both] \
        [--strict_prep]
"""

import argparse
import csv
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

#: Name of the options file saved next to the manifests (``<name>.json``).
OPTIONS_NAME = "prepare_librimix"


def _split_folders(train_set):
    return {"train": train_set, "dev": "dev", "test": "test"}


def _metadata_path(base, split, mixture):
    return os.path.join(base, "metadata", f"mixture_{split}_mix_{mixture}.csv")


def _from_metadata(meta_path, split_dir, n_spks, bad):
    """Read ``(ID, mix, [sources..., noise], length)`` entries from a LibriMix
    metadata CSV, checking its columns; a listed file that does not exist is
    recorded in ``bad`` (the row is kept for the other files' checks), a row
    whose length is not a number leaves its mixture out."""
    with open(meta_path, newline="") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        needed = ["mixture_ID", "mixture_path", "length"]
        needed += [f"source_{i}_path" for i in range(1, n_spks + 1)]
        missing = [c for c in needed if c not in columns]
        if missing:
            raise LayoutError(meta_path, f"metadata lacks columns {missing}")
        if f"source_{n_spks + 1}_path" in columns:
            raise LayoutError(
                meta_path, f"metadata lists more than n_spks={n_spks} sources"
            )
        rows = list(reader)
    if not rows:
        raise LayoutError(meta_path, "metadata lists no mixtures")
    entries = []
    for row in rows:
        paths = [row["mixture_path"]]
        paths += [row[f"source_{i}_path"] for i in range(1, n_spks + 1)]
        noise = row.get("noise_path") or os.path.join(
            split_dir, "noise", row["mixture_ID"] + ".wav"
        )
        paths.append(noise)
        for path in paths:
            if not os.path.isfile(path):
                bad.add(path, f"missing file (listed in {meta_path})")
        try:
            length = int(row["length"])
        except (TypeError, ValueError):
            bad.add(paths[0], f"{meta_path} gives the length {row['length']!r}")
            continue
        entries.append((row["mixture_ID"], paths[0], paths[1:], length))
    return entries


def prepare_librimix(
    datapath,
    savepath,
    n_spks=2,
    fs=8000,
    version="min",
    mixture="both",
    train_set="train-360",
    skip_prep=False,
    strict_prep=False,
):
    """Write ``libri{n}mix_train.csv``, ``_dev.csv`` and ``_test.csv``.

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
    mixture : str
        "both" (speech + noise, ``mix_both``) or "clean" (``mix_clean``).
    train_set : str
        "train-360" or "train-100".
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
    >>> from hardmine.synthetic.layouts import make_librimix
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     root = make_librimix(tmp + "/d", sizes={"train": 1, "dev": 1, "test": 1},
    ...                          seconds=0.25)
    ...     csvs = prepare_librimix(root, tmp + "/save")
    ...     sorted(os.path.basename(p) for p in csvs.values())
    ['libri2mix_dev.csv', 'libri2mix_test.csv', 'libri2mix_train.csv']
    """
    check_choice("n_spks", n_spks, (2, 3))
    check_choice("fs", fs, (8000, 16000))
    check_choice("version", version, ("min", "max"))
    check_choice("mixture", mixture, ("both", "clean"))
    check_choice("train_set", train_set, ("train-360", "train-100"))
    if not isinstance(strict_prep, bool):
        raise ConfigError("strict_prep", f"must be True or False, got {strict_prep!r}")
    folders = _split_folders(train_set)
    outputs = {
        key: os.path.join(savepath, f"libri{n_spks}mix_{name}.csv")
        for key, name in zip(("train", "valid", "test"), folders.keys(), strict=True)
    }
    if skip_prep:
        return outputs
    base = find_base(datapath, fs, version, list(folders.values()))
    mix_folder = f"mix_{mixture}"
    others = [f"s{i}" for i in range(1, n_spks + 1)] + ["noise"]
    # The metadata files too: editing one in place leaves its folder's time.
    inputs = [os.path.join(base, "metadata")]
    inputs += [_metadata_path(base, split, mixture) for split in folders.values()]
    inputs += [
        os.path.join(base, split, folder)
        for split in folders.values()
        for folder in [mix_folder] + others
    ]
    options = {
        "datapath": os.path.abspath(os.fspath(datapath)),
        "n_spks": n_spks,
        "fs": fs,
        "version": version,
        "mixture": mixture,
        "train_set": train_set,
        "strict_prep": strict_prep,
    }
    if reuse_manifests(outputs.values(), inputs, base, savepath, OPTIONS_NAME, options):
        return outputs

    # Check the layout of every split before reading any audio file.
    split_dirs = {
        key: os.path.join(base, split)
        for key, split in zip(outputs, folders.values(), strict=True)
    }
    for split_dir in split_dirs.values():
        if not os.path.isdir(split_dir):
            raise LayoutError(split_dir, "missing split folder")
    bad = BadFiles()
    groups = {}
    for key, split_dir in split_dirs.items():
        split = os.path.basename(split_dir)
        meta_path = _metadata_path(base, split, mixture)
        if os.path.isfile(meta_path):
            logger.info("Reading mixtures of %s from %s", split, meta_path)
            groups[key] = (meta_path, _from_metadata(meta_path, split_dir, n_spks, bad))
        else:
            logger.info("No metadata for %s; scanning %s", split, split_dir)
            scanned = scan_split(split_dir, mix_folder, others, check_files=False)
            groups[key] = (
                None,
                [
                    (name[: -len(".wav")], mix, rest, None)
                    for name, mix, rest in scanned
                ],
            )
    # Then every file; a mixture with a bad file is left out.
    tables = {}
    for key, (meta_path, entries) in groups.items():
        rows = []
        for mix_id, mix_path, rest, length in entries:
            frames = check_group(mix_path, rest, fs, version == "min", bad)
            if frames is None:
                continue
            if length is not None and length != frames:
                bad.add(mix_path, f"{frames} samples, but {meta_path} says {length}")
                continue
            row = {"ID": mix_id, "duration": frames / fs}
            row.update(wav_columns("mix", os.path.abspath(mix_path)))
            for i, path in enumerate(rest[:-1], start=1):
                row.update(wav_columns(f"s{i}", os.path.abspath(path)))
            row.update(wav_columns("noise", os.path.abspath(rest[-1])))
            rows.append(row)
        tables[key] = rows
    write_manifests(
        tables,
        outputs,
        separation_fields(n_spks, noise=True),
        bad,
        savepath,
        OPTIONS_NAME,
        options,
        strict=strict_prep,
        split_dirs=split_dirs,
        what="LibriMix preparation",
    )
    return outputs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("datapath")
    parser.add_argument("savepath")
    parser.add_argument("--n_spks", type=int, default=2)
    parser.add_argument("--fs", type=int, default=8000)
    parser.add_argument("--version", default="min")
    parser.add_argument("--mixture", default="both")
    parser.add_argument("--train_set", default="train-360")
    parser.add_argument(
        "--strict_prep",
        action="store_true",
        help="stop with one error naming every bad file instead of leaving "
        "their mixtures out",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        outputs = prepare_librimix(
            args.datapath,
            args.savepath,
            n_spks=args.n_spks,
            fs=args.fs,
            version=args.version,
            mixture=args.mixture,
            train_set=args.train_set,
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
