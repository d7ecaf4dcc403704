"""The mining YAML fragments installed with hardmine, for any recipe to include.

hardmine ships its YAML fragments (``threshold.yaml``, ``loss_limit.yaml``,
``reweight.yaml``, ``isbl.yaml``, ``catpow.yaml``) inside the package. A
recipe's YAML includes them with hyperpyyaml's ``!include:<path>``, where the
path is relative to the including YAML file (or absolute; no variables). So
put them next to your recipe once, then include them by a relative path::

    python -m hardmine.fragments --copy hparams/mining    # copies the *.yaml files
    python -m hardmine.fragments --path                   # prints the installed folder
    ln -s "$(python -m hardmine.fragments --path)" hparams/mining   # or link it

and in ``hparams/train.yaml``::

    batch_size: 8
    mining_sampler: !include:mining/isbl.yaml
        batch_size: !ref <batch_size>

A copy stays as it is when hardmine is upgraded (``--copy`` again to take
the new defaults); a link always follows the installed version. README
section "Mining from your own recipe" has a complete example.

Example
-------
>>> import os, tempfile
>>> sorted(os.listdir(path())) == sorted(FRAGMENTS)
True
>>> with tempfile.TemporaryDirectory() as tmp:
...     written = copy(os.path.join(tmp, "mining"))
...     sorted(os.path.basename(p) for p in written)
['catpow.yaml', 'isbl.yaml', 'loss_limit.yaml', 'reweight.yaml', 'threshold.yaml']
"""

import argparse
import filecmp
import os
import shutil
import sys

__all__ = ["FRAGMENTS", "path", "copy", "main"]

#: The fragment files, by the object each one builds.
FRAGMENTS = {
    "threshold.yaml": "threshold_filter: hardmine.threshold.ThresholdFilter",
    "loss_limit.yaml": "loss_limit: hardmine.loss_limit.LossLimit",
    "reweight.yaml": "reweighting: hardmine.reweighting.SoftmaxReweighting",
    "isbl.yaml": "mining_sampler: hardmine.isbl.ISBLSampler",
    "catpow.yaml": "mining_sampler: hardmine.catpow.CategoryDatasetPowerSampler",
}


def path():
    """The folder holding the installed fragments (an absolute path).

    Returns
    -------
    str

    Example
    -------
    >>> os.path.isfile(os.path.join(path(), "isbl.yaml"))
    True
    """
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "hparams")


def copy(dest, force=False):
    """Copy every fragment into the folder ``dest`` (created if needed).

    Arguments
    ---------
    dest : str
        Target folder, e.g. ``<your recipe>/hparams/mining``.
    force : bool
        Overwrite fragments that differ from the installed ones (e.g. an
        older copy). Without it such a file is an error; identical files are
        left as they are.

    Returns
    -------
    list of str
        The paths of the fragments in ``dest``.

    Raises
    ------
    FileExistsError
        A file in ``dest`` has a fragment's name but other content, and
        ``force`` is False (nothing is copied then).

    Example
    -------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     _ = copy(tmp)
    ...     with open(os.path.join(tmp, "isbl.yaml"), "a") as f:
    ...         _ = f.write("# my edit\\n")
    ...     try:
    ...         copy(tmp)
    ...     except FileExistsError as err:
    ...         print(str(err).split(":")[0])
    ...     _ = copy(tmp, force=True)
    ...     filecmp.cmp(os.path.join(tmp, "isbl.yaml"), os.path.join(path(), "isbl.yaml"))
    isbl.yaml differs from the installed fragment
    True
    """
    source = path()
    dest = os.fspath(dest)
    if os.path.exists(dest) and not os.path.isdir(dest):
        raise NotADirectoryError(f"{dest} exists and is not a folder")
    if not force:
        for name in FRAGMENTS:
            target = os.path.join(dest, name)
            if os.path.exists(target) and not filecmp.cmp(
                target, os.path.join(source, name), shallow=False
            ):
                raise FileExistsError(
                    f"{name} differs from the installed fragment: {target} "
                    "(give force=True / --force to overwrite it)"
                )
    os.makedirs(dest, exist_ok=True)
    written = []
    for name in FRAGMENTS:
        target = os.path.join(dest, name)
        shutil.copyfile(os.path.join(source, name), target)
        written.append(target)
    return written


def main(argv=None):
    """Command line: ``--path`` prints the folder, ``--copy DEST`` copies the files."""
    parser = argparse.ArgumentParser(
        prog="python -m hardmine.fragments",
        description="The mining YAML fragments installed with hardmine: print their "
        "folder, or copy them next to your recipe so that its YAML can "
        "!include:<relative path> them.",
    )
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument(
        "--path", action="store_true", help="print the installed fragments' folder"
    )
    group.add_argument("--copy", metavar="DEST", help="copy the fragments into DEST")
    group.add_argument(
        "--list", action="store_true", help="list the fragments and what they build"
    )
    parser.add_argument(
        "--force", action="store_true", help="with --copy: overwrite changed files"
    )
    args = parser.parse_args(argv)
    if args.path:
        print(path())
    elif args.list:
        for name, builds in FRAGMENTS.items():
            print(f"{name:16} {builds}")
    else:
        try:
            written = copy(args.copy, force=args.force)
        except OSError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        for target in written:
            print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
