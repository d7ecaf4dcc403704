"""Loss-limit skipping: a batch with a runaway loss is not learned from.

A non-finite per-example loss, or a final loss at or above
``loss_upper_lim`` (999999 in SpeechBrain's separation recipes), marks a
batch whose gradient would damage the model. Such a batch gets no backward
pass and no optimizer step. A run that skips batch after batch is broken, so
``max_consecutive_skips`` turns endless skipping into an error.
"""

import math

from hardmine.validation import check_int, check_number

__all__ = ["LossLimit", "TooManySkipsError"]


class TooManySkipsError(RuntimeError):
    """Raised when too many consecutive batches had to be skipped."""


class LossLimit:
    """Decide whether a batch loss is usable and watch for endless skipping.

    Arguments
    ---------
    loss_upper_lim : float
        A final loss ``>= loss_upper_lim`` skips the batch.
    max_consecutive_skips : int
        How many batches in a row may be skipped (for a non-finite loss, the
        loss limit or broken audio) before training stops with an error.

    Example
    -------
    >>> limit = LossLimit(loss_upper_lim=100.0, max_consecutive_skips=2)
    >>> limit.exceeded(99.0), limit.exceeded(100.0), limit.exceeded(float("nan"))
    (False, True, True)
    >>> limit.record(skipped=True); limit.record(skipped=True)
    >>> limit.record(skipped=True)
    Traceback (most recent call last):
    ...
    hardmine.loss_limit.TooManySkipsError: 3 consecutive batches were skipped (max_consecutive_skips=2): the run is broken; see the log for the IDs of the offending examples
    """

    def __init__(self, loss_upper_lim=999999.0, max_consecutive_skips=100):
        self.loss_upper_lim = check_number("loss_upper_lim", loss_upper_lim)
        self.max_consecutive_skips = check_int(
            "max_consecutive_skips", max_consecutive_skips, minimum=1
        )
        self.consecutive = 0

    def exceeded(self, loss):
        """Whether a final batch loss must be skipped."""
        loss = float(loss)
        return not math.isfinite(loss) or loss >= self.loss_upper_lim

    def record(self, skipped):
        """Track consecutive skips; raise once there are too many."""
        self.consecutive = self.consecutive + 1 if skipped else 0
        if self.consecutive > self.max_consecutive_skips:
            raise TooManySkipsError(
                f"{self.consecutive} consecutive batches were skipped "
                f"(max_consecutive_skips={self.max_consecutive_skips}): the run "
                "is broken; see the log for the IDs of the offending examples"
            )

    def __repr__(self):
        return (
            f"LossLimit(loss_upper_lim={self.loss_upper_lim}, "
            f"max_consecutive_skips={self.max_consecutive_skips})"
        )
