"""Small helpers for running the samplers under torch.distributed.

All helpers fall back to single-process behaviour when no process group is
initialised, so the same code runs in tests, on one CPU and under torchrun.

Example
-------
>>> import numpy as np
>>> rank(), world_size()
(0, 1)
>>> parts = all_gather_pairs(np.array([3, 1]), np.array([0.5, 2.0]))
>>> [(i.tolist(), v.tolist()) for i, v in parts]
[([3, 1], [0.5, 2.0])]
>>> sum_over_ranks([1.0, 2.0]), any_over_ranks(False), max_over_ranks(2)
([1.0, 2.0], False, 2)
>>> shutdown()  # no process group: nothing to end
"""

import gc
import hashlib

import numpy as np
import torch
import torch.distributed as dist

__all__ = [
    "is_distributed",
    "rank",
    "world_size",
    "all_gather_pairs",
    "sum_over_ranks",
    "mean_over_ranks",
    "any_over_ranks",
    "max_over_ranks",
    "gather_objects",
    "average_gradients",
    "tensors_digest",
    "shutdown",
]


def is_distributed():
    """Whether a torch.distributed process group is up."""
    return dist.is_available() and dist.is_initialized()


def rank():
    """Global rank of this process (0 without a process group)."""
    return dist.get_rank() if is_distributed() else 0


def world_size():
    """Number of processes (1 without a process group)."""
    return dist.get_world_size() if is_distributed() else 1


def _collective_device():
    # NCCL only moves CUDA tensors; gloo and the others take CPU tensors.
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_gather_pairs(indices, values):
    """Collect ``(indices, values)`` from every rank, in rank order.

    Ranks may contribute different numbers of pairs: the counts are gathered
    first, every rank pads to the largest count, and the padding is cut off
    again. Indices travel as float64, exact for indices below 2**53.

    Arguments
    ---------
    indices : array_like of int
        This rank's example indices.
    values : array_like of float
        One value per index (NaN allowed).

    Returns
    -------
    list of (numpy.ndarray, numpy.ndarray)
        One ``(int64 indices, float64 values)`` pair per rank, rank 0 first.
        Every rank receives the same list.
    """
    indices = np.asarray(indices, dtype=np.int64).reshape(-1)
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if indices.shape != values.shape:
        raise ValueError(
            f"all_gather_pairs: {indices.shape[0]} indices but {values.shape[0]} values"
        )
    if not is_distributed():
        return [(indices, values)]
    device = _collective_device()
    world = dist.get_world_size()
    count = torch.tensor([indices.shape[0]], dtype=torch.int64, device=device)
    counts = [torch.zeros_like(count) for _ in range(world)]
    dist.all_gather(counts, count)
    counts = [int(c.item()) for c in counts]
    longest = max(counts)
    packed = torch.zeros((longest, 2), dtype=torch.float64, device=device)
    packed[: indices.shape[0], 0] = torch.from_numpy(indices.astype(np.float64))
    packed[: indices.shape[0], 1] = torch.from_numpy(values)
    gathered = [torch.empty_like(packed) for _ in range(world)]
    dist.all_gather(gathered, packed)
    result = []
    for n, block in zip(counts, gathered, strict=True):
        block = block[:n].cpu().numpy()
        result.append((block[:, 0].astype(np.int64), block[:, 1].copy()))
    return result


def sum_over_ranks(values):
    """Sum a float or a list of floats over all ranks (float64)."""
    if world_size() == 1:
        return values
    scalar = not isinstance(values, (list, tuple))
    t = torch.tensor(
        [values] if scalar else list(values),
        dtype=torch.float64,
        device=_collective_device(),
    )
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    out = t.cpu().tolist()
    return out[0] if scalar else out


def mean_over_ranks(value):
    """Average a float over all ranks."""
    if world_size() == 1:
        return value
    return sum_over_ranks(float(value)) / world_size()


def any_over_ranks(flag):
    """True on every rank if ``flag`` is true on any rank."""
    if world_size() == 1:
        return bool(flag)
    return sum_over_ranks(1.0 if flag else 0.0) > 0


def max_over_ranks(value):
    """The largest of an integer over all ranks (the same on every rank)."""
    if world_size() == 1:
        return int(value)
    t = torch.tensor([int(value)], dtype=torch.int64, device=_collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def gather_objects(obj):
    """The list of ``obj`` from every rank (``[obj]`` in a single process)."""
    if world_size() == 1:
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def average_gradients(parameters):
    """Average the gradients of ``parameters`` over all ranks, as DDP does.

    For the rare step whose gradients DDP did not synchronise (the backward
    pass that would have all-reduced them was skipped). A parameter whose
    gradient is ``None`` on every rank stays ``None``; one that has a
    gradient on some ranks only gets zeros from the others. Two collectives:
    the "has a gradient" flags, then one flat buffer.
    """
    params = [p for p in parameters if p.requires_grad]
    if world_size() == 1 or not params:
        return
    device = _collective_device()
    has = torch.tensor(
        [p.grad is not None for p in params], dtype=torch.int64, device=device
    )
    dist.all_reduce(has, op=dist.ReduceOp.SUM)
    active = [p for p, n in zip(params, has.tolist(), strict=True) if n > 0]
    if not active:
        return
    flat = torch.cat(
        [
            (p.grad if p.grad is not None else torch.zeros_like(p))
            .detach()
            .reshape(-1)
            .to(device=device, dtype=torch.float64)
            for p in active
        ]
    )
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= world_size()
    offset = 0
    for p in active:
        n = p.numel()
        value = flat[offset : offset + n].view_as(p).to(p.device, p.dtype)
        offset += n
        if p.grad is None:
            p.grad = value
        else:
            p.grad.copy_(value)


def tensors_digest(tensors):
    """A short fingerprint of the exact values of a sequence of tensors.

    Example
    -------
    >>> a = [torch.ones(2), torch.zeros(3)]
    >>> tensors_digest(a) == tensors_digest([t.clone() for t in a])
    True
    >>> tensors_digest(a) == tensors_digest([torch.ones(2), torch.zeros(2)])
    False
    """
    h = hashlib.sha1()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(str((tuple(t.shape), t.dtype)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def shutdown():
    """End a distributed run: free what still holds the process group, then destroy it.

    DDP modules still alive when the interpreter exits are freed after the
    process group is gone, which now and then aborts a rank ("terminate
    called without an active exception"). Call this after the run's last
    collective, once the Brain is out of scope: a garbage collection frees
    whatever a reference cycle still holds, a barrier lets every rank get
    there, then the group is destroyed. A no-op without a process group.
    """
    if not is_distributed():
        return
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()
