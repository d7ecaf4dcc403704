"""Threshold filtering: examples that are already solved leave the batch.

SpeechBrain's separation recipes drop every example whose negative SI-SNR is
below -30 dB: such an example contributes almost no useful gradient, and
keeping it dilutes the ones still being learned.

``keep_hardest`` is the relative form of the same rule, the selection of
selective backprop (Jiang et al., 2019) and of online hard-example mining:
of the examples a batch still holds, only the share with the highest losses
stays, whatever their level.
"""

import math

import torch

from hardmine.validation import ConfigError, check_number

__all__ = ["ThresholdFilter"]


class ThresholdFilter:
    """Keep only the examples whose loss is above ``threshold``.

    Arguments
    ---------
    threshold : float or None
        Examples with ``loss <= threshold`` are dropped. ``None`` keeps every
        example (the filter is off), which lets a command line switch it off
        with ``--threshold null``.
    keep_hardest : float or None
        A share in (0, 1]: of the ``n`` examples left after the threshold,
        the ``ceil(keep_hardest * n)`` with the highest losses stay (equal
        losses: the earlier example first). ``None`` keeps them all.

    Example
    -------
    >>> f = ThresholdFilter(threshold=-30.0)
    >>> f.keep(torch.tensor([-35.0, -30.0, -12.5, 4.0])).tolist()
    [False, False, True, True]
    >>> ThresholdFilter(None).keep(torch.tensor([-99.0])).tolist()
    [True]
    >>> hardest = ThresholdFilter(None, keep_hardest=0.5)
    >>> hardest.keep(torch.tensor([0.3, 2.0, 0.1, 1.1, 0.7])).tolist()
    [False, True, False, True, True]
    """

    def __init__(self, threshold=-30.0, keep_hardest=None):
        if threshold is not None:
            threshold = check_number("threshold", threshold)
        if keep_hardest is not None:
            keep_hardest = check_number(
                "keep_hardest", keep_hardest, minimum=0.0, maximum=1.0
            )
            if keep_hardest == 0.0:
                raise ConfigError(
                    "keep_hardest", "must be > 0 (null keeps every example), got 0.0"
                )
        self.threshold = threshold
        self.keep_hardest = keep_hardest

    @property
    def active(self):
        """Whether the filter can drop anything."""
        return self.threshold is not None or self.keep_hardest is not None

    def keep(self, losses, candidates=None):
        """Boolean mask of the examples to keep.

        Arguments
        ---------
        losses : torch.Tensor
            One loss per example, shape [B].
        candidates : torch.Tensor, optional
            Bool mask [B] of the examples still in the batch (e.g. without
            broken audio); the others are never kept and do not count
            towards ``keep_hardest``'s share.

        Returns
        -------
        torch.Tensor
            Bool mask of shape [B].
        """
        if candidates is None:
            mask = torch.ones_like(losses, dtype=torch.bool)
        else:
            mask = candidates.clone()
        if self.threshold is not None:
            mask &= losses > self.threshold
        if self.keep_hardest is not None:
            n = int(mask.sum())
            k = math.ceil(self.keep_hardest * n - 1e-9)
            if k < n:
                ranked = losses.masked_fill(~mask, -math.inf)
                order = torch.sort(ranked, descending=True, stable=True).indices
                mask = torch.zeros_like(mask)
                mask[order[:k]] = True
        return mask

    def __repr__(self):
        return (
            f"ThresholdFilter(threshold={self.threshold}, "
            f"keep_hardest={self.keep_hardest})"
        )
