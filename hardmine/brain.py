"""HardMiningBrain: SpeechBrain's Brain with a per-example loss pipeline.

A recipe's ``compute_objectives`` returns one loss per example (shape [B]),
or with reweighting ``over: sources`` one per example and source ([B, S]):
the reweighting then sees every source and everything else (sampler
feedback, filters, statistics, stage averages) the mean over sources.
In the training stage HardMiningBrain turns them into the scalar to
backpropagate, inside SpeechBrain's own ``fit_batch`` (AMP and GradScaler,
gradient accumulation, gradient clipping, ``on_fit_batch_*`` hooks and
``optimizers_step`` all keep working):

1. the losses, with ``NaN`` for examples whose audio is broken, go to the live
   sampler (``mining_sampler``) so the next draws see them;
2. examples whose data pipeline reported an ``audio_problem`` leave the batch
   (each named once in the log and counted);
3. a non-finite loss skips the batch (``loss_limit``);
4. ``threshold_filter`` drops the examples that are already easy (and, with
   ``keep_hardest``, all but that share of the hardest); if none are left the
   batch is skipped as "all easy";
5. ``reweighting`` turns the remaining losses into ``sum_i p_i L_i``;
6. a final loss ``>= loss_upper_lim`` skips the batch.

A skipped batch gets no backward pass through the model and no optimizer
step: parameters and optimizer state stay bitwise unchanged. With every
feature off the result equals plain ``sb.Brain`` with a mean loss.

Skips and gradient accumulation: an optimizer step averages the gradients of
the *usable* micro-batches of its window. Each micro-batch's loss is divided
by ``grad_accumulation_factor`` (SpeechBrain), so when ``u`` of the factor's
micro-batches were usable the gradients are multiplied by ``factor / u``
before clipping and the step; a window with no usable micro-batch takes no
step and does not count as one.

Under DDP every decision that changes what the ranks do is taken jointly,
with one collective per batch: if any rank must skip a batch, every rank
skips it (``other_rank``), and all ranks count the skip towards
``max_consecutive_skips`` alike, so they raise ``TooManySkipsError``
together. If the last micro-batch of an accumulation window is skipped, the
backward pass that would have made DDP all-reduce the window's gradients
never runs; the Brain averages them across ranks itself before stepping.

In every stage the running loss average (SpeechBrain's ``avg_train_loss``
and the valid/test stage loss, which drive learning-rate schedules and
checkpoint selection) is weighted by the number of usable examples behind
each batch loss; skipped batches and broken examples are left out.

A recipe writes ``compute_objectives``, ``on_stage_start`` and
``on_stage_end`` as for any Brain, without ``super()`` calls to this class:
each is wrapped once, when the subclass is defined, so that the mining runs
around it (and a recipe's ``super()`` call to a parent recipe's hook reaches
that hook unwrapped). The wrapping lives on the class: a Brain holds no
reference to itself and is freed as soon as it goes out of scope.

The optional hparams keys read are ``loss_limit``, ``threshold_filter``,
``reweighting`` and ``mining_sampler`` (a factory called with the training
dataset; its result becomes the loader's ``batch_sampler``). The shared YAML
fragments in the project's ``hparams/`` folder build each of them.
"""

import contextlib
import functools
import json
import logging
import os
import time

import speechbrain as sb
import torch
import yaml
from speechbrain.utils.checkpoints import (
    mark_as_loader,
    mark_as_saver,
    register_checkpoint_hooks,
)

from hardmine import distributed
from hardmine.loss_limit import LossLimit
from hardmine.loss_table import LossPowerTable
from hardmine.reweighting import SoftmaxReweighting, effective_sample_size
from hardmine.threshold import ThresholdFilter
from hardmine.validation import ConfigError

__all__ = ["HardMiningBrain", "AUDIO_PROBLEM_FIELD"]

logger = logging.getLogger(__name__)

#: Batch field in which a data pipeline reports broken audio ("" when fine).
AUDIO_PROBLEM_FIELD = "audio_problem"

SKIP_REASONS = ("nonfinite", "loss_limit", "all_easy", "all_bad_audio")

# Joint skip vote: the largest code over the ranks decides for all of them.
# 0 = use the batch, 1 = skip without counting towards max_consecutive_skips
# (every example was already easy), 2 = skip and count.
_VOTE = {None: 0, "all_easy": 1}

_POLICIES = {
    "loss_limit": LossLimit,
    "threshold_filter": ThresholdFilter,
    "reweighting": SoftmaxReweighting,
}


@register_checkpoint_hooks
class HardMiningBrain(sb.Brain):
    """A ``Brain`` whose training loss comes from per-example losses.

    Subclasses implement ``compute_forward`` and a ``compute_objectives``
    returning one loss per example. Mining statistics of the last training
    epoch are in ``self.mining_stats`` when the subclass's ``on_stage_end``
    runs for the TRAIN stage, ready to be logged with the train stats.

    Example
    -------
    >>> import torch
    >>> class Regressor(HardMiningBrain):
    ...     def compute_forward(self, batch, stage):
    ...         return self.modules.model(batch[0])
    ...     def compute_objectives(self, predictions, batch, stage):
    ...         return ((predictions - batch[1]) ** 2).mean(dim=1)  # one loss per example
    >>> brain = Regressor(
    ...     modules={"model": torch.nn.Linear(4, 1)},
    ...     opt_class=lambda params: torch.optim.SGD(params, lr=0.1),
    ...     hparams={"threshold_filter": ThresholdFilter(threshold=0.01),
    ...              "reweighting": SoftmaxReweighting("robust", temperature=1.0)},
    ...     run_opts={"device": "cpu"},
    ... )
    >>> data = [(torch.randn(8, 4), torch.randn(8, 1))] * 3
    >>> brain.fit(range(1), data, train_loader_kwargs={"batch_size": None})
    >>> sorted(brain.mining_stats)[:3]
    ['batches', 'batches_skipped', 'examples']
    """

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for name in _MINED_HOOKS:
            if name in vars(cls):
                setattr(cls, name, _with_mining(name, vars(cls)[name]))

    def __init__(self, *args, **kwargs):
        # Hooks running now, whose nested calls reach the recipe's code as is.
        self._running_hooks = set()
        super().__init__(*args, **kwargs)
        # SpeechBrain's command line hands this over as a string.
        if isinstance(self.optimizer_step_limit, str):
            try:
                self.optimizer_step_limit = int(self.optimizer_step_limit)
            except ValueError:
                raise ConfigError(
                    "optimizer_step_limit",
                    f"must be a whole number, got {self.optimizer_step_limit!r}",
                ) from None
        self.loss_limit = self._policy("loss_limit") or LossLimit()
        self.threshold_filter = self._policy("threshold_filter") or ThresholdFilter(
            None
        )
        self.reweighting = self._policy("reweighting") or SoftmaxReweighting("uniform")
        self.sampler_factory = getattr(self.hparams, "mining_sampler", None)
        if self.sampler_factory is not None and not callable(self.sampler_factory):
            raise ConfigError(
                "mining_sampler",
                "must be a sampler factory (a !name: entry such as hparams/isbl.yaml)",
            )
        self.live_sampler = None
        self.mining_stats = {}
        self.current_epoch = 1
        self._reported_bad = set()
        self._reset_counters()
        self._skip_reason = None
        self._usable_in_window = 0
        self._batch_weight = 0
        self._avg_weight = 0
        controller = self.reweighting.controller
        if controller is not None and self.checkpointer is not None:
            self.checkpointer.add_recoverable("capacity_controller", controller)
        partition = self.reweighting.partition_state
        if partition is not None and self.checkpointer is not None:
            # Optional: a checkpoint of a run without ema starts Z afresh.
            self.checkpointer.add_recoverable(
                "reweight_partition", partition, optional_load=True
            )

    def _policy(self, key):
        obj = getattr(self.hparams, key, None)
        if obj is not None and not isinstance(obj, _POLICIES[key]):
            raise ConfigError(
                key, f"must be a {_POLICIES[key].__name__} (see hparams/), got {obj!r}"
            )
        return obj

    @property
    def per_example_features(self):
        """Names of the switched-on features that need one loss per example."""
        names = []
        if self.threshold_filter.active:
            names.append("threshold_filter")
        if self.reweighting.active:
            names.append("reweighting")
        if self.sampler_factory is not None:
            names.append("mining_sampler")
        return names

    # ------------------------------------------------------------------ data
    def make_dataloader(
        self, dataset, stage, ckpt_prefix="dataloader-", **loader_kwargs
    ):
        """Build loaders; the training one draws from the mining sampler if set.

        A ``mining_sampler`` factory that returns None leaves the ordinary loader.
        """
        if stage == sb.Stage.TRAIN:
            self._check_class_bias(dataset)
        sampler = None
        if stage == sb.Stage.TRAIN and self.sampler_factory is not None:
            sampler = self.sampler_factory(dataset)
        if sampler is not None:
            for key in ("batch_size", "shuffle", "sampler", "drop_last"):
                loader_kwargs.pop(key, None)
            loader_kwargs["batch_sampler"] = sampler
            self.live_sampler = sampler
            if (
                self.checkpointer is not None
                and "mining_sampler" not in self.checkpointer.recoverables
            ):
                self.checkpointer.add_recoverable("mining_sampler", sampler)
        return super().make_dataloader(dataset, stage, ckpt_prefix, **loader_kwargs)

    def _check_class_bias(self, dataset):
        """Fail before training if class-bias reweighting cannot see its classes."""
        rw = self.reweighting
        pipeline = getattr(dataset, "pipeline", None)
        if rw.mode != "class_bias" or pipeline is None:
            return
        outputs = list(getattr(pipeline, "output_mapping", {}) or {})
        if outputs and rw.class_field not in outputs:
            raise ConfigError(
                "class_field",
                f"{rw.class_field!r} is not a field of the training batches "
                f"(they have: {', '.join(outputs)})",
            )
        data = getattr(dataset, "data", None)
        ids = getattr(dataset, "data_ids", None)
        if not data or not ids or rw.class_field not in data[ids[0]]:
            return  # computed by the pipeline: checked on the first batch
        present = {str(data[i][rw.class_field]) for i in ids}
        missing = sorted(rw.favoured - present)
        if len(missing) == len(rw.favoured):
            raise ConfigError(
                "favoured",
                f"none of {missing} occurs in {rw.class_field!r} of the training set, "
                "so every weight would stay equal",
            )
        if missing:
            logger.warning("Favoured classes absent from the training set: %s", missing)

    def _train_loader_specifics(self, dataset, loader_kwargs):
        # A live sampler shards by rank itself; SpeechBrain's wrapper would
        # materialise a whole epoch up front and freeze it.
        given = loader_kwargs.get("batch_sampler") or loader_kwargs.get("sampler")
        if getattr(given, "handles_distributed", False):
            self.train_sampler = given
            return loader_kwargs
        return super()._train_loader_specifics(dataset, loader_kwargs)

    def _wrap_distributed(self):
        """DDP-wrap the modules; on CPU keep plain BatchNorm.

        SpeechBrain converts every BatchNorm to SyncBatchNorm under DDP, which
        runs only on GPUs. On CPU (gloo) each rank keeps its own batch
        statistics and DDP broadcasts rank 0's running statistics.
        """
        if not (self.distributed_launch and torch.device(self.device).type == "cpu"):
            return super()._wrap_distributed()
        for name, module in self.modules.items():
            if any(p.requires_grad for p in module.parameters()):
                self.modules[name] = torch.nn.parallel.DistributedDataParallel(
                    module,
                    device_ids=None,
                    find_unused_parameters=self.find_unused_parameters,
                )

    # -------------------------------------------------------------- training
    def fit_batch(self, batch):
        """SpeechBrain's ``fit_batch``; a skipped batch reports a NaN loss.

        A NaN return keeps skipped batches out of the running train loss.
        """
        self._skip_reason = None
        loss = super().fit_batch(batch)
        if self._skip_reason is not None:
            return torch.tensor(float("nan"))
        return loss

    def optimizers_step(self):
        """Step on the mean gradient of the window's usable micro-batches.

        No step (and no count) when none was usable. Under DDP, gradients the
        skipped last micro-batch left unsynchronised are averaged here.
        """
        usable, self._usable_in_window = self._usable_in_window, 0
        if usable == 0:
            self.zero_grad(set_to_none=True)
            return
        params = [p for p in self.modules.parameters() if p.requires_grad]
        if self._skip_reason is not None and self.distributed_launch:
            distributed.average_gradients(params)
        if usable < self.grad_accumulation_factor:
            scale = self.grad_accumulation_factor / usable
            for p in params:
                if p.grad is not None:
                    p.grad.mul_(scale)
        super().optimizers_step()

    def update_average(self, loss, avg_loss):
        """Running mean of the stage loss, weighted by usable examples per batch."""
        weight, self._batch_weight = self._batch_weight, 0
        if self.step == 1:
            self._avg_weight = 0  # first batch of a stage: a new average
        if weight == 0 or not torch.isfinite(loss):
            return avg_loss
        self._avg_weight += weight
        return avg_loss + (float(loss) - avg_loss) * weight / self._avg_weight

    @mark_as_saver
    def _save(self, path):
        super()._save(path)
        with open(path, "a", encoding="utf-8") as f:
            f.write(yaml.dump({"avg_train_weight": self._avg_weight}))

    @mark_as_loader
    def _recover(self, path, end_of_epoch):
        super()._recover(path, end_of_epoch)
        with open(path, encoding="utf-8") as f:
            saved = yaml.safe_load(f)
        # Older checkpoints weighted every batch equally.
        self._avg_weight = saved.get("avg_train_weight", self.step)

    @contextlib.contextmanager
    def _hook_running(self, name):
        """Mark hook ``name`` as running; yields whether this is its outermost call."""
        outermost = name not in self._running_hooks
        self._running_hooks.add(name)
        try:
            yield outermost
        finally:
            if outermost:
                self._running_hooks.discard(name)

    def _recipe_objectives(self, predictions, batch, stage):
        """The recipe's own ``compute_objectives``: its losses, no mining."""
        with self._hook_running("compute_objectives"):
            return self.compute_objectives(predictions, batch, stage)

    def _mined_objectives(self, recipe, predictions, batch, stage):
        losses = recipe(predictions, batch, stage)
        if not isinstance(losses, torch.Tensor):
            raise TypeError(
                f"{type(self).__name__}.compute_objectives must return a tensor, got "
                f"{type(losses).__name__}"
            )
        entries = None
        if self.reweighting.over == "sources":
            if losses.dim() != 2:
                raise ConfigError(
                    "over",
                    "sources needs one loss per example and source (shape [B, S]) "
                    f"from {type(self).__name__}.compute_objectives, got shape "
                    f"{tuple(losses.shape)}",
                )
            # One loss per example wherever one is needed; the reweighting
            # sees every source.
            entries, losses = losses, losses.mean(dim=1)
        elif losses.dim() == 0:
            if self.per_example_features:
                raise ValueError(
                    f"{type(self).__name__}.compute_objectives returned a scalar loss, "
                    f"but {', '.join(self.per_example_features)} need one loss per "
                    "example (shape [B])"
                )
            losses = losses.reshape(1)
        elif losses.dim() != 1:
            raise ValueError(
                f"{type(self).__name__}.compute_objectives must return one loss per "
                f"example (shape [B]), got shape {tuple(losses.shape)} (a loss per "
                "example and source, [B, S], needs reweighting over: sources)"
            )
        bad = self._bad_audio_mask(batch, losses, stage)
        if stage != sb.Stage.TRAIN:
            self._batch_weight = int((~bad).sum())
            if not bad.any():
                return losses.mean()
            if bad.all():
                return torch.tensor(float("nan"), device=losses.device)
            return losses[~bad].mean()
        return self._training_loss(losses, batch, bad, entries, predictions)

    def mining_scores(self, losses, predictions, batch):
        """What the sampler records for the examples of a training batch.

        ``losses``: their detached losses ``[B]``, returned as they are. A
        recipe may override this to hand the sampler another hardness computed
        from ``predictions`` (what ``compute_forward`` returned) and ``batch``
        (:class:`~hardmine.tasks.kws.KWSBrain`: how near a negative comes to a
        false alarm); examples with bad audio are marked after it.
        """
        return losses

    def _bad_audio_mask(self, batch, losses, stage):
        problems = getattr(batch, AUDIO_PROBLEM_FIELD, None)
        if problems is None:
            return torch.zeros_like(losses, dtype=torch.bool)
        ids = self._ids(batch, losses.numel())
        flags = []
        for uid, problem in zip(ids, problems):
            flags.append(bool(problem))
            if problem and uid not in self._reported_bad:
                self._reported_bad.add(uid)
                logger.warning(
                    "Broken audio in example %s (%s): it is left out of the %s loss",
                    uid,
                    problem,
                    stage.name.lower(),
                )
        if stage == sb.Stage.TRAIN:
            self._count["examples_bad_audio"] += sum(flags)
        return torch.tensor(flags, dtype=torch.bool, device=losses.device)

    @staticmethod
    def _ids(batch, n):
        ids = getattr(batch, "id", None)
        return list(ids) if ids is not None else [f"#{i}" for i in range(n)]

    def _training_loss(self, losses, batch, bad, entries=None, predictions=None):
        """The loss to backpropagate; ``losses`` [B] (the per-example means
        when ``entries`` holds the [B, S] losses of reweighting over sources)."""
        count = self._count
        count["batches"] += 1
        count["examples"] += losses.numel()
        self._batch_weight = 0
        ids = self._ids(batch, losses.numel())
        detached = losses.detach().float()
        importance = None
        if self.live_sampler is not None:
            scores = self.mining_scores(detached, predictions, batch)
            self.live_sampler.observe(ids, scores.masked_fill(bad, float("nan")))
            # The sampler's importance weights of these slots (is_beta), or None.
            get_weights = getattr(self.live_sampler, "batch_weights", None)
            importance = None if get_weights is None else get_weights(ids)

        reason, keep = self._local_reason(detached, bad, ids)
        loss = weights = None
        if reason is None:
            source = losses if entries is None else entries
            kept = source if bool(keep.all()) else source[keep]
            classes = self.reweighting.classes(batch)
            if classes is not None:
                classes = [c for c, k in zip(classes, keep.tolist()) if k]
            loss, weights = self.reweighting.reduce(
                kept, classes, epoch=self.current_epoch, step=self.optimizer_step
            )
            if importance is not None:
                # sum w p L / sum w p over the kept examples (p = 1 when
                # uniform; an example's w on each of its sources; with the
                # streaming partition only w is normalised).
                w = torch.as_tensor(importance, dtype=torch.float32)
                w = w.to(losses.device)[keep]
                if kept.dim() > 1:
                    w = w.unsqueeze(-1).expand_as(kept)
                mixed = self.reweighting.combine(weights, w)
                loss = (mixed.to(kept.dtype) * kept).sum()
            if self.loss_limit.exceeded(loss.detach()):
                logger.warning(
                    "Batch loss %.4g is not below loss_upper_lim=%g: skipping the batch",
                    float(loss.detach()),
                    self.loss_limit.loss_upper_lim,
                )
                reason = "loss_limit"

        # One vote, the same on every rank, so that the ranks skip, count
        # skips, raise and update the capacity controller together; a rank
        # that steps while another does not would wait for ever in the
        # gradient all-reduce.
        vote = distributed.max_over_ranks(_VOTE.get(reason, 2))
        if vote and reason is None:
            reason = "other_rank"
        if vote != 1:
            self.loss_limit.record(skipped=vote == 2)
        reachable = self.reweighting.update_controller(
            None if reason is not None else weights
        )
        if reason is not None:
            return self._skip(reason, losses)
        # The streaming partition's collective: every rank, every used batch,
        # after the vote (a no-op unless partition is ema).
        self.reweighting.update_partition(None if importance is None else w)
        if reachable is False:
            count["capacity_unreachable"] += 1
        if importance is not None:
            count["ess_sum"] += _weights_ess(mixed, self.reweighting.streamed)
        else:
            count["ess_sum"] += (
                int(keep.sum())
                if weights is None
                else _weights_ess(weights, self.reweighting.streamed)
            )
        count["ess_batches"] += 1
        self._usable_in_window += 1
        self._batch_weight = int(keep.sum())
        return loss

    def _local_reason(self, detached, bad, ids):
        """This rank's reason to skip the batch (or None) and the examples to keep."""
        finite = torch.isfinite(detached)
        keep = ~bad
        if not finite.all():
            named = [ids[i] for i in torch.nonzero(~finite).flatten().tolist()]
            if bool((finite | bad).all()):
                # Dropping a broken example by indexing is not enough: its
                # zero weight times a NaN in its backward pass is NaN.
                logger.warning(
                    "Non-finite loss for %s (broken audio): its gradient would be "
                    "NaN, skipping the batch. A data pipeline that substitutes a "
                    "finite signal for broken audio keeps such batches.",
                    ", ".join(named),
                )
            else:
                logger.warning(
                    "Non-finite loss for %s: skipping the batch", ", ".join(named)
                )
            return "nonfinite", keep
        if not keep.any():
            return "all_bad_audio", keep
        easy = keep & ~self.threshold_filter.keep(detached, keep)
        self._count["examples_filtered"] += int(easy.sum())
        keep = keep & ~easy
        return (None if keep.any() else "all_easy"), keep

    def _skip(self, reason, losses):
        self._skip_reason = reason
        self._count["skipped_" + reason] += 1
        # A leaf with no path to the parameters: backward() touches nothing.
        return torch.zeros((), device=losses.device, requires_grad=True)

    # ------------------------------------------------------------ statistics
    def _reset_counters(self):
        keys = ["batches", "examples", "examples_filtered", "examples_bad_audio"]
        keys += ["ess_sum", "ess_batches", "capacity_unreachable"]
        keys += ["skipped_" + r for r in SKIP_REASONS]
        self._count = dict.fromkeys(keys + ["skipped_other_rank"], 0.0)

    def _mining_on_stage_start(self, recipe, stage, epoch=None):
        if stage == sb.Stage.TRAIN:
            self.current_epoch = epoch if epoch is not None else self.current_epoch
            self._reset_counters()
            self.loss_limit.consecutive = 0
            # SpeechBrain flushes the gradients of a window the last epoch
            # left unfinished; nothing of it may count towards the next step.
            self._usable_in_window = 0
            self._epoch_started = time.time()
        return recipe(stage, epoch)

    def _mining_on_stage_end(self, recipe, stage, stage_loss, epoch=None):
        if stage == sb.Stage.TRAIN:
            self.mining_stats = self._epoch_statistics()
            self._write_statistics(epoch)
        return recipe(stage, stage_loss, epoch)

    def _epoch_statistics(self):
        """This epoch's counters, summed over all ranks."""
        names = list(self._count)
        totals = dict(
            zip(names, distributed.sum_over_ranks([self._count[k] for k in names]))
        )
        stats = {
            "batches": int(totals["batches"]),
            "examples": int(totals["examples"]),
            "examples_filtered": int(totals["examples_filtered"]),
            "examples_bad_audio": int(totals["examples_bad_audio"]),
        }
        skipped = {
            r: int(totals["skipped_" + r]) for r in SKIP_REASONS + ("other_rank",)
        }
        stats["batches_skipped"] = sum(skipped.values())
        stats.update({f"skipped_{r}": n for r, n in skipped.items() if n})
        if totals["ess_batches"]:
            stats["weights_ess"] = totals["ess_sum"] / totals["ess_batches"]
        if self.reweighting.active and self.reweighting.mode in (
            "robust",
            "curriculum",
        ):
            stats["temperature"] = self.reweighting.temperature(
                self.current_epoch, self.optimizer_step
            )
        partition = self.reweighting.partition_state
        if self.reweighting.streaming and partition.initialised:
            stats["log_partition"] = float(partition.log_z)
        if self.reweighting.controller is not None:
            controller = self.reweighting.controller
            stats["beta"] = controller.beta
            stats["weights_kl"] = controller.last_kl
            unreachable = int(totals["capacity_unreachable"])
            stats["capacity_unreachable"] = unreachable
            if unreachable:
                logger.warning(
                    "capacity %.3g nats was out of reach in %d of %d used batches "
                    "(weights over n examples reach at most log(n) nats): they left "
                    "the temperature unchanged. Raise the batch size, lower the "
                    "threshold filter's share or lower the capacity.",
                    controller.capacity,
                    unreachable,
                    int(totals["ess_batches"]),
                )
        agree = self._sampler_ranks_agree()
        if agree is not None:
            stats["sampler_ranks_agree"] = int(agree)
        agree = self._weights_ranks_agree()
        if agree is not None:
            stats["weights_ranks_agree"] = int(agree)
        if self.live_sampler is not None and hasattr(self.live_sampler, "stats"):
            stats.update(
                {f"sampler_{k}": v for k, v in self.live_sampler.stats().items()}
            )
        return stats

    def _sampler_ranks_agree(self):
        """Under DDP, whether every rank holds the same loss table (else None)."""
        table = getattr(self.live_sampler, "loss_table", None)
        if not isinstance(table, LossPowerTable) or distributed.world_size() == 1:
            return None
        digests = distributed.gather_objects(table.digest())
        if len(set(digests)) > 1:
            logger.error("The sampler's loss tables differ across ranks: %s", digests)
        return len(set(digests)) == 1

    def _weights_ranks_agree(self):
        """Under DDP, whether every rank holds the same model weights (else None)."""
        if distributed.world_size() == 1:
            return None
        digests = distributed.gather_objects(
            distributed.tensors_digest(self.modules.parameters())
        )
        if len(set(digests)) > 1:
            logger.error("The model weights differ across ranks: %s", digests)
        return len(set(digests)) == 1

    def _write_statistics(self, epoch):
        if not sb.utils.distributed.if_main_process():
            return
        logger.info("Mining statistics, epoch %s: %s", epoch, self.mining_stats)
        folder = getattr(self.hparams, "output_folder", None)
        if not folder:
            return
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, "mining_stats.jsonl")
        epoch_time = time.time() - getattr(self, "_epoch_started", time.time())
        record = {
            "epoch": epoch,
            "optimizer_step": self.optimizer_step,
            "epoch_time_s": round(epoch_time, 3),
            # Training time summed over the epochs logged so far (resumes included).
            "wall_time_s": round(_last_wall_time(path) + epoch_time, 3),
            **self.mining_stats,
        }
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, default=float) + "\n")


#: Brain hook -> the HardMiningBrain method that runs the mining around it.
_MINED_HOOKS = {
    "compute_objectives": HardMiningBrain._mined_objectives,
    "on_stage_start": HardMiningBrain._mining_on_stage_start,
    "on_stage_end": HardMiningBrain._mining_on_stage_end,
}


def _with_mining(name, recipe_hook):
    """``recipe_hook`` (a function of the class) with the mining around it.

    The mining runs in the outermost call only: while it runs, a call of the
    same hook (the recipe's ``super()`` call to a parent recipe's hook, or
    :meth:`HardMiningBrain._recipe_objectives`) goes straight to the code.
    """
    mining = _MINED_HOOKS[name]

    @functools.wraps(recipe_hook)
    def hook(self, *args, **kwargs):
        with self._hook_running(name) as outermost:
            if not outermost:
                return recipe_hook(self, *args, **kwargs)
            return mining(self, functools.partial(recipe_hook, self), *args, **kwargs)

    return hook


# Recipes without a stage hook of their own still get the mining's.
for _name in ("on_stage_start", "on_stage_end"):
    setattr(HardMiningBrain, _name, _with_mining(_name, getattr(sb.Brain, _name)))


def _weights_ess(weights, streamed=False):
    """Effective sample size, in examples, of a batch's weights.

    Over sources an example's weight is the sum of its sources' weights;
    streaming weights (``streamed``: they need not sum to 1) are normalised
    first.
    """
    if weights.dim() > 1:
        weights, streamed = weights.double().sum(dim=-1), True
    if streamed:
        weights = weights.double() / weights.double().sum()
    return effective_sample_size(weights)


def _last_wall_time(path):
    """``wall_time_s`` of the last record of a mining-stats file, or 0."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = [line for line in f if line.strip()]
        return float(json.loads(lines[-1]).get("wall_time_s", 0.0)) if lines else 0.0
    except (OSError, ValueError):
        return 0.0
