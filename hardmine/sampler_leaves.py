"""The leaves of the batch samplers: how an example is drawn inside its group.

:class:`~hardmine.sampler_base.BatchSamplerBase` holds one leaf and hands it
the gathered losses; the leaf keeps whatever state its draws depend on:

* :class:`RoundRobinLeaf`: each group's examples in an order shuffled once per
  epoch, walked round-robin (the category power sampler's default);
* :class:`ISBLLeaf`: loss-power draws from a
  :class:`~hardmine.loss_table.LossPowerTable`, with the concentration control,
  exploration, importance weights, staleness and noise guard options described
  in :mod:`hardmine.sampler_base`.

Both answer the same calls: ``draw``, ``observe``, ``state``/``load_state``,
``stats`` and a ``live`` flag.
"""

import io
import math

import numpy as np
import torch

from hardmine.capacity import CapacityController
from hardmine.loss_table import LossPowerTable
from hardmine.validation import ConfigError, check_int, check_number

__all__ = [
    "ISBLLeaf",
    "RoundRobinLeaf",
    "LEAVES",
    "check_leaf_options",
    "check_importance_options",
]

#: Names of the leaves (``leaf`` argument).
LEAVES = ("uniform", "isbl")

#: ``refresh_every=None`` is ``max(MIN_REFRESH_EVERY, ceil(N / REFRESH_EXAMPLES))``
#: (see the module).
REFRESH_EXAMPLES = 2048
MIN_REFRESH_EVERY = 8

#: Bounds of the sharpness ``a = 1 / T`` under a capacity.
SHARPNESS_RANGE = (1e-3, 1e3)

#: Handed-out batches kept for :meth:`BatchSamplerBase.batch_weights`
#: (far more than a DataLoader prefetches).
PENDING_BATCHES = 256


def check_leaf_options(capacity=None, capacity_lr=0.05, refresh_every=None):
    """Check the capacity and refresh options of :class:`ISBLLeaf`.

    Example
    -------
    >>> check_leaf_options(0.5, 0.05, None)
    {'capacity': 0.5, 'capacity_lr': 0.05, 'refresh_every': None}
    """
    if capacity is not None:
        capacity = check_number("capacity", capacity, minimum=0.0, strict=True)
        if not math.isfinite(capacity):
            raise ConfigError("capacity", f"must be finite, got {capacity}")
    capacity_lr = check_number("capacity_lr", capacity_lr, minimum=0.0, strict=True)
    if refresh_every is not None:
        refresh_every = check_int("refresh_every", refresh_every, minimum=1)
    return {
        "capacity": capacity,
        "capacity_lr": capacity_lr,
        "refresh_every": refresh_every,
    }


def check_importance_options(is_beta=None, is_anneal_epochs=0):
    """Check the importance-weight options (``is_beta`` None = off).

    Example
    -------
    >>> check_importance_options(0.4, 10)
    {'is_beta': 0.4, 'is_anneal_epochs': 10}
    """
    if is_beta is not None:
        is_beta = check_number("is_beta", is_beta, minimum=0.0, maximum=1.0)
    is_anneal_epochs = check_int("is_anneal_epochs", is_anneal_epochs, minimum=0)
    return {"is_beta": is_beta, "is_anneal_epochs": is_anneal_epochs}


class ISBLLeaf:
    """Loss-power draws inside each group, steered by the observed losses.

    Arguments
    ---------
    group_of : array_like of int
        Group (pool) of every example.
    ids : list of str, optional
        Example names for error messages.
    capacity, capacity_lr, refresh_every
        Concentration control and the cadence of the O(N) refreshes (see the
        module); ``capacity=None`` is off.
    **options
        ``alpha``, ``eps``, ``transform``, ``momentum`` and the exploration,
        staleness and noise options of the
        :class:`~hardmine.loss_table.LossPowerTable` that holds the scores.
    """

    name = "isbl"
    live = True  # the draws follow the losses fed back

    def __init__(
        self,
        group_of,
        ids=None,
        *,
        capacity=None,
        capacity_lr=0.05,
        refresh_every=None,
        **options,
    ):
        self.table = LossPowerTable(group_of, ids=ids, **options)
        sizes = self.table.pool_sizes
        self.pool_sizes = sizes
        self.shares = sizes / sizes.sum()
        if refresh_every is None:
            refresh_every = max(
                MIN_REFRESH_EVERY, math.ceil(self.table.size / REFRESH_EXAMPLES)
            )
        self.refresh_every = refresh_every
        self.controller = None
        if capacity is not None:
            if self.table.alpha <= 0:
                raise ConfigError(
                    "alpha",
                    "must be > 0 with a capacity (the controller starts from "
                    f"T = 1 / alpha), got {self.table.alpha}",
                )
            self.controller = CapacityController(
                capacity,
                beta_init=1.0 / self.table.alpha,
                lr=capacity_lr,
                parametrization="exp",
            )
        self.batches = 0  # observe() calls over the run: the refresh clock
        self.last_kl = float("nan")
        self.n_decayed = 0

    @property
    def _refreshing(self):
        return self.controller is not None or self.table.score_clip_quantile is not None

    def set_shares(self, shares):
        """The draw share of every group (the capacity's KL weighs pools by it)."""
        shares = np.asarray(shares, dtype=np.float64)
        self.shares = shares / shares.sum()
        if self.controller is not None:
            reach = float(np.sum(self.shares * np.log(self.pool_sizes)))
            if self.controller.capacity >= reach:
                raise ConfigError(
                    "capacity",
                    f"must be below {reach:.4g} nats, the largest KL the pools allow "
                    f"(sum of share_k * log N_k), got {self.controller.capacity}",
                )

    def draw(self, groups, rng):
        """One example of each group in ``groups`` (with replacement)."""
        return self.table.draw(groups, rng)

    def probability_of(self, indices):
        """Within-group draw probability of each of ``indices`` (O(B))."""
        return self.table.probability_of(indices)

    def observe(self, indices, losses):
        """Apply the gathered losses, in order; refresh on the cadence."""
        self.table.observe_indices(indices, losses)
        self.batches += 1
        if self._refreshing and self.batches % self.refresh_every == 0:
            self.refresh()

    def refresh(self):
        """The O(N) refresh: noise-guard thresholds, then one capacity step."""
        self.table.refresh_guard()
        if self.controller is None:
            return
        self.last_kl = self.table.kl_to_uniform(self.shares)
        self.controller.step_local(self.last_kl)
        self._apply_sharpness()

    def _apply_sharpness(self):
        low, high = SHARPNESS_RANGE
        with torch.no_grad():  # T = exp(rho) within [1 / high, 1 / low]
            self.controller.rho.clamp_(-math.log(high), -math.log(low))
        self.table.set_alpha(1.0 / self.controller.beta)

    @property
    def sharpness(self):
        """The power ``a`` in force (``alpha``, or ``1 / T`` under a capacity)."""
        return self.table.alpha

    def new_epoch(self, old, new):
        """Epoch ``old`` ends, ``new`` starts: the staleness decay of ``old``."""
        self.n_decayed = self.table.decay_stale(old)
        self.table.epoch = new

    def resume_epoch(self, epoch):
        """The epoch restored from a checkpoint (no decay)."""
        self.table.epoch = epoch

    def state(self):
        """``(meta, arrays)`` for a checkpoint."""
        table = self.table.state_dict()
        meta = {key: table[key] for key in ("n_observations", "size", "pool_checksum")}
        meta["batches_observed"] = self.batches
        arrays = {key: table[key] for key in ("scores", "quarantined", "seen")}
        # Always kept: the decay needs it, and reports show how old a loss is.
        arrays["last_observed"] = table["last_observed"].astype(np.int32)
        arrays["latest"] = table["latest"]
        if self.table.score_decay:
            meta["n_decayed"] = self.n_decayed
        if table["unseen_order"] is not None:
            arrays["unseen_order"] = table["unseen_order"].astype(np.int32)
        if self.table.score_clip_quantile is not None:
            arrays["streak"] = table["streak"].astype(np.int32)
            arrays["persistently_hard"] = table["persistently_hard"]
            arrays["ever_persistently_hard"] = table["ever_persistently_hard"]
            arrays["clip_threshold"] = table["clip_threshold"]
        if self.controller is not None:
            meta["sharpness"] = self.table.alpha
            meta["capacity_kl"] = self.last_kl
            buffer = io.BytesIO()
            torch.save(
                {
                    "rho": self.controller.rho.detach().clone(),
                    "optimizer": self.controller.optimizer.state_dict(),
                },
                buffer,
            )
            arrays["capacity_state"] = np.frombuffer(buffer.getvalue(), dtype=np.uint8)
        return meta, arrays

    def load_state(self, meta, arrays):
        """Restore :meth:`state`; entries of older files or other options may be missing."""
        self.table.epoch = int(meta.get("epoch", 0))
        saved = arrays.get("capacity_state")
        if self.controller is not None and saved is not None:
            state = torch.load(io.BytesIO(saved.tobytes()), weights_only=True)
            with torch.no_grad():
                self.controller.rho.copy_(state["rho"])
            self.controller.optimizer.load_state_dict(state["optimizer"])
            self.table.alpha = 1.0 / self.controller.beta
            self.last_kl = float(meta.get("capacity_kl", float("nan")))
        state = {key: meta[key] for key in ("n_observations", "size", "pool_checksum")}
        state.update(
            scores=arrays["scores"],
            quarantined=arrays["quarantined"],
            seen=arrays.get("seen"),
        )
        for key in (
            "last_observed",
            "latest",
            "streak",
            "persistently_hard",
            "ever_persistently_hard",
            "clip_threshold",
            "unseen_order",
        ):
            state[key] = arrays.get(key)
        self.table.load_state_dict(state)
        self.batches = int(meta.get("batches_observed", 0))
        self.n_decayed = int(meta.get("n_decayed", 0))

    def stats(self):
        """``mean_score``, ``n_quarantined``, and those of the options in use."""
        out = {
            "mean_score": float(self.table.scores.mean()),
            "n_quarantined": int(self.table.n_quarantined),
        }
        if self.table.unseen_score != "initial":
            out["n_unseen"] = int(np.count_nonzero(self.table.unseen))
        if self.controller is not None:
            out["sharpness"] = self.table.alpha
            out["capacity_kl"] = self.last_kl
        if self.table.score_decay:
            out["n_decayed"] = self.n_decayed
        if self.table.score_clip_quantile is not None:
            out["n_persistently_hard"] = int(
                np.count_nonzero(self.table.persistently_hard)
            )
            out["n_ever_persistently_hard"] = int(
                np.count_nonzero(self.table.ever_persistently_hard)
            )
        return out


class RoundRobinLeaf:
    """Uniform draws inside each group: the next member of its shuffled list.

    :meth:`start` sets an epoch's shuffle; the ``k``-th draw of group ``g``
    from then on takes member ``k mod size_g`` of ``g``'s list, so every
    member is drawn once before any is drawn twice. Losses are ignored.

    Arguments
    ---------
    group_of : array_like of int
        Group of every example (values ``0 .. G-1``, every group non-empty).
    """

    name = "uniform"
    live = False  # the draws are a function of the epoch's shuffle alone
    table = None

    def __init__(self, group_of):
        self.group_of = np.asarray(group_of, dtype=np.int64)
        self.size = np.bincount(self.group_of)
        self.offset = np.concatenate([[0], np.cumsum(self.size)[:-1]])
        self._small = np.uint16 if len(self.size) < 2**16 else np.int64
        self._members = np.arange(len(self.group_of))
        self._next = np.zeros(len(self.size), dtype=np.int64)

    def start(self, perm):
        """Begin an epoch whose groups are walked in the order of ``perm``."""
        perm = np.asarray(perm, dtype=np.int64)
        order = np.argsort(self.group_of[perm].astype(self._small), kind="stable")
        self._members = perm[order]
        self._next[:] = 0

    def draw(self, groups, rng=None):
        """The next member of each group in ``groups``, in order (vectorised)."""
        groups = np.asarray(groups, dtype=np.int64)
        # In group-sorted order the k-th draw of group g in this call takes
        # position next_g + k of g's list (modulo its size).
        order = np.argsort(groups.astype(self._small), kind="stable")
        counts = np.bincount(groups, minlength=len(self.size))
        position = np.arange(len(groups)) - np.repeat(
            np.cumsum(counts) - counts, counts
        )
        position += np.repeat(self._next, counts)
        position %= np.repeat(self.size, counts)
        position += np.repeat(self.offset, counts)
        draws = np.empty(len(groups), dtype=np.int64)
        draws[order] = self._members[position]
        self._next = (self._next + counts) % self.size
        return draws

    def observe(self, indices, losses):
        """Nothing to learn."""

    def new_epoch(self, old, new):
        """Nothing to age."""

    def resume_epoch(self, epoch):
        """Nothing to restore."""

    def state(self):
        """Nothing to save: the draws follow from seed and epoch."""
        return {}, {}

    def load_state(self, meta, arrays):
        """Nothing to restore."""

    def stats(self):
        """No statistics of its own."""
        return {}
