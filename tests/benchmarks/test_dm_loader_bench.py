"""The dynamic-mixing loader benchmark's --quick mode: every figure is
measured and the JSON has its shape (nothing here is about speed)."""

import importlib.util
import json
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def load_bench():
    spec = importlib.util.spec_from_file_location(
        "dm_loader_bench", ROOT / "benchmarks" / "dm_loader_bench.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_quick_benchmark_writes_the_throughput_record(tmp_path):
    bench = load_bench()
    record = bench.main(["--quick", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "dm_loader_bench.json").read_text())
    assert saved == json.loads(json.dumps(record))
    assert saved["quick"] is True and saved["batch_size"] == 4
    assert saved["set"]["train_mixtures"] == 16 and saved["set"]["sources"] == 32
    assert saved["set"]["generation_s"] > 0
    assert saved["training_signal_len"] == 32000  # sepformer_dm.yaml's
    rows = {(r["sampler"], r["num_workers"]): r for r in saved["loader"]}
    assert set(rows) == {(s, w) for s in ("none", "isbl (sources)") for w in (0, 2)}
    for row in rows.values():
        assert row["batches"] == 2 and row["mixtures"] == 8
        assert row["first_batch_problems"] == 0
        assert row["samples_per_mixture"] == 2000  # 0.25 s at 8 kHz
        assert math.isclose(row["mixtures_per_s"], row["mixtures"] / row["seconds"])
    step = saved["step"]
    assert step["steps"] == 1 and step["mixtures_per_s"] > 0
    ratio = rows[("none", 2)]["mixtures_per_s"] / step["mixtures_per_s"]
    assert math.isclose(saved["ratio_loader_w2_to_step"], ratio)
    assert saved["target_met"] == (ratio >= saved["target_ratio"] == 2.0)
