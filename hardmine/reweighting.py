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

What the softmax runs over (``over``):

- ``examples`` (the default): one entry per example, losses of shape [B].
- ``sources``: one entry per example and source, losses of shape [B, S]
  (for separation, each source's loss after the permutation-invariant
  matching), as in the paper's code, whose softmax runs over batch x
  sources. The softmax then runs over the ``B * S`` entries (``class_bias``
  gives every source of an example its example's score). Everything else
  that needs one loss per example (the sampler's feedback, the threshold
  filter, the stage averages) uses the mean over sources.

>>> losses = torch.tensor([[1.0, 3.0], [2.0, 6.0]])  # 2 mixtures x 2 sources
>>> rw = SoftmaxReweighting("robust", temperature=2.0, over="sources")
>>> loss, p = rw.reduce(losses)
>>> p.shape, torch.allclose(p, torch.softmax(losses.flatten() / 2.0, 0).view(2, 2))
(torch.Size([2, 2]), True)

How the weights are normalised (``partition``):

- ``batch`` (the default): ``p = softmax(F)`` over the entries of the batch.
  With a batch of one example (and ``over: examples``) its weight is always
  1: reweighting needs ``batch_size >= 2`` there.
- ``ema``: streaming normalisation, for training at batch size 1. The
  estimator, for the ``n`` entries (examples, or examples x sources) of
  batch ``t`` with scores ``F_1 .. F_n``::

      w_i    = exp(F_i) / Z_{t-1}
      loss_t = (1/n) * sum_i w_i * L_i
      s_t    = (1/n) * sum_i exp(F_i)         (this batch's statistic)
      log Z_t = logaddexp(log m + log Z_{t-1}, log(1 - m) + log s_t)

  ``Z_{t-1}`` is the estimate after the last batch used for a step
  (``m = partition_momentum``, default 0.99: an average over about
  ``1 / (1 - m)`` recent batches). The first batch, with no estimate yet,
  uses its own mean ``Z = s_1``, i.e. the batch softmax, and sets
  ``log Z_1 = log s_1``. Everything is kept in the log domain (float64).
  With ``Z`` equal to the batch's own mean, ``loss_t`` is exactly the batch
  form ``sum_i softmax(F)_i L_i``; at batch size 1 a hard example still
  weighs ``exp(F_hard - F_easy)`` times an easy one judged against the same
  ``Z``, and the weights average about 1 over a stationary stream (slightly
  above: ``Z`` is itself an estimate). Unlike the batch form, a weight is not
  bounded by ``n``: an example far harder (robust) or easier (curriculum)
  than those behind ``Z`` weighs ``exp(F_i) / Z >> 1``, so keep gradient
  clipping on (the recipes clip at 5); a weight that overflows makes the loss
  non-finite and the batch is skipped. ``Z`` learns only from batches used
  for a step (the Brain calls :meth:`SoftmaxReweighting.update_partition`
  after its joint skip vote). Under torch.distributed ``s_t`` is the mean
  over every rank's entries (one collective per used batch, run by every
  rank in the same order), so ``Z`` is the same on every rank; it is saved in
  checkpoints (:class:`StreamingPartition`, which the Brain registers as
  ``reweight_partition``). A capacity is not available with ``ema`` (the
  controller measures weights normalised over one batch).

>>> rw = SoftmaxReweighting("robust", temperature=1.0, partition="ema", partition_momentum=0.5)
>>> _ = rw.reduce(torch.tensor([0.0, 2.0])); rw.update_partition()  # first batch sets Z
True
>>> round(rw.partition_state.log_z.item(), 4)  # log mean(exp(0), exp(2))
1.4338
>>> loss, w = rw.reduce(torch.tensor([3.0]))  # batch size 1: weight exp(3 - log Z)
>>> round(float(w[0]), 4), round(float(loss), 4)
(4.7885, 14.3655)
"""

import math

import torch

from hardmine import distributed
from hardmine.capacity import CapacityController
from hardmine.schedules import TemperatureSchedule
from hardmine.validation import ConfigError, check_choice, check_number

__all__ = [
    "SoftmaxReweighting",
    "StreamingPartition",
    "MODES",
    "OVER",
    "PARTITIONS",
    "kl_to_uniform",
    "effective_sample_size",
]

MODES = ("uniform", "robust", "curriculum", "class_bias")
#: What the softmax runs over: one entry per example, or per example and source.
OVER = ("examples", "sources")
#: How the weights are normalised: over the batch, or by a streaming estimate.
PARTITIONS = ("batch", "ema")


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


def _logaddexp(a, b):
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    top = max(a, b)
    return top + math.log(math.exp(a - top) + math.exp(b - top))


class StreamingPartition(torch.nn.Module):
    """The streaming normaliser ``Z`` of ``partition: ema``, in the log domain.

    ``log_z`` (a float64 buffer, NaN until the first update) is an
    exponential moving average of the batches' mean ``exp(F)``:
    ``log Z <- logaddexp(log m + log Z, log(1 - m) + log s)``; the first
    update sets ``log Z = log s``. A ``torch.nn.Module``, so SpeechBrain's
    checkpointer saves and restores its buffers.

    Arguments
    ---------
    momentum : float
        ``m`` in ``[0, 1)``; 0 makes ``Z`` the last batch's mean.

    Example
    -------
    >>> z = StreamingPartition(momentum=0.9)
    >>> z.initialised
    False
    >>> z.update(math.log(2.0)); z.update(math.log(4.0))
    >>> round(math.exp(z.log_z.item()), 6)  # 0.9 * 2 + 0.1 * 4
    2.2
    """

    def __init__(self, momentum=0.99):
        super().__init__()
        self.momentum = check_momentum(momentum)
        self.register_buffer("log_z", torch.tensor(math.nan, dtype=torch.float64))
        self.register_buffer("batches", torch.zeros((), dtype=torch.int64))

    @property
    def initialised(self):
        """Whether ``Z`` has seen a batch."""
        return int(self.batches) > 0

    def update(self, log_mean):
        """Fold one batch's ``log s`` (the same on every rank) into ``log Z``."""
        log_mean = float(log_mean)
        m = self.momentum
        if not self.initialised or m == 0.0:
            new = log_mean
        else:
            new = _logaddexp(math.log(m) + float(self.log_z), math.log1p(-m) + log_mean)
        self.log_z.fill_(new)
        self.batches += 1

    def extra_repr(self):
        return f"momentum={self.momentum}, log_z={float(self.log_z):.4g}"


def check_momentum(momentum):
    """``partition_momentum`` as a float in ``[0, 1)``, or a ConfigError."""
    momentum = check_number("partition_momentum", momentum, minimum=0.0)
    if momentum >= 1.0:
        raise ConfigError(
            "partition_momentum",
            f"must be < 1 (at 1 the estimate would never move), got {momentum}",
        )
    return momentum


def mean_over_ranks_log(log_mean, count):
    """``log`` of the mean over every rank's entries, from each rank's
    ``log`` mean and entry count; one collective, the same result on every
    rank (each rank fills its own slot of a zero vector that is summed).
    """
    world = distributed.world_size()
    if world == 1:
        return float(log_mean)
    slots = [0.0] * (2 * world)
    me = distributed.rank()
    slots[me], slots[world + me] = float(log_mean), float(count)
    values = distributed.sum_over_ranks(slots)
    logs = torch.tensor(values[:world], dtype=torch.float64)
    counts = torch.tensor(values[world:], dtype=torch.float64)
    return float(torch.logsumexp(logs + counts.log(), 0) - counts.sum().log())


class SoftmaxReweighting:
    """Turn per-example (or per-source) losses into one weighted loss.

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
    over : str
        ``examples`` (losses [B]) or ``sources`` (losses [B, S], the softmax
        over all ``B * S`` entries).
    partition : str
        ``batch`` (softmax over the batch) or ``ema`` (weights
        ``exp(F) / Z`` with ``Z`` a moving average; see the module).
    partition_momentum : float
        ``m`` of the ``ema`` partition, in ``[0, 1)``.

    Example
    -------
    >>> losses = torch.tensor([1.0, 2.0, 4.0])
    >>> loss, p = SoftmaxReweighting("robust", temperature=2.0).reduce(losses)
    >>> torch.allclose(p, torch.softmax(losses / 2.0, dim=0))
    True
    >>> loss, p = SoftmaxReweighting("uniform").reduce(losses)
    >>> float(loss), p
    (2.3333332538604736, None)
    >>> SoftmaxReweighting(over="mixtures")
    Traceback (most recent call last):
    ...
    hardmine.validation.ConfigError: over: must be one of 'examples', 'sources', got 'mixtures'
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
        over="examples",
        partition="batch",
        partition_momentum=0.99,
    ):
        self.mode = check_choice("reweight_mode", mode, MODES)
        self.over = check_choice("over", over, OVER)
        self.partition = check_choice("partition", partition, PARTITIONS)
        momentum = check_momentum(partition_momentum)
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
            if self.partition != "batch":
                raise ConfigError(
                    "capacity",
                    "applies to partition 'batch' (the controller measures weights "
                    f"normalised over one batch), not {self.partition!r}",
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
        #: The ``ema`` partition's state (a checkpoint recoverable), else None.
        self.partition_state = (
            StreamingPartition(momentum) if self.partition == "ema" else None
        )
        # The last reduce's scores (ema) and whether it divided by Z.
        self._scores = None
        self.streamed = False

    @property
    def active(self):
        """Whether the weights can differ from a plain mean."""
        return self.mode != "uniform"

    @property
    def streaming(self):
        """Whether the weights are normalised by the moving estimate ``Z``."""
        return self.active and self.partition == "ema"

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
        """The softmax logits ``F`` for each entry (the shape of ``losses``)."""
        if self.mode == "robust":
            return losses / self.temperature(epoch, step)
        if self.mode == "curriculum":
            return -losses / self.temperature(epoch, step)
        if self.mode == "class_bias":
            favoured = [c in self.favoured for c in classes]
            score = self.gamma * torch.tensor(
                favoured, dtype=losses.dtype, device=losses.device
            )
            if losses.dim() > 1:  # every source of an example alike
                score = score.reshape(-1, *[1] * (losses.dim() - 1)).expand_as(losses)
            return score
        return torch.zeros_like(losses)

    def _check_shape(self, losses):
        if self.over == "sources" and losses.dim() != 2:
            raise ValueError(
                "reweighting over sources needs one loss per example and source "
                f"(shape [B, S]), got shape {tuple(losses.shape)}"
            )
        if self.over == "examples" and losses.dim() > 1:
            raise ValueError(
                "reweighting over examples needs one loss per example (shape [B]), "
                f"got shape {tuple(losses.shape)}; set over: sources for [B, S]"
            )

    def reduce(self, losses, classes=None, epoch=1, step=0):
        """Weighted loss and the weights used.

        Arguments
        ---------
        losses : torch.Tensor
            Losses with their graph: shape [B] (``over: examples``) or
            [B, S] (``over: sources``).
        classes : list of str, optional
            Per-example classes (class_bias).
        epoch, step : int
            Training progress, for scheduled temperatures.

        Returns
        -------
        loss : torch.Tensor
            Scalar ``sum p * L`` over the entries (the mean in uniform mode).
        weights : torch.Tensor or None
            ``p`` (detached, the shape of ``losses``), or None in uniform
            mode. With ``partition: batch`` they sum to 1; with ``ema``
            (once ``Z`` has seen a batch) ``p = exp(F) / (n * Z)``, which
            sums to about 1 only on average.
        """
        self._check_shape(losses)
        self._scores, self.streamed = None, False
        if self.mode == "uniform":
            return losses.mean(), None
        with torch.no_grad():
            scores = self.scores(losses.detach().float(), classes, epoch, step)
            if self.streaming and self.partition_state.initialised:
                log_z = float(self.partition_state.log_z)
                relative = torch.exp(scores.double() - log_z)
                p = (relative / scores.numel()).to(scores.dtype)
                self.streamed = True
            else:
                p = torch.softmax(scores.reshape(-1), dim=0).reshape(scores.shape)
            if self.streaming:
                self._scores = scores.double()
        loss = (p.to(losses.dtype) * losses).sum()
        return loss, p

    def combine(self, weights, importance):
        """Weights mixed with a sampler's importance weights of the same entries.

        Arguments
        ---------
        weights : torch.Tensor or None
            What :meth:`reduce` returned.
        importance : torch.Tensor
            One importance weight per entry (an example's repeated over its
            sources).

        Returns
        -------
        torch.Tensor
            ``q`` with the loss ``sum q * L``: ``w p / sum w p`` (``w / sum w``
            in uniform mode); when the last :meth:`reduce` divided by the
            streaming ``Z``, ``w p / mean(w)`` (only the importance weights
            are normalised, ``Z`` stays the normaliser of ``exp(F)``).
        """
        mixed = (
            importance if weights is None else importance * weights.to(importance.dtype)
        )
        if weights is not None and self.streamed:
            return mixed / importance.mean()
        return mixed / mixed.sum()

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

    def update_partition(self, importance=None):
        """Fold the last reduced batch into the streaming ``Z`` (``ema`` only).

        Call it once per batch used for a step, after the decision to use it,
        and never for a skipped batch. Under torch.distributed it is one
        collective: every rank must call it for the same batches in the same
        order (the Brain does so after its joint skip vote).

        Arguments
        ---------
        importance : torch.Tensor, optional
            The sampler's importance weights of the reduced entries: the
            batch statistic is then their weighted mean of ``exp(F)``.

        Returns
        -------
        bool
            Whether ``Z`` was updated (False without ``ema``, in uniform
            mode, or when nothing was reduced since the last update).
        """
        scores, self._scores = self._scores, None
        if not self.streaming or scores is None:
            return False
        scores = scores.reshape(-1)
        count = scores.numel()
        if importance is None:
            log_mean = float(torch.logsumexp(scores, 0)) - math.log(count)
        else:
            w = importance.detach().double().reshape(-1).to(scores.device)
            log_mean = float(torch.logsumexp(scores + w.log(), 0) - w.sum().log())
        self.partition_state.update(mean_over_ranks_log(log_mean, count))
        return True

    def __repr__(self):
        extra = f", capacity={self.controller.capacity}" if self.controller else ""
        if self.over != "examples":
            extra += f", over={self.over!r}"
        if self.partition_state is not None:
            extra += (
                f", partition='ema', partition_momentum={self.partition_state.momentum}"
            )
        return f"SoftmaxReweighting(mode={self.mode!r}, {self.schedule}{extra})"
