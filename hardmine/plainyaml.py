"""Read a hyperpyyaml file as plain YAML, without building anything.

Several helpers only need to *look* at a recipe's YAML file: which fields it
has, what a field refers to, which sampler a saved run used. Loading it with
hyperpyyaml would import and build every object (models, samplers ...) and
fail on ``!PLACEHOLDER`` fields, so they read it with the safe YAML loader
below instead. A tagged node (``!new:``, ``!name:``, ``!ref``, ``!include:``,
``!PLACEHOLDER`` ...) is kept as a :class:`Tagged` value holding its tag and
its plain content, or read as ``None`` when only the plain fields matter.

Users: :mod:`hardmine.cli` (which handle feeds which field),
:mod:`hardmine.tools.hardest` and :mod:`hardmine.tools.compare` (a run's
saved ``hyperparams.yaml``), :mod:`hardmine.tools.variants` (the epoch field)
and :func:`hardmine.tasks.separation.read_plain_fields`.

Example
-------
>>> import os, tempfile
>>> with tempfile.TemporaryDirectory() as tmp:
...     path = os.path.join(tmp, "recipe.yaml")
...     with open(path, "w") as f:
...         _ = f.write(
...             "seed: 3\\n"
...             "batch_size: !PLACEHOLDER\\n"
...             "mining_sampler: !include:isbl.yaml\\n"
...             "    alpha: !ref <isbl_alpha>\\n"
...         )
...     fields = read_fields(path)
...     plain = read_fields(path, tags=False)
>>> fields["seed"], fields["mining_sampler"]
(3, Tagged('include:isbl.yaml', {'alpha': Tagged('ref', '<isbl_alpha>')}))
>>> plain
{'seed': 3, 'batch_size': None, 'mining_sampler': None}
"""

import yaml
from ruamel.yaml import resolver as ruamel_resolver

from hardmine.validation import ConfigError

__all__ = ["Tagged", "TagLoader", "PlainLoader", "read_document", "read_fields"]


class Tagged:
    """A tagged hyperpyyaml node read without building it.

    Attributes
    ----------
    tag : str
        The tag without its ``!`` (``"name:hardmine.isbl.ISBLSampler"``,
        ``"ref"``, ``"PLACEHOLDER"``).
    value : object
        The node's plain content: a dict, a list or a string.

    Example
    -------
    >>> Tagged("ref", "<seed>") == Tagged("ref", "<seed>")
    True
    """

    def __init__(self, tag, value):
        self.tag = tag
        self.value = value

    def __eq__(self, other):
        if not isinstance(other, Tagged):
            return NotImplemented
        return (self.tag, self.value) == (other.tag, other.value)

    __hash__ = None

    def __repr__(self):
        return f"Tagged({self.tag!r}, {self.value!r})"


class TagLoader(yaml.SafeLoader):
    """Safe YAML loader that keeps every ``!tag`` node as a :class:`Tagged` value.

    Plain scalars are typed as hyperpyyaml types them (YAML 1.2, ruamel.yaml),
    not as PyYAML's YAML 1.1 does: ``yes``, ``no``, ``on`` and ``off`` (four
    Speech Commands keywords) stay strings, ``1e-6`` is a float, ``1:30`` a
    string and ``017`` the integer 17.

    Example
    -------
    >>> yaml.load("{yes: 1e-6, off: 017, t: 1:30, ok: true}", Loader=TagLoader)
    {'yes': 1e-06, 'off': 17, 't': '1:30', 'ok': True}
    """

    #: Whether tagged nodes are kept (True) or read as None (False).
    keep_tags = True


class PlainLoader(TagLoader):
    """Safe YAML loader that reads every ``!tag`` node as ``None``."""

    keep_tags = False


def _construct_tagged(loader, suffix, node):
    if not loader.keep_tags:
        return None
    if isinstance(node, yaml.MappingNode):
        value = loader.construct_mapping(node, deep=True)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_scalar(node)
    return Tagged(suffix, value)


TagLoader.add_multi_constructor("!", _construct_tagged)

# ruamel.yaml's own YAML 1.2 table of implicit types (the reader hyperpyyaml
# uses), for the types PyYAML's safe constructor builds.
_TYPES = {f"tag:yaml.org,2002:{t}" for t in ("bool", "float", "int", "null", "merge")}
_TYPES |= {"tag:yaml.org,2002:timestamp", "tag:yaml.org,2002:value"}
TagLoader.yaml_implicit_resolvers = {}
for _versions, _tag, _regexp, _first in ruamel_resolver.implicit_resolvers:
    if (1, 2) in _versions and _tag in _TYPES:
        TagLoader.add_implicit_resolver(_tag, _regexp, _first)


def _construct_int(loader, node):
    """A YAML 1.2 integer: decimal (leading zeros allowed), 0b, 0o or 0x."""
    text = loader.construct_scalar(node).replace("_", "")
    sign = -1 if text.startswith("-") else 1
    text = text.lstrip("+-")
    bases = {"0b": 2, "0o": 8, "0x": 16}
    if text[:2] in bases:
        return sign * int(text[2:], bases[text[:2]])
    return sign * int(text)


TagLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)


def read_document(path, tags=True):
    """The whole YAML document of a hyperpyyaml file, read as plain YAML.

    Arguments
    ---------
    path : str
        A YAML file: a recipe, a run's saved ``hyperparams.yaml``, a fragment
        (whose document is one tagged mapping, ``!name:...`` and its fields).
    tags : bool
        True: tagged values come back as :class:`Tagged` (at any depth);
        False: they come back as ``None``.

    Returns
    -------
    object
        Usually a dict (or a :class:`Tagged` mapping for a fragment).

    Raises
    ------
    ConfigError
        Named after ``path``, when the file is not YAML.
    OSError
        When the file cannot be read.
    """
    loader = TagLoader if tags else PlainLoader
    with open(path, encoding="utf-8") as handle:
        try:
            return yaml.load(handle, Loader=loader)
        except yaml.YAMLError as err:
            raise ConfigError(path, f"is not readable YAML: {err}") from None


def read_fields(path, tags=True):
    """The top-level fields of a hyperpyyaml file, read as plain YAML.

    Arguments
    ---------
    path : str
        A recipe YAML file or a run's saved ``hyperparams.yaml``.
    tags : bool
        True: tagged values come back as :class:`Tagged` (at any depth);
        False: they come back as ``None``.

    Returns
    -------
    dict

    Raises
    ------
    ConfigError
        Named after ``path``, when the file is not YAML or not a mapping.
    OSError
        When the file cannot be read.
    """
    fields = read_document(path, tags)
    if not isinstance(fields, dict):
        raise ConfigError(path, "is not a mapping of fields")
    return fields
