"""ISBLSampler under a real 2-process gloo group (torch.distributed.run)."""

from pathlib import Path

import numpy as np
import pytest
from conftest import torchrun

from hardmine.loss_table import LossPowerTable

REPO = Path(__file__).resolve().parents[1]
WORKER = REPO / "tests" / "ddp_scripts" / "isbl_ddp_worker.py"


@pytest.mark.slow
def test_two_ranks_share_table_and_split_global_batch(tmp_path):
    torchrun(WORKER, tmp_path)
    ranks = [np.load(tmp_path / f"rank{r}.npz") for r in (0, 1)]

    # ceil(epoch_length / (batch_size * world)) = ceil(40 / 8)
    assert int(ranks[0]["n_batches"]) == int(ranks[1]["n_batches"]) == 5
    globals_ = ranks[0]["global_batches"]
    np.testing.assert_array_equal(globals_, ranks[1]["global_batches"])
    assert globals_.shape == (5, 8)
    for b in range(5):
        shard0, shard1 = ranks[0]["shards"][b], ranks[1]["shards"][b]
        # Disjoint slots whose union is the global batch.
        np.testing.assert_array_equal(shard0, globals_[b][0::2])
        np.testing.assert_array_equal(shard1, globals_[b][1::2])
        rebuilt = np.empty(8, dtype=globals_.dtype)
        rebuilt[0::2], rebuilt[1::2] = shard0, shard1
        np.testing.assert_array_equal(rebuilt, globals_[b])
    # The live draws changed as losses arrived: batches are not all alike.
    assert len({tuple(g) for g in globals_}) > 1

    for key in ("scores", "quarantined", "draw_counts"):
        np.testing.assert_array_equal(ranks[0][key], ranks[1][key])
    assert ranks[0]["draw_counts"].sum() == 40

    # Replaying both ranks' observations in rank order on one table gives the
    # same scores: every rank applied every rank's losses.
    labels = np.array([0, 1, 2] * 10)
    replay = LossPowerTable(labels, alpha=1.0)
    offsets = [np.concatenate([[0], np.cumsum(r["obs_sizes"])]) for r in ranks]
    for step in range(5):
        for r, data in enumerate(ranks):
            lo, hi = offsets[r][step], offsets[r][step + 1]
            replay.observe_indices(
                data["obs_indices"][lo:hi], data["obs_losses"][lo:hi]
            )
    np.testing.assert_array_equal(replay.scores, ranks[0]["scores"])
    np.testing.assert_array_equal(replay.quarantined, ranks[0]["quarantined"])
    assert ranks[1]["obs_sizes"][3] == 3  # the uneven step really was uneven
    assert not np.all(ranks[0]["scores"] == 1.0)
