"""Threshold filtering: examples that are already solved leave the batch.

SpeechBrain's separation recipes drop every example whose negative SI-SNR is
below -30 dB: such an example contributes almost no useful gradient, and
keeping it dilutes the ones still being learned.
"""

import torch

from hardmine.validation import check_number

__all__ = ["ThresholdFilter"]


class ThresholdFilter:
    """Keep only the examples whose loss is above ``threshold``.

    Arguments
    ---------
    threshold : float or None
        Examples with ``loss <= threshold`` are dropped. ``None`` keeps every
        example (the filter is off), which lets a command line switch it off
        with ``--threshold null``.

    Example
    -------
    >>> f = ThresholdFilter(threshold=-30.0)
    >>> f.keep(torch.tensor([-35.0, -30.0, -12.5, 4.0])).tolist()
    [False, False, True, True]
    >>> ThresholdFilter(None).keep(torch.tensor([-99.0])).tolist()
    [True]
    """

    def __init__(self, threshold=-30.0):
        if threshold is not None:
            threshold = check_number("threshold", threshold)
        self.threshold = threshold

    @property
    def active(self):
        """Whether the filter can drop anything."""
        return self.threshold is not None

    def keep(self, losses):
        """Boolean mask of the examples to keep.

        Arguments
        ---------
        losses : torch.Tensor
            One loss per example, shape [B].

        Returns
        -------
        torch.Tensor
            Bool mask of shape [B].
        """
        if self.threshold is None:
            return torch.ones_like(losses, dtype=torch.bool)
        return losses > self.threshold

    def __repr__(self):
        return f"ThresholdFilter(threshold={self.threshold})"
