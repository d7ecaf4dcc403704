"""The quality ruler's --quick mode: statistics computed and shaped right.

Nothing here says which variant is better: two seeds of one tiny epoch show
only that every figure is computed, paired and written.
"""

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

from hardmine.tools import ruler
from hardmine.tools.stats import seed_difference

ROOT = Path(__file__).resolve().parents[2]


def load_bench():
    spec = importlib.util.spec_from_file_location(
        "quality_bench", ROOT / "benchmarks" / "quality_bench.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_quick_kws_ruler_writes_paired_statistics(tmp_path, monkeypatch):
    bench = load_bench()
    monkeypatch.chdir(tmp_path)  # a relative --out, as users type it
    # isbl_guarded: ISBL with its options, among them the noise guard.
    args = ["kws", "--quick", "--variants", "isbl_guarded", "--out", "runs"]
    record = bench.main([*args, "--report", "report.md"])
    saved = json.loads((tmp_path / "runs" / "quality_bench_kws.json").read_text())
    # The Markdown report goes where --report says, with the command that made it.
    report = (tmp_path / "report.md").read_text()
    assert report.startswith("Command: `benchmarks/quality_bench.py kws --quick")
    assert "| isbl_guarded | accuracy |" in report
    # One validation per epoch: a 1-epoch run cannot be "early".
    assert saved["validations"] == 1
    assert "with 1 epochs a fraction is a multiple of 1/1" in report
    assert saved["seeds"] == [1, 2]
    assert saved["variants"].keys() == {"baseline", "isbl_guarded"}
    # The noise guard is read from the guarded runs' checkpoints and joined
    # with the set's mislabelled clips (one in the quick set's training part).
    assert saved["noise_guard"].keys() == {"isbl_guarded"}
    sidecar = ruler.read_rows(tmp_path / "runs" / "data" / "gsc" / ruler.SUBGROUPS_FILE)
    wrong = sum(r["split"] == "train" and r["mislabelled"] == "1" for r in sidecar)
    for seed in ("1", "2"):
        g = saved["noise_guard"]["isbl_guarded"][seed]
        assert g["mislabelled"] == wrong >= 1
        # Every training clip of the sidecar, plus the silence crops.
        assert g["train"] > sum(r["split"] == "train" for r in sidecar)
        assert 0 <= g["mislabelled_flagged"] <= min(g["flagged"], wrong)
        # Flagged at any point of the run includes the flags at its end.
        assert g["ever_flagged"] >= g["flagged"]
        assert g["mislabelled_flagged"] <= g["ever_mislabelled_flagged"] <= wrong
        assert 0.0 <= g["loss_top_recall"] <= g["ever_loss_top_recall"] <= 1.0
    assert "Noise guard against the set's mislabelled" in report
    assert "What sets FRR at 1% FAR" in report and "| isbl_guarded | " in report
    for variant in ("baseline", "isbl_guarded"):
        for metric in ruler.KWS_METRICS:
            s = saved["summary"][variant][metric]
            assert len(s["per_seed"]) == 2
            finite = [v for v in s["per_seed"] if v is not None]
            assert finite and all(0.0 <= v <= 1.0 for v in finite), (variant, metric)
        curve = saved["curves"][variant]["1"]
        assert [p["epoch"] for p in curve] == [1] and curve[0]["step"] > 0
    paired = saved["paired"]["isbl_guarded"]
    assert set(paired) == set(ruler.KWS_METRICS)
    acc = paired["accuracy"]
    # The seed statistic is the mean of the per-seed differences.
    per_seed = [
        a - b
        for a, b in zip(
            saved["summary"]["isbl_guarded"]["accuracy"]["per_seed"],
            saved["summary"]["baseline"]["accuracy"]["per_seed"],
        )
    ]
    assert acc["seeds"]["mean"] == pytest.approx(np.mean(per_seed))
    assert acc["seeds"]["n"] == 2
    u = acc["utterances"]
    assert u["low"] <= u["mean"] <= u["high"]
    assert u["mean"] == pytest.approx(acc["seeds"]["mean"], abs=1e-9)
    st = saved["steps_to_target"]["isbl_guarded"]
    assert len(st["steps"]) == len(st["fraction"]) == 2
    assert record["paired"]["isbl_guarded"]["accuracy"]["utterances"][
        "excludes_zero"
    ] in (
        True,
        False,
    )
    # The same runs paired against another variant (nothing is trained
    # again): the signs flip and "early" is measured on that variant.
    args = ["kws", "--quick", "--variants", "baseline", "--out", "runs"]
    again = bench.main([*args, "--reference", "isbl_guarded", "--report", "ref.md"])
    assert again["reference"] == "isbl_guarded"
    assert set(again["paired"]) == {"baseline"}
    flipped = again["paired"]["baseline"]["accuracy"]["seeds"]["mean"]
    assert flipped == pytest.approx(-acc["seeds"]["mean"])
    assert "Δ vs isbl_guarded" in (tmp_path / "ref.md").read_text()
    assert again["steps_to_target"]["baseline"]["baseline_steps"] == [
        saved["curves"]["isbl_guarded"][str(s)][-1]["step"] for s in (1, 2)
    ]
    with pytest.raises(SystemExit, match="unknown variants"):
        bench.main(["kws", "--quick", "--reference", "nothing", "--out", "runs"])


def test_frr_breakdown_agrees_with_the_false_reject_rate():
    rng = np.random.default_rng(5)
    n = 400
    target = rng.random(n) < 0.5
    run = {
        "target": target,
        # Keywords score higher on the whole, low-SNR ones lower.
        "low_snr": rng.random(n) < 0.3,
        "rare": rng.random(n) < 0.2,
        "spoken": rng.choice(["yes", "bed", "cat"], n),
    }
    run["score"] = rng.normal(1.0 * target - 0.8 * (target & run["low_snr"]), 0.5)
    for far in (0.01, 0.05, 0.2):
        b = ruler.frr_breakdown(run, far)
        frr = ruler.frr_at_far(run["score"][target], run["score"][~target], far)
        assert b["keywords"] == target.sum()
        assert b["rejected"] / b["keywords"] == pytest.approx(frr["frr"])
        assert b["false_alarms"] / (~target).sum() == pytest.approx(frr["far"])
        assert sum(b["alarm_words"].values()) == b["false_alarms"]
        assert b["rejected_rare"] <= b["rejected"]
        # Low-SNR keywords score lower: over-represented among the rejected.
        share = b["low_snr_keywords"] / b["keywords"]
        assert b["rejected_low_snr"] / b["rejected"] > share + 0.05
    lines = ruler.breakdown_table({"v": {1: run, 2: run}}, far=0.05)
    b = ruler.frr_breakdown(run, 0.05)
    assert f"| v | {2 * b['rejected']} / {2 * b['keywords']} |" in lines[-1]


def test_seed_difference_interval_and_test():
    # Five seeds, all better by 1 to 3 points: interval above 0; Wilcoxon at
    # its floor for n = 5 (two-sided exact p = 2 / 32).
    d = seed_difference([0.81, 0.83, 0.80, 0.84, 0.82], [0.80, 0.81, 0.78, 0.81, 0.81])
    assert d["low"] > 0 and d["excludes_zero"]
    assert d["wilcoxon_p"] == pytest.approx(0.0625)
    # Mixed signs: the interval covers 0.
    d = seed_difference([0.8, 0.7, 0.9, 0.75], [0.75, 0.8, 0.85, 0.8])
    assert d["low"] < 0 < d["high"] and not d["excludes_zero"]
    # Too few seeds: no interval.
    assert math.isnan(seed_difference([1.0], [0.0])["low"])
