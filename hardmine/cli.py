"""Recipes' command lines: a bad setting stops the run with one line, no traceback.

A recipe's ``train.py`` runs its main flow inside :func:`exit_on_config_error`::

    if __name__ == "__main__":
        with exit_on_config_error(sys.argv[1:]):
            main(sys.argv[1:])

A :class:`~hardmine.validation.ConfigError` raised anywhere in the flow (while
hyperpyyaml builds the objects, when the Brain builds the mining sampler
before the first step, ...) then ends the run with exit status 2 and one line
on stderr that names the command-line handle the user gave and the field it
feeds::

    error: --isbl_alpha -1 (mining_sampler field alpha): must be >= 0.0, got -1.0

The error names the field as the YAML fragment spells it (``alpha``); the
handle is found by reading the recipe YAML, where recipes forward their
handles into the fragments they include::

    isbl_alpha: 0.75
    mining_sampler: !include:../../../../hparams/isbl.yaml
        alpha: !ref <isbl_alpha>

When several handles could feed the field, the one given on the command line
wins; a field that no handle feeds is printed alone
(``error: reweight_mode: must be one of ...``). Under torchrun every rank
exits with status 2 and rank 0 prints the line.

A :class:`~hardmine.tasks.prep_report.PrepError` (a data preparation run
with ``strict_prep: True`` found bad audio files) ends the run the same way,
with exit status 2 and, instead of one line, its list of every bad file and
why it is bad. Other errors keep their traceback.

Importing this module also drops SpeechBrain's import-time notice
``torchvision is not available - cannot save figures`` (about image samples
no recipe saves), so a recipe's stderr carries only what matters; the recipes
import it before SpeechBrain for that reason.

Example
-------
>>> import os, tempfile
>>> folder = tempfile.mkdtemp()
>>> recipe = os.path.join(folder, "recipe.yaml")
>>> with open(recipe, "w") as fout:
...     _ = fout.write(
...         "isbl_alpha: 0.75\\n"
...         "mining_sampler: !include:isbl.yaml\\n"
...         "    alpha: !ref <isbl_alpha>\\n"
...     )
>>> err = ConfigError("alpha", "must be >= 0.0, got -1.0")
>>> describe(err, [recipe, "--isbl_alpha", "-1"])
'error: --isbl_alpha -1 (mining_sampler field alpha): must be >= 0.0, got -1.0'
>>> describe(ConfigError("mode", "must be one of 'uniform'"), [recipe])
"error: mode: must be one of 'uniform'"
"""

import contextlib
import logging
import os
import re
import shlex
import sys

from hardmine.plainyaml import Tagged, read_document
from hardmine.tasks.prep_report import PrepError
from hardmine.validation import ConfigError

__all__ = [
    "EXIT_CONFIG_ERROR",
    "exit_on_config_error",
    "find_config_error",
    "find_prep_error",
    "describe",
    "command_line_values",
    "forwarded_fields",
    "field_handles",
]

#: Exit status of a run stopped by a configuration error (argparse's usage error).
EXIT_CONFIG_ERROR = 2

_REF = re.compile(r"\s*<([A-Za-z_]\w*)>\s*")


class _DropTorchvisionNotice(logging.Filter):
    def filter(self, record):
        return not str(record.msg).startswith("torchvision is not available")


logging.getLogger("speechbrain.utils.train_logger").addFilter(_DropTorchvisionNotice())


def find_config_error(exc):
    """Return the ConfigError ``exc`` is or wraps (``__cause__``/``__context__``).

    Arguments
    ---------
    exc : BaseException

    Returns
    -------
    ConfigError or None

    Example
    -------
    >>> try:
    ...     try:
    ...         raise ConfigError("eps", "must be > 0.0, got 0.0")
    ...     except ConfigError as inner:
    ...         raise RuntimeError("while building mining_sampler") from inner
    ... except RuntimeError as outer:
    ...     find_config_error(outer).field
    'eps'
    >>> find_config_error(KeyError("x")) is None
    True
    """
    return _find_in_chain(exc, ConfigError)


def find_prep_error(exc):
    """Return the PrepError ``exc`` is or wraps (``__cause__``/``__context__``).

    Example
    -------
    >>> try:
    ...     try:
    ...         raise PrepError({"/d/a.wav": "zero-length file"})
    ...     except PrepError as inner:
    ...         raise RuntimeError("in run_on_main") from inner
    ... except RuntimeError as outer:
    ...     find_prep_error(outer).entries
    {'/d/a.wav': 'zero-length file'}
    """
    return _find_in_chain(exc, PrepError)


def _find_in_chain(exc, kind):
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, kind):
            return exc
        seen.add(id(exc))
        if exc.__cause__ is not None:
            exc = exc.__cause__
        elif not exc.__suppress_context__:
            exc = exc.__context__
        else:
            exc = None
    return None


def command_line_values(argv):
    """The handles given on a recipe's command line, with their text as typed.

    Reads the options the way ``speechbrain.parse_arguments`` turns them into
    overrides: ``--name value`` or ``--name=value``; a flag has the value None.

    Arguments
    ---------
    argv : list of str
        The command line after the script: the hparams file, then options.

    Returns
    -------
    dict
        Handle name -> value text, in command-line order.

    Example
    -------
    >>> command_line_values(["r.yaml", "--isbl_alpha", "-1", "--lr=0.1", "--noprogressbar"])
    {'isbl_alpha': '-1', 'lr': '0.1', 'noprogressbar': None}
    """
    values, key = {}, None
    for arg in argv:
        if arg.startswith("--"):
            key, sep, value = arg[2:].partition("=")
            values[key] = value if sep else None
            if sep:
                key = None
        elif key is not None:
            values[key] = arg if values[key] is None else f"{values[key]} {arg}"
    return values


def _hparams_file(argv):
    if argv and not argv[0].startswith("-"):
        return argv[0]
    return next((a for a in argv if a.endswith((".yaml", ".yml"))), None)


def forwarded_fields(hparams_file):
    """Where a recipe YAML sets a field from a handle: ``field: !ref <handle>``.

    Arguments
    ---------
    hparams_file : str
        The recipe's YAML file (read as plain YAML by
        :func:`hardmine.plainyaml.read_document`; nothing is built).

    Returns
    -------
    list of (str, str, str)
        ``(field, handle, owner)`` in file order: ``owner.field`` is set by
        ``!ref <handle>``; ``owner`` is the dotted path of the enclosing keys,
        ``""`` at the top level. Every top-level key is also its own handle,
        ``(key, key, "")``. Empty if the file cannot be read.
    """
    try:
        root = read_document(hparams_file)
    except (OSError, ConfigError):
        return []
    found = []

    def walk(node, path):
        if isinstance(node, Tagged):
            node = node.value
        if isinstance(node, list):
            for item in node:
                walk(item, path)
        if not isinstance(node, dict):
            return
        for key, value in node.items():
            if isinstance(key, (dict, list, tuple, Tagged)):
                continue
            key = str(key)
            if not path:
                found.append((key, key, ""))
            if (
                isinstance(value, Tagged)
                and value.tag == "ref"
                and isinstance(value.value, str)
            ):
                match = _REF.fullmatch(value.value)
                if match:
                    found.append((key, match.group(1), ".".join(path)))
            walk(value, [*path, key])

    walk(root, [])
    return found


def field_handles(field, forwarded):
    """The handles that can set ``field``, nearest first, each with its owners.

    A handle is the field itself at the top level, a handle forwarded into
    the field (``owner: {field: !ref <handle>}``), or a top-level handle
    another of these refers to (``max_grad_norm: !ref <clip_grad_norm>``).

    Arguments
    ---------
    field : str
        Field name of a ConfigError.
    forwarded : list of (str, str, str)
        From :func:`forwarded_fields`.

    Returns
    -------
    dict
        Handle -> list of the owners whose ``field`` it feeds (``[]`` for a
        top-level handle), nearest handles first.
    """
    handles = {}
    for key, handle, owner in forwarded:
        if key == field and not (owner == "" and handle != field):
            handles.setdefault(handle, [])
            if owner and owner not in handles[handle]:
                handles[handle].append(owner)
    # Top-level aliases: field (or a handle found so far) = !ref <other>.
    frontier = list(handles)
    while frontier:
        name = frontier.pop(0)
        for key, handle, owner in forwarded:
            if key == name and owner == "" and handle != key:
                if handle not in handles:
                    handles[handle] = list(handles.get(name, []))
                    frontier.append(handle)
    return handles


def _one_line(text):
    return " ".join(str(text).split())


def describe(err, argv):
    """The one-line message for a ConfigError raised by a recipe run with ``argv``.

    Arguments
    ---------
    err : ConfigError
    argv : list of str
        The recipe's command line after the script (hparams file first).

    Returns
    -------
    str
        ``error: --<handle> <value> (<owner> field <field>): <reason>`` when a
        command-line handle feeds the field; ``error: <field>: <reason>`` when
        no handle can be traced.
    """
    field = str(getattr(err, "field", ""))
    reason = getattr(err, "reason", None)
    if reason is None:
        reason = str(err).removeprefix(f"{field}: ")
    reason = _one_line(reason)
    given = command_line_values(argv)
    hparams_file = _hparams_file(argv)
    handles = field_handles(
        field, forwarded_fields(hparams_file) if hparams_file else []
    )
    if field in given and field not in handles:
        # A SpeechBrain run option (--optimizer_step_limit) is no YAML key.
        handles = {field: [], **handles}
    passed = [h for h in handles if h in given]
    if passed:
        handle = passed[0]
    elif len(handles) == 1:
        handle = next(iter(handles))
    else:
        return f"error: {_one_line(field)}: {reason}"
    if handle in given:
        value = given[handle]
        lead = f"--{handle}" if value is None else f"--{handle} {shlex.quote(value)}"
    else:
        lead = handle
    if handle != field:
        owners = handles[handle]
        where = f"{' and '.join(owners)} field" if owners else "field"
        lead = f"{lead} ({where} {field})"
    return f"error: {lead}: {reason}"


def _is_main_rank():
    return os.environ.get("RANK", "0") in ("", "0")


@contextlib.contextmanager
def exit_on_config_error(argv, stream=None):
    """Turn a ConfigError raised inside the block into one line and exit status 2.

    A PrepError is printed whole (every bad file on a line of its own) and
    exits with the same status.

    Arguments
    ---------
    argv : list of str
        The recipe's command line after the script (hparams file first).
    stream : file, optional
        Where the line goes (default ``sys.stderr``).

    Raises
    ------
    SystemExit
        With status :data:`EXIT_CONFIG_ERROR`, for a ConfigError or a
        PrepError (also one chained under another exception). Other
        exceptions pass unchanged.
    """
    try:
        yield
    except Exception as exc:
        err = find_config_error(exc)
        if err is not None:
            message = describe(err, argv)
        else:
            prep = find_prep_error(exc)
            if prep is None:
                raise
            message = f"error: {prep}"
        if _is_main_rank():
            out = stream if stream is not None else sys.stderr
            print(message, file=out, flush=True)
        raise SystemExit(EXIT_CONFIG_ERROR) from None
