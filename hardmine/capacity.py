"""Capacity controller: a Lagrange multiplier that holds a KL term at a capacity.

For a constraint ``KL <= C`` the Lagrangian adds ``beta * (KL - C)`` to the
loss, with ``beta >= 0`` *maximised* while the model minimises. Following the
capacity-constrained formulation of Capacitron (Battenberg et al., 2019),
``beta = softplus(rho)`` and ``rho`` has an optimizer of its own that takes
gradient steps on ``-beta * (KL - C)`` with KL detached: beta grows while the
KL term is above capacity and shrinks while it is below.

In hardmine the controller sets the softmax temperature of the gradient
reweighting. The weights ``p = softmax(L / T)`` are exactly the maximiser of
``E_p[L] - T * KL(p || uniform)``, so the temperature *is* the multiplier of
the constraint ``KL(p || uniform) <= C`` and dual ascent on it keeps the
weights' concentration at ``C`` nats. A temperature is a scale (it must match
the losses' spread, 0.1 for some recipes, 100 for others), so the reweighting
uses ``parametrization="exp"``: ``beta = exp(rho)``, where each optimizer step
changes beta by a factor rather than by an amount, and the controller reaches
its target in about as many steps whatever the scale of the losses.

A batch can only be concentrated so far: over ``n`` examples
``KL(p || uniform) <= log n``. A batch with ``log n <= C`` cannot reach the
capacity whatever the temperature; it carries no information about the
multiplier and :meth:`CapacityController.step` is given ``None`` for it
(counted as unreachable), instead of driving beta towards 0.
"""

import math

import torch
from speechbrain.utils.checkpoints import (
    mark_as_loader,
    mark_as_saver,
    register_checkpoint_hooks,
)

from hardmine import distributed
from hardmine.validation import check_choice, check_number

__all__ = ["CapacityController", "PARAMETRIZATIONS"]

#: How the multiplier ``beta`` is derived from the optimised ``rho``.
PARAMETRIZATIONS = ("softplus", "exp")


@torch.no_grad()
def _inverse_softplus(value):
    return math.log(math.expm1(value))


@register_checkpoint_hooks
class CapacityController(torch.nn.Module):
    """Dual ascent on a multiplier ``beta = softplus(rho)`` for ``KL <= C``.

    Arguments
    ---------
    capacity : float
        The capacity ``C`` in nats (``>= 0``).
    beta_init : float
        Initial multiplier (``> 0``); ``rho`` starts at ``softplus^-1(beta_init)``.
    lr : float
        Learning rate of the multiplier's optimizer.
    optimizer : callable, optional
        ``optimizer(params) -> torch.optim.Optimizer``; Adam with ``lr`` when
        omitted.
    parametrization : str
        ``"softplus"`` (``beta = softplus(rho)``, as in Capacitron) or
        ``"exp"`` (``beta = exp(rho)``: multiplicative steps, for a multiplier
        that is a scale such as a temperature).

    Example
    -------
    >>> ctrl = CapacityController(capacity=0.5, lr=0.1)
    >>> round(ctrl.beta, 4)
    1.0
    >>> ctrl.step(torch.tensor(2.0))  # KL above capacity: beta must grow
    True
    >>> ctrl.beta > 1.0
    True
    >>> penalty = ctrl.penalty(torch.tensor(2.0, requires_grad=True))
    >>> penalty.requires_grad  # gradient flows to the KL term, not to beta
    True
    >>> ctrl.step(None)  # no reachable KL this step: beta stays
    False
    """

    def __init__(
        self,
        capacity,
        beta_init=1.0,
        lr=0.05,
        optimizer=None,
        parametrization="softplus",
    ):
        super().__init__()
        self.parametrization = check_choice(
            "capacity_parametrization", parametrization, PARAMETRIZATIONS
        )
        self.capacity = check_number("capacity", capacity, minimum=0.0)
        beta_init = check_number(
            "capacity_beta_init", beta_init, minimum=0.0, strict=True
        )
        lr = check_number("capacity_lr", lr, minimum=0.0, strict=True)
        start = (
            math.log(beta_init)
            if self.parametrization == "exp"
            else _inverse_softplus(beta_init)
        )
        self.rho = torch.nn.Parameter(torch.tensor(start))
        if optimizer is None:
            self.optimizer = torch.optim.Adam([self.rho], lr=lr)
        else:
            self.optimizer = optimizer([self.rho])
        self.last_kl = float("nan")

    def _beta(self, rho):
        if self.parametrization == "exp":
            return torch.exp(rho)
        return torch.nn.functional.softplus(rho)

    @property
    def beta(self):
        """The current multiplier as a float."""
        return float(self._beta(self.rho.detach()))

    def penalty(self, kl):
        """The term to add to a loss: ``beta.detach() * (kl - C)``.

        Gradients reach whatever produced ``kl``; beta moves only in :meth:`step`.
        """
        beta = self._beta(self.rho.detach()).to(kl.device)
        return beta * (kl - self.capacity)

    def step(self, kl):
        """One dual-ascent step of beta on the constraint ``kl - C``.

        Arguments
        ---------
        kl : float or None
            This step's KL, or None when this rank has none that can reach the
            capacity. Under torch.distributed every rank must call ``step``
            (it is one collective): the KL values of the ranks that have one
            are averaged, so every rank keeps the same beta.

        Returns
        -------
        bool
            Whether beta moved (False when no rank had a KL).
        """
        total, count = distributed.sum_over_ranks(
            [0.0 if kl is None else float(kl), 0.0 if kl is None else 1.0]
        )
        if count == 0:
            return False
        return self.step_local(total / count)

    def step_local(self, kl):
        """The dual-ascent step of :meth:`step` on this process's ``kl`` alone.

        Not a collective: for callers whose KL is already the same on every
        rank (the ISBL sampler measures it on its all-gathered loss table).

        Example
        -------
        >>> ctrl = CapacityController(capacity=0.5, lr=0.1, parametrization="exp")
        >>> ctrl.step_local(0.1), ctrl.beta < 1.0  # KL below capacity: beta shrinks
        (True, True)
        >>> ctrl.step_local(None)
        False
        """
        if kl is None:
            return False
        kl = float(kl)
        self.last_kl = kl
        self.optimizer.zero_grad(set_to_none=True)
        multiplier_loss = -self._beta(self.rho) * (kl - self.capacity)
        multiplier_loss.backward()
        self.optimizer.step()
        return True

    @mark_as_saver
    def _save(self, path):
        state = {
            "parametrization": self.parametrization,
            "rho": self.rho.detach().clone(),
            "optimizer": self.optimizer.state_dict(),
        }
        torch.save(state, path)

    @mark_as_loader
    def _load(self, path, end_of_epoch=False):
        state = torch.load(path)
        saved = state.get("parametrization", "softplus")
        if saved == self.parametrization:
            with torch.no_grad():
                self.rho.copy_(state["rho"])
            self.optimizer.load_state_dict(state["optimizer"])
            return
        # Saved under the other parametrization: keep beta, restart the
        # optimizer (its moments were about the other rho).
        rho = state["rho"].double()
        beta = torch.exp(rho) if saved == "exp" else torch.nn.functional.softplus(rho)
        start = (
            math.log(float(beta))
            if self.parametrization == "exp"
            else _inverse_softplus(float(beta))
        )
        with torch.no_grad():
            self.rho.fill_(start)

    def extra_repr(self):
        return f"capacity={self.capacity}, beta={self.beta:.4g}"
