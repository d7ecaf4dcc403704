"""Generate-once cache of the embedded data sets: markers, rebuilds, crashes, races."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hardmine.synthetic.cache import cache_base, cached_dataset
from hardmine.validation import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def _writer(calls, files=3):
    def generate(folder):
        calls.append(folder)
        for i in range(files):
            Path(folder, f"part{i}.txt").write_text(str(i))

    return generate


def test_generated_once_then_found(tmp_path):
    calls = []
    root = cached_dataset("toy", _writer(calls), {"v": 1}, cache_dir=tmp_path)
    assert root == str(tmp_path / "toy") and len(calls) == 1
    assert json.loads((tmp_path / "toy" / "hardmine-dataset.json").read_text()) == {
        "v": 1
    }
    assert cached_dataset("toy", _writer(calls), {"v": 1}, cache_dir=tmp_path) == root
    assert len(calls) == 1
    # The set was written elsewhere and renamed into place; nothing else is left.
    assert calls[0] != root and not os.path.exists(calls[0])
    assert sorted(os.listdir(tmp_path)) == ["toy", "toy.lock"]


def test_cache_location(tmp_path, monkeypatch):
    monkeypatch.setenv("HARDMINE_CACHE", str(tmp_path / "env"))
    assert cache_base() == str(tmp_path / "env")
    assert cache_base(tmp_path / "given") == str(tmp_path / "given")
    monkeypatch.delenv("HARDMINE_CACHE")
    assert cache_base() == os.path.join(os.path.expanduser("~"), ".cache", "hardmine")


def test_other_spec_is_rebuilt_or_refused(tmp_path):
    calls = []
    cached_dataset("toy", _writer(calls), {"v": 1}, cache_dir=tmp_path)
    cached_dataset("toy", _writer(calls, files=1), {"v": 2}, cache_dir=tmp_path)
    assert len(calls) == 2
    assert sorted(os.listdir(tmp_path / "toy")) == [
        "hardmine-dataset.json",
        "part0.txt",
    ]
    with pytest.raises(ConfigError, match="^data_folder: the cached set .*toy"):
        cached_dataset(
            "toy", _writer(calls), {"v": 3}, cache_dir=tmp_path, on_mismatch="error"
        )
    assert len(calls) == 2


def test_folder_without_marker_is_rebuilt(tmp_path):
    (tmp_path / "toy" / "half").mkdir(parents=True)
    calls = []
    cached_dataset("toy", _writer(calls), {"v": 1}, cache_dir=tmp_path, marker="m.json")
    assert sorted(os.listdir(tmp_path / "toy")) == [
        "m.json",
        "part0.txt",
        "part1.txt",
        "part2.txt",
    ]


def test_crash_leaves_nothing_that_looks_complete(tmp_path):
    def crashing(folder):
        Path(folder, "part0.txt").write_text("0")
        raise KeyboardInterrupt("simulated crash")

    with pytest.raises(KeyboardInterrupt):
        cached_dataset("toy", crashing, {"v": 1}, cache_dir=tmp_path)
    assert os.listdir(tmp_path) == ["toy.lock"]
    calls = []
    cached_dataset("toy", _writer(calls), {"v": 1}, cache_dir=tmp_path)
    assert len(calls) == 1


RACER = """
import json, os, sys, time
from pathlib import Path
from hardmine.synthetic.cache import cached_dataset

cache, log, go = sys.argv[1:4]
while not os.path.exists(go):
    time.sleep(0.005)

def generate(folder):
    with open(log, "a") as f:
        f.write(f"{os.getpid()} start {time.time()}\\n")
    for i in range(20):
        Path(folder, f"part{i}.txt").write_text(str(i))
        time.sleep(0.05)  # a slow generation: the other process must wait
    with open(log, "a") as f:
        f.write(f"{os.getpid()} end {time.time()}\\n")

root = cached_dataset("race", generate, {"v": 1}, cache_dir=cache)
print(json.dumps({"pid": os.getpid(), "root": root, "returned": time.time(),
                  "files": sorted(os.listdir(root))}))
"""


def test_two_processes_at_once_generate_one_complete_set(tmp_path):
    script = tmp_path / "racer.py"
    script.write_text(RACER)
    cache, log, go = tmp_path / "cache", tmp_path / "log.txt", tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(cache), str(log), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]
    time.sleep(0.5)  # both interpreters started and are polling
    go.write_text("")
    outs = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        outs.append(json.loads(out))
    events = [line.split() for line in log.read_text().splitlines()]
    # One generation ran, from start to end, in one of the two processes.
    assert [e[1] for e in events] == ["start", "end"] and events[0][0] == events[1][0]
    generator = int(events[0][0])
    assert {o["pid"] for o in outs} == {p.pid for p in procs} and generator in {
        o["pid"] for o in outs
    }
    # The other one waited for it and found the complete set.
    waiter = next(o for o in outs if o["pid"] != generator)
    assert waiter["returned"] >= float(events[1][2])
    expected = sorted([f"part{i}.txt" for i in range(20)] + ["hardmine-dataset.json"])
    for out in outs:
        assert out["root"] == str(cache / "race") and out["files"] == expected
    assert sorted(os.listdir(cache)) == ["race", "race.lock"]
