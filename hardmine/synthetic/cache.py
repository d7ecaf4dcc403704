"""Generate an embedded data set once and cache it, safely under concurrency.

Every ``default_*`` data set of the recipes (:func:`hardmine.synthetic.layouts.default_wsj0mix`,
:func:`hardmine.synthetic.gsc.default_gsc`, ...) goes through
:func:`cached_dataset`:

* the set lives in ``<cache>/<name>``, where ``<cache>`` is the ``cache_dir``
  argument, else ``$HARDMINE_CACHE``, else ``~/.cache/hardmine``;
* a marker file inside it records what it was generated from (the ``spec``);
  a set whose marker matches is used as it is, without locking;
* otherwise one process generates it: an exclusive file lock
  (``<cache>/<name>.lock``) makes every other caller (DDP ranks, parallel
  test runs, two recipes started together) wait, and then find the finished
  set instead of generating it again;
* the set is written into a temporary sibling folder (``<cache>/.<name>-*``),
  the marker last, and renamed into place: an interrupted generation leaves
  no folder that looks complete, and a reader never sees a half-written set.

Example
-------
>>> import os, tempfile
>>> def generate(root):
...     with open(os.path.join(root, "data.txt"), "w") as f:
...         _ = f.write("42")
>>> with tempfile.TemporaryDirectory() as tmp:
...     root = cached_dataset("toy", generate, {"version": 1}, cache_dir=tmp)
...     again = cached_dataset("toy", lambda root: 1 / 0, {"version": 1}, cache_dir=tmp)
...     root == again, sorted(os.listdir(root)), sorted(os.listdir(tmp))
(True, ['data.txt', 'hardmine-dataset.json'], ['toy', 'toy.lock'])
"""

import contextlib
import json
import logging
import os
import shutil
import tempfile
import time

from hardmine.validation import ConfigError, check_choice

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no lock, the rename still protects
    fcntl = None

__all__ = ["cache_base", "cached_dataset", "MARKER"]

logger = logging.getLogger(__name__)

#: Default name of the marker file written inside a generated set.
MARKER = "hardmine-dataset.json"


def cache_base(cache_dir=None):
    """The folder holding the cached sets.

    Arguments
    ---------
    cache_dir : str, optional
        Wins when given.

    Returns
    -------
    str
        ``cache_dir``, else ``$HARDMINE_CACHE``, else ``~/.cache/hardmine``.

    Example
    -------
    >>> cache_base("/data/cache")
    '/data/cache'
    """
    if cache_dir is not None:
        return os.fspath(cache_dir)
    env = os.environ.get("HARDMINE_CACHE")
    if env:
        return env
    return os.path.join(os.path.expanduser("~"), ".cache", "hardmine")


def _read_marker(path):
    """The marker's content, or None when it is missing or unreadable."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def _locked(path):
    with open(path, "w") as handle:
        if fcntl is not None:
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(handle, fcntl.LOCK_UN)


def _remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def cached_dataset(
    name,
    generate,
    spec,
    cache_dir=None,
    marker=MARKER,
    on_mismatch="rebuild",
    description=None,
):
    """Return ``<cache>/<name>``, generating it first if it is not there yet.

    Arguments
    ---------
    name : str
        Folder name of the set in the cache.
    generate : callable
        ``generate(folder)`` writes the set into ``folder`` (an empty folder
        that exists already).
    spec : dict
        What the set is generated from (generator version, sizes, seed ...),
        JSON-serialisable; it is written to the marker file, and a cached set
        is used only if its marker holds the same.
    cache_dir : str, optional
        Folder holding the cached sets (see :func:`cache_base`).
    marker : str
        Name of the marker file inside the set.
    on_mismatch : str
        What to do with a cached set whose marker holds another spec:
        ``"rebuild"`` replaces it; ``"error"`` raises a ConfigError (a set
        the user generated with other arguments is not silently discarded).
        A set without a readable marker (an interrupted copy) is always
        rebuilt.
    description : str, optional
        Shown in the log (default: ``name``).

    Returns
    -------
    str
        The set's folder.

    Raises
    ------
    ConfigError
        For a mismatching set with ``on_mismatch="error"``.
    """
    check_choice("on_mismatch", on_mismatch, ("rebuild", "error"))
    description = description or name
    base = cache_base(cache_dir)
    root = os.path.join(base, name)
    marker_path = os.path.join(root, marker)
    expected = json.loads(json.dumps(spec, sort_keys=True))

    def usable():
        found = _read_marker(marker_path)
        if found == expected:
            return True
        if found is not None and on_mismatch == "error":
            raise ConfigError(
                "data_folder",
                f"the cached set {root} was made with {found}, not {expected}; "
                "delete it or set HARDMINE_CACHE to another folder",
            )
        return False

    if usable():
        logger.info("Using cached %s at %s", description, root)
        return root
    os.makedirs(base, exist_ok=True)
    with _locked(os.path.join(base, f"{name}.lock")):
        if usable():  # another process generated it while this one waited
            logger.info("Using cached %s at %s (just generated)", description, root)
            return root
        logger.info("Generating the %s in %s", description, root)
        start = time.perf_counter()
        tmp = tempfile.mkdtemp(prefix=f".{name}-", dir=base)
        try:
            generate(tmp)
            with open(os.path.join(tmp, marker), "w", encoding="utf-8") as handle:
                json.dump(expected, handle, indent=1, sort_keys=True)
            if os.path.lexists(root):
                logger.info("Removing the stale or incomplete set at %s", root)
                _remove(root)
            os.rename(tmp, root)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        logger.info(
            "%s ready in %.1f s: %s",
            description[:1].upper() + description[1:],
            time.perf_counter() - start,
            root,
        )
    return root
