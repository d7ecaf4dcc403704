"""Checks for configuration fields, raising errors that name the field.

Every mining mechanism validates its own fields when it is built, so a bad
value in a YAML file or on the command line fails before training starts.

Example
-------
>>> check_number("isbl_alpha", 0.75, minimum=0.0)
0.75
>>> check_number("isbl_eps", 0.0, minimum=0.0, strict=True)
Traceback (most recent call last):
...
hardmine.validation.ConfigError: isbl_eps: must be > 0.0, got 0.0
"""

import math
import numbers

__all__ = ["ConfigError", "check_number", "check_int", "check_choice"]


class ConfigError(ValueError):
    """A configuration field has a value that cannot work.

    Arguments
    ---------
    field : str
        Name of the offending field, as written in the YAML file.
    message : str
        What is wrong with it (kept as ``reason``; ``str(error)`` is
        ``"<field>: <message>"``).
    """

    def __init__(self, field, message):
        self.field = field
        self.reason = message
        super().__init__(f"{field}: {message}")


def check_number(field, value, minimum=None, maximum=None, strict=False):
    """Return ``value`` as a float after checking that it is a finite number.

    Arguments
    ---------
    field : str
        Field name used in the error message.
    value : object
        The value to check (bools and strings are rejected).
    minimum, maximum : float, optional
        Bounds, inclusive unless ``strict``.
    strict : bool
        Whether the bounds are exclusive.

    Returns
    -------
    float
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(field, f"must be a number, got {value!r}")
    value = float(value)
    if math.isnan(value):
        raise ConfigError(field, "must be a number, got NaN")
    if minimum is not None and (value <= minimum if strict else value < minimum):
        raise ConfigError(
            field, f"must be {'>' if strict else '>='} {minimum}, got {value}"
        )
    if maximum is not None and (value >= maximum if strict else value > maximum):
        raise ConfigError(
            field, f"must be {'<' if strict else '<='} {maximum}, got {value}"
        )
    return value


def check_int(field, value, minimum=None):
    """Return ``value`` as an int after checking it is a whole number >= minimum."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(field, f"must be a whole number, got {value!r}")
    if minimum is not None and value < minimum:
        raise ConfigError(field, f"must be >= {minimum}, got {value}")
    return int(value)


def check_choice(field, value, choices):
    """Return ``value`` after checking it is one of ``choices``."""
    if value not in choices:
        options = ", ".join(repr(c) for c in choices)
        raise ConfigError(field, f"must be one of {options}, got {value!r}")
    return value
