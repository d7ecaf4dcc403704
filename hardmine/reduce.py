"""Reductions across torch.distributed ranks that fall back to no-ops.

Every function returns its input unchanged when torch.distributed is not
initialised, so the same code runs in a single process and under torchrun.

Example
-------
>>> sum_over_ranks([1.0, 2.0])
[1.0, 2.0]
>>> any_over_ranks(False)
False
"""

import torch
import torch.distributed as dist

__all__ = [
    "is_distributed",
    "sum_over_ranks",
    "mean_over_ranks",
    "any_over_ranks",
    "gather_objects",
]


def is_distributed():
    """Whether a torch.distributed process group with several ranks is up."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def sum_over_ranks(values):
    """Sum a float or a list of floats over all ranks (float64, on CPU)."""
    if not is_distributed():
        return values
    scalar = not isinstance(values, (list, tuple))
    t = torch.tensor([values] if scalar else list(values), dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    out = t.tolist()
    return out[0] if scalar else out


def mean_over_ranks(value):
    """Average a float over all ranks."""
    if not is_distributed():
        return value
    return sum_over_ranks(float(value)) / dist.get_world_size()


def any_over_ranks(flag):
    """True on every rank if ``flag`` is true on any rank."""
    if not is_distributed():
        return bool(flag)
    return sum_over_ranks(1.0 if flag else 0.0) > 0


def gather_objects(obj):
    """The list of ``obj`` from every rank (``[obj]`` in a single process)."""
    if not is_distributed():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out
