"""Temperature schedules for softmax gradient reweighting.

``s`` is the schedule's clock: the 0-based epoch (``unit="epoch"``) or the
number of optimizer steps taken (``unit="step"``). With ``T0 = temperature``,
``Tf = temperature_final`` and ``k = rate``:

- ``constant``: ``T = T0``
- ``linear``:   ``T = T0 + k * s``
- ``log``:      ``T = T0 + k * log(1 + s)``
- ``inverse``:  ``T = Tf + (T0 - Tf) / (1 + k * s)`` (approaches ``Tf``)

When ``Tf`` is given, ``T`` never passes it: the schedules run from ``T0``
towards ``Tf`` and stay there. The annealed temperatures of Tzinis et al.
(2021) are instances, e.g. ``max(2, 20 - (epoch + 1))`` is ``linear`` with
``T0 = 19, k = -1, Tf = 2``.
"""

import math

from hardmine.validation import ConfigError, check_choice, check_number

__all__ = ["TemperatureSchedule", "SCHEDULES", "UNITS"]

SCHEDULES = ("constant", "linear", "log", "inverse")
UNITS = ("epoch", "step")


class TemperatureSchedule:
    """A temperature as a function of training progress.

    Arguments
    ---------
    temperature : float
        ``T0``, the temperature at the start (``> 0``).
    temperature_final : float, optional
        ``Tf``, where the schedule ends (``> 0``); required by ``inverse`` and
        by decreasing ``linear``/``log`` schedules.
    schedule : str
        One of ``constant``, ``linear``, ``log``, ``inverse``.
    rate : float
        ``k``, the speed of the schedule.
    unit : str
        ``epoch`` or ``step``.

    Example
    -------
    >>> s = TemperatureSchedule(19.0, temperature_final=2.0, schedule="linear", rate=-1.0)
    >>> [s.at(epoch=e) for e in (1, 2, 18, 30)]
    [19.0, 18.0, 2.0, 2.0]
    >>> TemperatureSchedule(1.0, schedule="log", rate=2.0, unit="step").at(step=0)
    1.0
    """

    def __init__(
        self,
        temperature=2.0,
        temperature_final=None,
        schedule="constant",
        rate=1.0,
        unit="epoch",
    ):
        self.t0 = check_number("temperature", temperature, minimum=0.0, strict=True)
        self.schedule = check_choice("schedule", schedule, SCHEDULES)
        self.rate = check_number("rate", rate)
        self.unit = check_choice("unit", unit, UNITS)
        if temperature_final is not None:
            temperature_final = check_number(
                "temperature_final", temperature_final, minimum=0.0, strict=True
            )
        self.t_final = temperature_final
        if self.schedule == "inverse":
            if self.t_final is None:
                raise ConfigError("temperature_final", "the inverse schedule needs it")
            if self.rate < 0:
                raise ConfigError(
                    "rate", f"must be >= 0 for the inverse schedule, got {self.rate}"
                )
        if (
            self.schedule in ("linear", "log")
            and self.rate < 0
            and self.t_final is None
        ):
            raise ConfigError(
                "temperature_final",
                "a decreasing schedule (rate < 0) needs it as its floor",
            )

    def growing(self):
        """Whether the temperature rises over training."""
        if self.schedule == "constant" or self.rate == 0:
            return False
        if self.schedule == "inverse":
            return self.t_final > self.t0
        return self.rate > 0 and (self.t_final is None or self.t_final > self.t0)

    def at(self, epoch=1, step=0):
        """The temperature at a 1-based ``epoch`` / 0-based optimizer ``step``."""
        s = max(epoch - 1, 0) if self.unit == "epoch" else max(step, 0)
        if self.schedule == "constant":
            return self.t0
        if self.schedule == "linear":
            t = self.t0 + self.rate * s
        elif self.schedule == "log":
            t = self.t0 + self.rate * math.log1p(s)
        else:
            return self.t_final + (self.t0 - self.t_final) / (1.0 + self.rate * s)
        if self.t_final is not None:
            lo, hi = sorted((self.t0, self.t_final))
            t = min(max(t, lo), hi)
        return t

    def __repr__(self):
        return (
            f"TemperatureSchedule({self.schedule}, T0={self.t0}, "
            f"Tf={self.t_final}, rate={self.rate}, unit={self.unit})"
        )
