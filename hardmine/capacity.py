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
weights' concentration at ``C`` nats, whatever the scale of the losses.
"""

import math

import torch
from speechbrain.utils.checkpoints import (
    mark_as_loader,
    mark_as_saver,
    register_checkpoint_hooks,
)

from hardmine import distributed
from hardmine.validation import check_number

__all__ = ["CapacityController"]


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

    Example
    -------
    >>> ctrl = CapacityController(capacity=0.5, lr=0.1)
    >>> round(ctrl.beta, 4)
    1.0
    >>> ctrl.step(torch.tensor(2.0))  # KL above capacity: beta must grow
    >>> ctrl.beta > 1.0
    True
    >>> penalty = ctrl.penalty(torch.tensor(2.0, requires_grad=True))
    >>> penalty.requires_grad  # gradient flows to the KL term, not to beta
    True
    """

    def __init__(self, capacity, beta_init=1.0, lr=0.05, optimizer=None):
        super().__init__()
        self.capacity = check_number("capacity", capacity, minimum=0.0)
        beta_init = check_number(
            "capacity_beta_init", beta_init, minimum=0.0, strict=True
        )
        lr = check_number("capacity_lr", lr, minimum=0.0, strict=True)
        self.rho = torch.nn.Parameter(torch.tensor(_inverse_softplus(beta_init)))
        if optimizer is None:
            self.optimizer = torch.optim.Adam([self.rho], lr=lr)
        else:
            self.optimizer = optimizer([self.rho])
        self.last_kl = float("nan")

    @property
    def beta(self):
        """The current multiplier as a float."""
        return float(torch.nn.functional.softplus(self.rho.detach()))

    def penalty(self, kl):
        """The term to add to a loss: ``beta.detach() * (kl - C)``.

        Gradients reach whatever produced ``kl``; beta moves only in :meth:`step`.
        """
        beta = torch.nn.functional.softplus(self.rho.detach()).to(kl.device)
        return beta * (kl - self.capacity)

    def step(self, kl):
        """One dual-ascent step of beta on the constraint ``kl - C``.

        Under torch.distributed the KL values of all ranks are averaged first,
        so every rank keeps the same beta.
        """
        kl = float(distributed.mean_over_ranks(float(kl)))
        self.last_kl = kl
        self.optimizer.zero_grad(set_to_none=True)
        beta = torch.nn.functional.softplus(self.rho)
        multiplier_loss = -beta * (kl - self.capacity)
        multiplier_loss.backward()
        self.optimizer.step()

    @mark_as_saver
    def _save(self, path):
        state = {
            "rho": self.rho.detach().clone(),
            "optimizer": self.optimizer.state_dict(),
        }
        torch.save(state, path)

    @mark_as_loader
    def _load(self, path, end_of_epoch=False):
        state = torch.load(path)
        with torch.no_grad():
            self.rho.copy_(state["rho"])
        self.optimizer.load_state_dict(state["optimizer"])

    def extra_repr(self):
        return f"capacity={self.capacity}, beta={self.beta:.4g}"
