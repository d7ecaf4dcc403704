"""Choose a recipe's training batch sampler with one command-line handle.

hyperpyyaml cannot pick a class from a string, so a recipe YAML describes
every sampler it offers (each a ``!name:`` factory from a fragment of
``hparams/``) and lets :func:`choose_sampler` return the one its ``sampler``
handle names, as the ``mining_sampler`` entry that
:class:`hardmine.brain.HardMiningBrain` reads::

    sampler: null  # null (or none): the recipe's ordinary loader | isbl | catpow
    mining_sampler: !apply:hardmine.sampler_choice.choose_sampler
        kind: !ref <sampler>
        isbl: !include:../../../../hparams/isbl.yaml
            batch_size: !ref <batch_size>
        catpow: !include:../../../../hparams/catpow.yaml
            batch_bins: !ref <catpow_batch_bins>
            category_field: !ref <catpow_category_field>

so ``python train.py hparams/convtasnet.yaml --sampler isbl`` trains with the
ISBL sampler without a YAML file of its own. The separation recipes also
pass ``dynamic_mixing: !ref <dynamic_mixing>``: with dynamic mixing on, the
training mixtures are new every epoch, so ``isbl`` becomes ISBL over the
sources (:class:`hardmine.source_sampler.SourceSampler`, with the same
options) and ``catpow`` is refused. The choice is made while the
YAML file loads, so a bad ``--sampler`` stops the run before anything else;
each sampler checks its own fields when the Brain builds it on the training
set.

Example
-------
>>> import functools
>>> isbl = functools.partial(dict, alpha=0.75)  # stands for a !name: factory
>>> choose_sampler("isbl", isbl=isbl) is isbl
True
>>> choose_sampler(None, isbl=isbl) is None
True
>>> choose_sampler("foo", isbl=isbl)
Traceback (most recent call last):
...
hardmine.validation.ConfigError: sampler: must be one of 'none', 'isbl', 'catpow', got 'foo'
>>> choose_sampler("isbl", isbl=isbl, dynamic_mixing=True).func.__name__
'SourceSampler'
"""

from hardmine.validation import ConfigError, check_choice

__all__ = ["SAMPLER_KINDS", "CHOICE_TAG", "choose_sampler", "saved_choice"]

#: Values of the ``sampler`` handle (``null`` reads as ``none``).
SAMPLER_KINDS = ("none", "isbl", "catpow")

#: Tag of the choice in a recipe YAML (and in a run's saved hyperparams.yaml),
#: as a plain YAML reader such as :mod:`hardmine.plainyaml` shows it.
CHOICE_TAG = "apply:hardmine.sampler_choice.choose_sampler"


def _is_none(kind):
    return kind is None or (isinstance(kind, str) and kind.strip().lower() == "none")


def choose_sampler(kind, isbl=None, catpow=None, dynamic_mixing=False):
    """Return the sampler factory named by ``kind``, or None for no sampler.

    Arguments
    ---------
    kind : str or None
        ``None`` or ``"none"``: no mining sampler (the recipe's ordinary
        loader); ``"isbl"``: :class:`hardmine.isbl.ISBLSampler`;
        ``"catpow"``: :class:`hardmine.catpow.CategoryDatasetPowerSampler`.
    isbl, catpow : callable, optional
        The factories the recipe offers, called later with the training set.
    dynamic_mixing : bool
        Whether the training set is made by dynamic mixing: ``"isbl"`` then
        gives a :class:`hardmine.source_sampler.SourceSampler` factory with
        the ISBL entry's options, ``"catpow"`` is an error.

    Returns
    -------
    callable or None

    Raises
    ------
    ConfigError
        Naming ``sampler``, for an unknown kind or one the recipe does not
        offer.
    """
    if _is_none(kind):
        return None
    check_choice("sampler", kind, SAMPLER_KINDS)
    factory = {"isbl": isbl, "catpow": catpow}[kind]
    if factory is None:
        raise ConfigError("sampler", f"this recipe offers no {kind!r} sampler")
    if not callable(factory):
        raise ConfigError(
            "sampler",
            f"the {kind!r} entry must be a sampler factory (a !name: entry such as "
            f"hparams/{kind}.yaml), got {factory!r}",
        )
    if not isinstance(dynamic_mixing, bool):
        raise ConfigError(
            "dynamic_mixing", f"must be True or False, got {dynamic_mixing!r}"
        )
    if dynamic_mixing:
        if kind == "catpow":
            raise ConfigError(
                "sampler",
                "catpow draws stored mixtures by category, and with dynamic_mixing: "
                "True every training mixture is new; use --sampler isbl (ISBL over "
                "the sources) or none",
            )
        from hardmine.source_sampler import source_sampler_factory

        return source_sampler_factory(factory)
    return factory


def saved_choice(entry):
    """The sampler entry a ``mining_sampler`` choice picks, read without building.

    For tools that read a run's saved ``hyperparams.yaml`` as plain YAML,
    where a tagged node has ``tag`` and ``value`` attributes
    (:class:`hardmine.plainyaml.Tagged`) and references are resolved.

    Arguments
    ---------
    entry : object
        The ``mining_sampler`` entry as read.

    Returns
    -------
    object
        For a :data:`CHOICE_TAG` entry, its ``isbl`` or ``catpow`` entry as
        chosen by ``kind`` (None for no sampler); any other entry unchanged.

    Example
    -------
    >>> from types import SimpleNamespace as Node
    >>> isbl = Node(tag="name:hardmine.isbl.ISBLSampler", value={"alpha": 0.5})
    >>> choice = Node(tag=CHOICE_TAG, value={"kind": "isbl", "isbl": isbl})
    >>> saved_choice(choice) is isbl and saved_choice(isbl) is isbl
    True
    >>> saved_choice(Node(tag=CHOICE_TAG, value={"kind": None, "isbl": isbl})) is None
    True
    """
    if getattr(entry, "tag", None) != CHOICE_TAG or not isinstance(entry.value, dict):
        return entry
    kind = entry.value.get("kind")
    return None if _is_none(kind) else entry.value.get(kind)
