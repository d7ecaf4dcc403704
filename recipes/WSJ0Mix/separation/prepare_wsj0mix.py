"""Build SpeechBrain CSV manifests for WSJ0-2mix / WSJ0-3mix.

Expected layout (as produced by the official mixing scripts)::

    <datapath>/wav8k/min/{tr,cv,tt}/{mix,s1,s2[,s3]}/<name>.wav

``datapath`` may also point straight at ``<...>/wav8k/min``. Every mixture
needs a file of the same name in each source folder; for the ``min`` version
all of them must have the mixture's length, for ``max`` no source may be
longer than its mixture. Problems are reported with the offending path before
any manifest is written.

Usage as a script::

    python prepare_wsj0mix.py <datapath> <savepath> [--n_spks 2] [--fs 8000]
"""

import argparse
import logging
import os
import sys

from hardmine.tasks.manifest import (
    LayoutError,
    check_group,
    csv_up_to_date,
    find_base,
    scan_split,
    separation_fields,
    wav_columns,
    write_csv_atomic,
)
from hardmine.validation import check_choice

logger = logging.getLogger(__name__)

SPLITS = {"train": "tr", "valid": "cv", "test": "tt"}


def prepare_wsjmix(
    datapath, savepath, n_spks=2, fs=8000, version="min", skip_prep=False
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
    if csv_up_to_date(outputs.values(), inputs, base):
        logger.info("Manifests in %s are newer than the data; skipping.", savepath)
        return outputs

    # Check everything before writing anything.
    tables = {}
    for key, split in SPLITS.items():
        split_dir = os.path.join(base, split)
        if not os.path.isdir(split_dir):
            raise LayoutError(split_dir, "missing split folder")
        rows = []
        for name, mix_path, others in scan_split(split_dir, "mix", sources):
            frames = check_group(mix_path, others, fs, exact=version == "min")
            row = {"ID": name[: -len(".wav")], "duration": frames / fs}
            row.update(wav_columns("mix", mix_path))
            for i, path in enumerate(others, start=1):
                row.update(wav_columns(f"s{i}", path))
            rows.append(row)
        tables[key] = rows
    fields = separation_fields(n_spks)
    for key, rows in tables.items():
        write_csv_atomic(outputs[key], fields, rows)
        logger.info("Wrote %s (%d mixtures)", outputs[key], len(rows))
    return outputs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("datapath")
    parser.add_argument("savepath")
    parser.add_argument("--n_spks", type=int, default=2)
    parser.add_argument("--fs", type=int, default=8000)
    parser.add_argument("--version", default="min")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        outputs = prepare_wsjmix(
            args.datapath, args.savepath, args.n_spks, args.fs, args.version
        )
    except (LayoutError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for key, path in outputs.items():
        print(f"{key}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
