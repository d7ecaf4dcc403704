"""ISBL over sources: hard-example mining when every mixture is new.

Under dynamic mixing (:mod:`hardmine.tasks.dynamic_mixing`) a training
mixture exists once, so a loss cannot steer the next draw of the same
mixture. :class:`SourceSampler` scores the *sources* instead and plans the
mixtures of each batch from those scores:

* **Scores.** A source's score is the latest loss of a mixture it was part
  of (1.0 before its first mixture). When the losses of a batch come back,
  each mixture's loss is given to every one of its sources (a non-finite
  loss, e.g. of a mixture whose audio failed, quarantines them all, as in
  :class:`~hardmine.loss_table.LossPowerTable`).
* **Speakers.** Each new mixture takes ``num_spks`` distinct speakers:
  successive draws without replacement, each speaker drawn in proportion to
  its number of sources among the speakers not drawn yet (the plain dynamic
  mixing rule, :func:`~hardmine.tasks.dynamic_mixing.draw_speakers`); the
  speaker choice does not depend on the losses.
* **Sources.** The pools are the speakers, ``C_k`` = the sources of speaker
  ``k``. Within each chosen speaker the source ``x_i`` is drawn with

      P(x_i | C_k) = (L_i ** alpha + eps) / sum_{j in C_k} (L_j ** alpha + eps)

  by the :class:`~hardmine.sampler_leaves.ISBLLeaf` over the sources, with
  all its options (``transform``, ``momentum``, ``capacity``,
  ``unseen_score``, ``uniform_mix``, ``score_decay``, the noise guard).
  With ``alpha = 0`` the draws are those of plain dynamic mixing.

Each slot of a batch is a *plan* ``(epoch, number, source_1, ...,
source_N)``, ``number`` the slot's draw number in the epoch; the
:class:`~hardmine.tasks.dynamic_mixing.DynamicMixingDataset` turns it into
the mixture (its gains, crops and speeds seeded by ``(seed, epoch,
number)``), whose id names its sources, so :meth:`SourceSampler.observe`
finds them from ``batch.id``.

Everything else is :class:`~hardmine.sampler_base.BatchSamplerBase`'s:
sharding by rank (every rank plans the same global batch and keeps the slots
``[rank::world_size]``), the one all-gather of the (source, loss) pairs per
batch, ``set_epoch``, the resume placeholders and the ``.npz`` checkpoint
(refused for another source table). Importance weights (``is_beta``) are not
offered: a mixture's draw probability is a product over its speakers and
sources, which the per-example weights of the base do not describe.

In the recipes, ``--sampler isbl`` with ``dynamic_mixing: True`` builds this
sampler with the ISBL fragment's options (:func:`source_sampler_factory`);
the pools are the speakers, so ``isbl_pool_field`` and ``isbl_pools`` must
stay unset.

Example
-------
>>> from hardmine.tasks.dynamic_mixing import SourceTable, DynamicMixingDataset
>>> speakers = ["a", "a", "b", "b", "b", "c"]
>>> table = SourceTable([f"{i}.wav" for i in range(6)], list("uvwxyz"), speakers)
>>> dataset = DynamicMixingDataset(table, num_spks=2, sample_rate=8000, mixtures_per_epoch=4)
>>> sampler = SourceSampler(dataset, batch_size=2, seed=0, alpha=1.0)
>>> sampler.set_epoch(1)
>>> plans = list(sampler)
>>> plans[0]  # (epoch, draw number, one source of each of 2 speakers)
[(1, 0, 1, 4), (1, 1, 0, 3)]
>>> ids = [dataset_id(p) for p in plans[0]]
>>> ids
['dm-e1-n0-s1-s4', 'dm-e1-n1-s0-s3']
>>> sampler.observe(ids, [4.0, 2.0])  # every source takes its mixture's loss
>>> sampler.loss_table.scores.tolist()
[2.0, 4.0, 1.0, 2.0, 4.0, 1.0]
>>> sampler.source_probabilities().round(3).tolist()
[0.333, 0.667, 0.143, 0.286, 0.571, 1.0]
"""

import functools
import math

import numpy as np

from hardmine.distributed import all_gather_pairs
from hardmine.sampler_base import BatchSamplerBase, _to_numpy
from hardmine.tasks.dynamic_mixing import draw_speakers, mixture_id, parse_mixture_id
from hardmine.validation import ConfigError, check_int

__all__ = ["SourceSampler", "source_sampler_factory", "dataset_id"]


def dataset_id(plan):
    """The id the dynamic-mixing dataset gives the mixture of ``plan``."""
    epoch, number, *sources = plan
    return mixture_id(epoch, number, sources)


class SourceSampler(BatchSamplerBase):
    """Batch sampler planning dynamic mixtures from loss-scored sources.

    Give it to a DataLoader over a
    :class:`~hardmine.tasks.dynamic_mixing.DynamicMixingDataset` as
    ``batch_sampler``; it yields lists of plans (see the module for the
    rule). Batch ``b`` of epoch ``e`` is planned with a generator seeded
    with ``(seed, e, b)`` from the scores known at that moment, so with the
    same losses a run, and a run resumed from a checkpoint, plan the same
    mixtures.

    Arguments
    ---------
    dataset : DynamicMixingDataset
        The training set (its source table, speakers and ``num_spks``).
    batch_size : int
        Mixtures per batch on each rank.
    epoch_length : int, optional
        Mixtures per epoch over all ranks (default: ``len(dataset)``).
    seed : int
        Seed of the planning stream (>= 0).
    pool_field, pools, pool_mix
        Accepted for the ISBL fragment's sake and must keep their defaults
        (None / empty): the pools are the speakers.
    **options
        Options of the ISBL leaf (``alpha``, ``eps``, ``transform``,
        ``momentum``, ``capacity``, ``capacity_lr``, ``refresh_every``,
        ``unseen_score``, ``uniform_mix``, ``score_decay``,
        ``score_clip_quantile``, ``persistent_visits``) and ``rank``,
        ``world_size``, as for :class:`~hardmine.isbl.ISBLSampler`;
        ``is_beta`` must stay None.
    """

    def __init__(
        self,
        dataset,
        batch_size,
        *,
        epoch_length=None,
        seed=1234,
        pool_field=None,
        pools=None,
        pool_mix=None,
        pool_alpha=None,
        reference=None,
        **options,
    ):
        if not getattr(dataset, "dynamic_mixing", False):
            raise ConfigError(
                "sampler",
                "the source sampler needs a dynamic-mixing training set "
                f"(dynamic_mixing: True), got {type(dataset).__name__}",
            )
        if pool_field is not None:
            raise ConfigError(
                "pool_field",
                "under dynamic mixing the pools are the speakers; leave it null",
            )
        if pools:
            raise ConfigError(
                "pools", "under dynamic mixing the pools are the speakers; leave it {}"
            )
        if pool_mix not in (None, "natural") and not (
            isinstance(pool_mix, dict) and not pool_mix
        ):
            raise ConfigError(
                "pool_mix",
                "under dynamic mixing speakers are drawn in proportion to their "
                f"sources; leave it {{}}, got {pool_mix!r}",
            )
        if reference is not None:
            raise ConfigError(
                "reference",
                "reference losses name stored examples; under dynamic mixing every "
                "mixture is new: leave it null",
            )
        if pool_alpha:
            raise ConfigError(
                "pool_alpha",
                "under dynamic mixing the pools are the speakers; leave it {}",
            )
        if options.get("is_beta") is not None:
            raise ConfigError(
                "is_beta",
                "importance weights are not available with dynamic mixing (a "
                "mixture is drawn by speakers and sources); leave it null",
            )
        self.batch_size = check_int("batch_size", batch_size, minimum=1)
        table = dataset.sources
        super().__init__(
            table.ids,
            placeholder_size=self.batch_size,
            seed=seed,
            leaf="isbl",
            **options,
        )
        if epoch_length is None:
            epoch_length = len(dataset)
        self.epoch_length = check_int("epoch_length", epoch_length, minimum=1)
        # Placeholder slots must be valid dataset indices (slot numbers).
        self._placeholder = [i % len(dataset) for i in range(self.batch_size)]
        self.num_spks = dataset.num_spks
        self.speaker_sizes = np.asarray(table.speaker_sizes, dtype=np.int64)
        self.speaker_names = list(table.speaker_names)
        self._leaf = self._make_leaf(table.speaker_of)
        self.table = self._leaf.table
        # The shares weigh the pools in the capacity's KL: a speaker's
        # chance of being among the chosen, near its share of the sources.
        self._leaf.set_shares(self.speaker_sizes / self.speaker_sizes.sum())

    # ----------------------------------------------------------- epochs
    def __len__(self):
        """Batches per epoch on each rank."""
        return self._max_batches(self._rank_world()[1])

    def _max_batches(self, world):
        return math.ceil(self.epoch_length / (self.batch_size * world))

    def draw_global_batch(self, batch, world=None):
        """The sources of global batch ``batch``: shape [B * world, num_spks].

        A pure function of the scores, seed, epoch and ``batch``.
        """
        world = self._rank_world()[1] if world is None else world
        rng = self._generator(self.epoch, batch)
        count = self.batch_size * world
        speakers = draw_speakers(rng, self.speaker_sizes, count, self.num_spks)
        sources = self._leaf.draw(speakers.reshape(-1), rng)
        return sources.reshape(count, self.num_spks)

    def _global_batches(self, batch, cursor, world):
        for number in range(batch, self._max_batches(world)):
            yield self.draw_global_batch(number, world)

    def _hand_out(self, drawn, cursor, me, world):
        # A plan per slot: (epoch, draw number, its num_spks sources).
        numbers = cursor + np.arange(drawn.shape[0])
        return [
            (self.epoch, int(n), *row)
            for n, row in zip(
                numbers[me::world], drawn[me::world].tolist(), strict=True
            )
        ]

    # --------------------------------------------------------- feedback
    def sources_of(self, ids):
        """The source indices of mixture ids, shape [len(ids), num_spks]."""
        rows = []
        for name in ids:
            try:
                sources = parse_mixture_id(name)[2]
            except ValueError:
                raise ValueError(
                    f"observe: {name!r} is not a dynamic-mixing mixture id"
                ) from None
            if len(sources) != self.num_spks or not all(
                0 <= s < len(self.ids) for s in sources
            ):
                raise ValueError(f"observe: {name!r} names sources outside the table")
            rows.append(sources)
        return np.asarray(rows, dtype=np.int64).reshape(len(rows), self.num_spks)

    def observe(self, ids, losses):
        """Give each mixture's loss to all its sources (collective under DDP).

        Arguments
        ---------
        ids : list of str
            Mixture ids of this rank's batch (``batch.id``).
        losses : torch.Tensor or array_like
            One loss per mixture, NaN for broken ones.
        """
        losses = _to_numpy(losses)
        ids = list(ids)
        if len(ids) != losses.shape[0]:
            raise ValueError(f"observe: {len(ids)} ids but {losses.shape[0]} losses")
        sources = self.sources_of(ids)
        parts = all_gather_pairs(sources.reshape(-1), np.repeat(losses, self.num_spks))
        self._leaf.observe(
            np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        )
        self._consumed += 1
        self._offsets.pop(self._consumed - 1, None)

    # -------------------------------------------------------- reporting
    def source_probabilities(self):
        """Within-speaker draw probability of every source."""
        probs = np.empty(len(self.ids), dtype=np.float64)
        for k in range(len(self.speaker_names)):
            probs[self.table.members(k)] = self.table.probabilities(k)
        return probs

    def stats(self):
        """The base's statistics plus ``n_sources`` and ``n_speakers``."""
        return {
            "n_sources": len(self.ids),
            "n_speakers": len(self.speaker_names),
            **super().stats(),
        }


class _SourceSamplerFactory(functools.partial):
    """A factory of :class:`SourceSampler` (marked for the Brain's check)."""

    dynamic_mixing = True


def source_sampler_factory(isbl):
    """The source-sampler factory taking the options of an ISBL factory.

    Arguments
    ---------
    isbl : callable
        The recipe's ISBL entry, a ``!name:hardmine.isbl.ISBLSampler``
        factory (a :class:`functools.partial` whose keywords are the
        fragment's fields).

    Returns
    -------
    callable
        Called with the training set, returns a :class:`SourceSampler`.

    Example
    -------
    >>> from hardmine.isbl import ISBLSampler
    >>> factory = source_sampler_factory(
    ...     functools.partial(ISBLSampler, batch_size=2, alpha=0.5))
    >>> factory.func is SourceSampler, factory.keywords, factory.dynamic_mixing
    (True, {'batch_size': 2, 'alpha': 0.5}, True)
    """
    keywords = dict(getattr(isbl, "keywords", None) or {})
    return _SourceSamplerFactory(SourceSampler, **keywords)
