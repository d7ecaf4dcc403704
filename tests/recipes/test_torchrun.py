"""The WSJ0-2mix separation recipe under torchrun: two CPU ranks (gloo).

Each run trains a tiny SepFormer for one epoch on a generated WSJ0-2mix set
of 0.5 s mixtures and checks what only a real multi-process run can show:
the mining statistics add up the work of both ranks, the ranks' ISBL loss
tables stay identical, and the test results are written once, by the main
process.
"""

import csv
import json
import pathlib
import socket
import subprocess
import sys

import pytest

from hardmine.synthetic.layouts import make_wsj0mix
from hardmine.tasks.separation import TINY_OVERRIDES

RECIPE = pathlib.Path(__file__).resolve().parents[2] / "recipes/WSJ0Mix/separation"
N_TRAIN, N_VALID, N_TEST = 8, 2, 3
BATCH_SIZE = 2
WORLD = 2

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wsj2(tmp_path_factory):
    root = tmp_path_factory.mktemp("wsj2") / "data"
    return make_wsj0mix(
        str(root),
        sizes={"tr": N_TRAIN, "cv": N_VALID, "tt": N_TEST},
        seconds=0.5,
        seed=3,
    )


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _torchrun(hparams, out, data, *extra, timeout=300):
    """Run the recipe on two CPU ranks; return the finished process."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        str(WORLD),
        "--master_port",
        str(_free_port()),
        "train.py",
        f"hparams/{hparams}.yaml",
        "--device",
        "cpu",
        "--distributed_backend",
        "gloo",
        *TINY_OVERRIDES["sepformer"],
        "--data_folder",
        data,
        "--output_folder",
        str(out),
        "--N_epochs",
        "1",
        "--batch_size",
        str(BATCH_SIZE),
        "--num_workers",
        "0",
        "--noprogressbar",
        *extra,
    ]
    proc = subprocess.run(
        cmd, cwd=RECIPE, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return proc


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _stats(out):
    lines = (out / "mining_stats.jsonl").read_text().splitlines()
    # Only the main process writes the file: one record per epoch.
    assert len(lines) == 1, lines
    return json.loads(lines[0])


def _check_test_results_written_once(out):
    rows = _rows(out / "test_results.csv")
    ids = [r["snt_id"] for r in rows]
    test_ids = [r["ID"] for r in _rows(out / "save" / "wsj_tt.csv")]
    # One row per test mixture plus the average, no rank's rows twice.
    assert ids[-1] == "avg"
    assert sorted(ids[:-1]) == sorted(test_ids)
    summary = json.loads((out / "test_summary.json").read_text())
    assert summary["count"] == N_TEST
    log = (out / "train_log.txt").read_text().splitlines()
    assert sum(line.startswith("epoch: 1") for line in log) == 1
    assert sum("test si-snr" in line for line in log) == 1


def test_isbl_statistics_cover_both_ranks(tmp_path, wsj2):
    out = tmp_path / "isbl"
    _torchrun("sepformer_isbl", out, wsj2)
    assert len(_rows(out / "save" / "wsj_tr.csv")) == N_TRAIN
    stats = _stats(out)
    # An ISBL epoch is N_TRAIN draws over all ranks, in global batches of
    # BATCH_SIZE * WORLD; each rank trains on its BATCH_SIZE slots of each.
    # Counting one rank only would give half of these numbers.
    global_batches = -(-N_TRAIN // (BATCH_SIZE * WORLD))
    assert stats["examples"] == global_batches * BATCH_SIZE * WORLD == N_TRAIN
    assert stats["batches"] == global_batches * WORLD
    # The ranks step together, once per global batch.
    assert stats["optimizer_step"] == global_batches
    assert stats["sampler_ranks_agree"] == 1
    assert stats["weights_ranks_agree"] == 1  # model digests all-gathered
    # Every draw was observed on both ranks (all-gathered), so the table
    # has seen as many distinct mixtures as were drawn, at most N_TRAIN.
    assert 0 < stats["sampler_coverage"] <= 1
    _check_test_results_written_once(out)


def test_threshold_counters_are_summed_over_ranks(tmp_path, wsj2):
    out = tmp_path / "baseline"
    # A loss (negative SI-SNR, dB) of an untrained tiny model is far below
    # 100, so every example is "easy": filtered out, every batch skipped.
    _torchrun("sepformer", out, wsj2, "--threshold", "100")
    stats = _stats(out)
    # The distributed sampler gives each rank N_TRAIN / WORLD examples.
    per_rank_batches = -(-(N_TRAIN // WORLD) // BATCH_SIZE)
    assert stats["examples"] == N_TRAIN
    assert stats["examples_filtered"] == N_TRAIN
    assert stats["batches"] == per_rank_batches * WORLD
    assert stats["skipped_all_easy"] == per_rank_batches * WORLD
    assert stats["batches_skipped"] == stats["batches"]
    assert stats["optimizer_step"] == 0
    # The baseline has no live sampler, hence no table to compare.
    assert "sampler_ranks_agree" not in stats
    assert stats["weights_ranks_agree"] == 1
    _check_test_results_written_once(out)


def test_dynamic_mixing_source_tables_agree_across_ranks(tmp_path, wsj2):
    out = tmp_path / "dm"
    _torchrun(
        "sepformer",
        out,
        wsj2,
        "--dynamic_mixing", "True",
        "--sampler", "isbl",
        "--training_signal_len", "2000",
    )  # fmt: skip
    stats = _stats(out)
    # N_TRAIN new mixtures of the 2 * N_TRAIN sources, planned as global
    # batches of BATCH_SIZE * WORLD whose slots the ranks share.
    global_batches = -(-N_TRAIN // (BATCH_SIZE * WORLD))
    assert stats["examples"] == N_TRAIN and stats["examples_bad_audio"] == 0
    assert stats["batches"] == global_batches * WORLD
    assert stats["optimizer_step"] == global_batches
    assert stats["sampler_n_sources"] == 2 * N_TRAIN
    # The (source, loss) pairs of both ranks reached both tables.
    assert stats["sampler_ranks_agree"] == 1
    assert stats["weights_ranks_agree"] == 1
    _check_test_results_written_once(out)
