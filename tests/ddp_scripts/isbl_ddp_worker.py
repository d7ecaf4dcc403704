"""Worker for tests/test_isbl_ddp.py, run under torch.distributed.run.

Each rank draws a few batches from one ISBLSampler, observes its own
deterministic losses (rank 1 sends one example fewer in one step and a NaN),
and writes its shards, the global batches and its final table to
``<out>/rank<r>.npz``.
"""

import sys

import numpy as np
import torch.distributed as dist
from speechbrain.dataio.dataset import DynamicItemDataset

from hardmine.isbl import ISBLSampler

N_EXAMPLES = 30
BATCH = 4
STEPS = 5


def rank_losses(me, step, indices):
    """Losses that differ between ranks and steps but are reproducible."""
    losses = [((i * 7 + step * 3 + me * 5) % 11) / 2.0 for i in indices]
    if me == 1 and step == 2:
        losses[0] = float("nan")
    return losses


def main(out_dir):
    dist.init_process_group("gloo")
    me = dist.get_rank()
    labels = ["a", "b", "c"] * (N_EXAMPLES // 3)
    data = {f"u{i:03d}": {"lab": lab} for i, lab in enumerate(labels)}
    sampler = ISBLSampler(
        DynamicItemDataset(data),
        batch_size=BATCH,
        pool_field="lab",
        pool_mix="uniform",
        alpha=1.0,
        epoch_length=BATCH * 2 * STEPS,
        seed=99,
    )
    sampler.set_epoch(1)
    shards, global_batches, observed = [], [], []
    for step, shard in enumerate(sampler):
        # Nothing has been observed since this batch was drawn, so redrawing
        # it gives the global batch the shard came from.
        global_batches.append(sampler.draw_global_batch(step))
        shards.append(shard)
        ids = [sampler.ids[i] for i in shard]
        losses = rank_losses(me, step, shard)
        if me == 1 and step == 3:
            ids, losses = ids[:-1], losses[:-1]
        observed.append((list(shard[: len(ids)]), losses))
        sampler.observe(ids, np.array(losses))
    np.savez(
        f"{out_dir}/rank{me}.npz",
        shards=np.array(shards),
        global_batches=np.array(global_batches),
        scores=np.asarray(sampler.table.scores),
        quarantined=np.asarray(sampler.table.quarantined),
        draw_counts=np.asarray(sampler.draw_counts),
        n_batches=len(sampler),
        obs_indices=np.concatenate([np.array(o[0]) for o in observed]),
        obs_losses=np.concatenate([np.array(o[1]) for o in observed]),
        obs_sizes=np.array([len(o[0]) for o in observed]),
    )
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
