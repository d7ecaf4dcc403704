"""ISBL options under a real 2-process gloo group: every rank computes the same.

Run as a script under torch.distributed.run, this file is its own worker.
"""

import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import torchrun

REPO = Path(__file__).resolve().parents[1]
N_EXAMPLES, BATCH, EPOCHS = 30, 4, 3
OPTIONS = {
    "capacity": 0.3,
    "refresh_every": 2,
    "unseen_score": "max",
    "uniform_mix": 0.01,
    "is_beta": 0.5,
    "is_anneal_epochs": 2,
    "score_decay": 0.2,
    "score_clip_quantile": 0.8,
    "persistent_visits": 2,
}


def rank_losses(me, step, indices):
    """Losses that differ between ranks and steps but are reproducible."""
    return [((i * 7 + step * 3 + me * 5) % 11) / 2.0 + 0.1 for i in indices]


def make_sampler():
    from speechbrain.dataio.dataset import DynamicItemDataset

    from hardmine.isbl import ISBLSampler

    labels = ["a", "b", "c"] * (N_EXAMPLES // 3)
    data = {f"u{i:03d}": {"lab": lab} for i, lab in enumerate(labels)}
    return ISBLSampler(
        DynamicItemDataset(data),
        batch_size=BATCH,
        pool_field="lab",
        alpha=1.0,
        seed=99,
        **OPTIONS,
    )


def worker(out_dir):
    import torch.distributed as dist

    dist.init_process_group("gloo")
    me = dist.get_rank()
    sampler = make_sampler()
    shards, weights, obs_indices, obs_losses, obs_sizes = [], [], [], [], []
    step = 0
    for epoch in range(1, EPOCHS + 1):
        sampler.set_epoch(epoch)
        for shard in sampler:
            ids = [sampler.ids[i] for i in shard]
            losses = rank_losses(me, step, shard)
            sampler.observe(ids, np.array(losses))
            shards.append(shard)
            weights.append(sampler.batch_weights(ids))
            obs_indices += shard
            obs_losses += losses
            obs_sizes.append(len(shard))
            step += 1
    stats = sampler.stats()
    np.savez(
        f"{out_dir}/rank{me}.npz",
        shards=np.array(shards),
        weights=np.array(weights),
        digest=np.array(sampler.table.digest()),
        alpha=sampler.table.alpha,
        stats=np.array(sorted((k, float(v)) for k, v in stats.items())),
        obs_indices=np.array(obs_indices),
        obs_losses=np.array(obs_losses),
        obs_sizes=np.array(obs_sizes),
    )
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_ranks_agree_with_every_option_on(tmp_path):
    torchrun(__file__, tmp_path, timeout=300)
    ranks = [np.load(tmp_path / f"rank{r}.npz") for r in (0, 1)]
    # Capacity steps, decay, guard and exploration: identical on both ranks.
    assert str(ranks[0]["digest"]) == str(ranks[1]["digest"])
    assert float(ranks[0]["alpha"]) == float(ranks[1]["alpha"]) != 1.0
    np.testing.assert_array_equal(ranks[0]["stats"], ranks[1]["stats"])
    # The weights of both shards are normalised by the global batch's largest.
    w0, w1 = ranks[0]["weights"], ranks[1]["weights"]
    np.testing.assert_allclose(np.maximum(w0.max(axis=1), w1.max(axis=1)), 1.0)
    assert (w0.max(axis=1) < 1).any() or (w1.max(axis=1) < 1).any()
    # One process replaying both ranks' losses in rank order ends identical.
    replay = make_sampler()
    offsets = [np.concatenate([[0], np.cumsum(r["obs_sizes"])]) for r in ranks]
    per_epoch = len(ranks[0]["obs_sizes"]) // EPOCHS
    for step in range(len(ranks[0]["obs_sizes"])):
        if step % per_epoch == 0:
            replay.set_epoch(step // per_epoch + 1)
        indices, losses = [], []
        for r, data in enumerate(ranks):
            lo, hi = offsets[r][step], offsets[r][step + 1]
            indices += data["obs_indices"][lo:hi].tolist()
            losses += data["obs_losses"][lo:hi].tolist()
        replay.observe([replay.ids[i] for i in indices], np.array(losses))
    assert replay.table.digest() == str(ranks[0]["digest"])


if __name__ == "__main__":
    worker(sys.argv[1])
