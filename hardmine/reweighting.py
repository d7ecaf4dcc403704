"""Softmax gradient reweighting of the per-example losses of a batch.

After Tzinis, Bralios and Smaragdis, "Unified gradient reweighting for model
biasing with applications to source separation" (ICASSP 2021): the batch loss
is ``sum_i p_i * L_i`` with ``p = softmax(F(L))`` over the batch, ``p``
detached so it steers the gradient without being optimised itself.

Modes (``F`` per example):

- ``uniform``: plain mean (``p_i = 1/B``); the default.
- ``robust``: ``F = L / T``; hard examples weigh more. The paper's code used
  ``T = 2`` on SI-SDR in dB.
- ``curriculum``: ``F = -L / T_t`` with ``T_t`` growing on a schedule, so the
  weights start on easy examples and relax towards uniform.
- ``class_bias``: ``F = gamma * 1[class in favoured]``, the class read from a
  batch field; a favoured example weighs ``exp(gamma)`` times more.

For ``robust`` and ``curriculum`` a ``capacity`` (nats) replaces the fixed
temperature with a :class:`~hardmine.capacity.CapacityController`: ``T`` is
the Lagrange multiplier that keeps ``KL(p || uniform)`` at the capacity. The
controller learns only from batches that are used for a step (the Brain calls
:meth:`SoftmaxReweighting.update_controller` after its skip decision) and
only from batches that can reach the capacity (``log n > C`` for ``n``
weighted examples).
"""

import math

import torch

from hardmine.capacity import CapacityController
from hardmine.schedules import TemperatureSchedule
from hardmine.validation import ConfigError, check_choice, check_number

__all__ = ["SoftmaxReweighting", "MODES", "kl_to_uniform", "effective_sample_size"]

MODES = ("uniform", "robust", "curriculum", "class_bias")


def kl_to_uniform(p):
    """``KL(p || uniform)`` in nats for a probability vector ``p``."""
    n = p.numel()
    return float(torch.special.xlogy(p, p).sum()) + math.log(n)


def effective_sample_size(p):
    """``1 / sum(p^2)``: how many examples the weights effectively use."""
    return float(1.0 / (p.double() ** 2).sum())


def labels_of(batch, field):
    """The per-example class labels of a batch field, as strings."""
    if not hasattr(batch, field):
        raise KeyError(
            f"class_field: the batch has no field {field!r}; the recipe's data "
            "pipeline must output it"
        )
    value = getattr(batch, field)
    value = getattr(value, "data", value)  # PaddedData
    if isinstance(value, torch.Tensor):
        value = value.reshape(value.shape[0], -1)[:, 0].tolist()
    return [str(v) for v in value]


class SoftmaxReweighting:
    """Turn per-example losses into one weighted loss.

    Arguments
    ---------
    mode : str
        ``uniform``, ``robust``, ``curriculum`` or ``class_bias``.
    temperature, temperature_final, schedule, rate, unit
        The temperature and its schedule (see :mod:`hardmine.schedules`).
    capacity : float, optional
        KL capacity in nats; when set (robust/curriculum only), the temperature
        is tuned by dual ascent instead of following the schedule.
    capacity_lr : float
        Learning rate of the capacity controller's optimizer.
    class_field : str, optional
        Batch field with each example's class (class_bias).
    favoured : list, optional
        Classes to favour (class_bias).
    gamma : float
        Log-weight given to favoured classes (class_bias).

    Example
    -------
    >>> losses = torch.tensor([1.0, 2.0, 4.0])
    >>> loss, p = SoftmaxReweighting("robust", temperature=2.0).reduce(losses)
    >>> torch.allclose(p, torch.softmax(losses / 2.0, dim=0))
    True
    >>> loss, p = SoftmaxReweighting("uniform").reduce(losses)
    >>> float(loss), p
    (2.3333332538604736, None)
    """

    def __init__(
        self,
        mode="uniform",
        temperature=2.0,
        temperature_final=None,
        schedule="constant",
        rate=1.0,
        unit="epoch",
        capacity=None,
        capacity_lr=0.1,
        class_field=None,
        favoured=None,
        gamma=3.0,
    ):
        self.mode = check_choice("reweight_mode", mode, MODES)
        self.schedule = TemperatureSchedule(
            temperature, temperature_final, schedule, rate, unit
        )
        self.controller = None
        if capacity is not None:
            if self.mode not in ("robust", "curriculum"):
                raise ConfigError(
                    "capacity",
                    f"applies to the robust and curriculum modes, not {self.mode!r}",
                )
            self.controller = CapacityController(
                capacity, lr=capacity_lr, parametrization="exp"
            )
        if (
            self.mode == "curriculum"
            and self.controller is None
            and not self.schedule.growing()
        ):
            raise ConfigError(
                "schedule",
                "curriculum needs a temperature that grows (linear/log with rate > 0, or "
                "inverse with temperature_final > temperature), or a capacity",
            )
        self.gamma = check_number("gamma", gamma)
        self.class_field = class_field
        self.favoured = set() if favoured is None else {str(c) for c in favoured}
        if self.mode == "class_bias":
            if not class_field or not isinstance(class_field, str):
                raise ConfigError(
                    "class_field",
                    "class_bias needs the name of the batch field holding each example's class",
                )
            if not self.favoured:
                raise ConfigError(
                    "favoured", "class_bias needs at least one class to favour"
                )

    @property
    def active(self):
        """Whether the weights can differ from a plain mean."""
        return self.mode != "uniform"

    def temperature(self, epoch=1, step=0):
        """The temperature in force (the multiplier when a capacity is set)."""
        if self.controller is not None:
            return max(self.controller.beta, 1e-6)
        return self.schedule.at(epoch=epoch, step=step)

    def classes(self, batch):
        """Per-example class labels of ``batch`` (class_bias only)."""
        if self.mode != "class_bias":
            return None
        return labels_of(batch, self.class_field)

    def scores(self, losses, classes=None, epoch=1, step=0):
        """The softmax logits ``F`` for each example."""
        if self.mode == "robust":
            return losses / self.temperature(epoch, step)
        if self.mode == "curriculum":
            return -losses / self.temperature(epoch, step)
        if self.mode == "class_bias":
            favoured = [c in self.favoured for c in classes]
            return self.gamma * torch.tensor(
                favoured, dtype=losses.dtype, device=losses.device
            )
        return torch.zeros_like(losses)

    def reduce(self, losses, classes=None, epoch=1, step=0):
        """Weighted loss and the weights used.

        Arguments
        ---------
        losses : torch.Tensor
            Per-example losses, shape [B], with their graph.
        classes : list of str, optional
            Per-example classes (class_bias).
        epoch, step : int
            Training progress, for scheduled temperatures.

        Returns
        -------
        loss : torch.Tensor
            Scalar ``sum_i p_i L_i`` (the mean in uniform mode).
        weights : torch.Tensor or None
            ``p`` (detached), or None in uniform mode.
        """
        if self.mode == "uniform":
            return losses.mean(), None
        with torch.no_grad():
            p = torch.softmax(
                self.scores(losses.detach().float(), classes, epoch, step), dim=0
            )
        loss = (p.to(losses.dtype) * losses).sum()
        return loss, p

    def reachable(self, n):
        """Whether weights over ``n`` examples can be as concentrated as the capacity."""
        return self.controller is not None and math.log(n) > self.controller.capacity

    def update_controller(self, weights):
        """One dual-ascent step of the temperature on the weights of a used batch.

        Arguments
        ---------
        weights : torch.Tensor or None
            The weights :meth:`reduce` returned, or None when this rank used
            no batch this step. Under torch.distributed every rank calls this
            (the controller averages the KL over ranks).

        Returns
        -------
        bool or None
            None without a controller; else whether this rank's weights could
            reach the capacity (an unreachable batch leaves beta alone).
        """
        if self.controller is None:
            return None
        ok = weights is not None and self.reachable(weights.numel())
        self.controller.step(kl_to_uniform(weights) if ok else None)
        return ok

    def __repr__(self):
        extra = f", capacity={self.controller.capacity}" if self.controller else ""
        return f"SoftmaxReweighting(mode={self.mode!r}, {self.schedule}{extra})"
