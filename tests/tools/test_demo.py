"""make demo: the KWS ruler over seeds, and compare's side-by-side table."""

import json

import pytest
from conftest import KWS_TINY_MODEL

from hardmine.synthetic.hard_gsc import make_hard_gsc
from hardmine.tools import compare, demo


def test_side_by_side_table_and_summaries():
    rows = {
        "baseline": [{"si-snr_i": str(v), "sdr_i": str(v + 1)} for v in range(1, 21)],
        "isbl": [{"si-snr_i": str(2 * v), "sdr_i": "nan"} for v in range(1, 21)],
    }
    summaries = {run: compare.separation_summary(r) for run, r in rows.items()}
    assert summaries["baseline"]["si-snr_i"]["mean"] == pytest.approx(10.5)
    assert summaries["baseline"]["si-snr_i"]["p5"] == pytest.approx(1.95)
    assert summaries["isbl"]["si-snr_i"]["median"] == pytest.approx(21.0)
    assert summaries["isbl"]["sdr_i"]["n_nonfinite"] == 20
    table = compare.side_by_side_table(summaries).splitlines()
    assert table[0].split() == ["baseline", "isbl", "diff"]
    p10 = next(line for line in table if line.startswith("SI-SNRi p10"))
    assert p10.split()[-3:] == ["2.90", "5.80", "+2.90"]
    assert table[-1].split()[-2:] == ["20", "20"]


@pytest.mark.slow
def test_demo_runs_both_variants_over_seeds_with_intervals(tmp_path, capsys):
    data = make_hard_gsc(
        str(tmp_path / "gsc"),
        n_speakers=8,
        repetitions=1,
        valid_speakers=2,
        test_speakers=2,
        background_seconds=3.0,
    )
    out = tmp_path / "demo"
    record = demo.main(
        [
            "--output",
            str(out),
            "--data_folder",
            data,
            "--seeds",
            "2",
            "--epochs",
            "1",
            *KWS_TINY_MODEL,
        ]
    )
    printed = capsys.readouterr().out
    assert "Δ vs baseline" in printed and "frr@0.01" in printed
    assert demo.conclusion(record) in printed
    assert record["seeds"] == [1, 2] and set(record["variants"]) == {"baseline", "isbl"}
    saved = json.loads((out / "comparison.json").read_text())
    assert set(saved["paired"]["isbl"]) >= {"accuracy", "rare_accuracy", "frr@0.01"}
    # Same budget: the same optimizer steps for both variants and every seed.
    steps = {
        (v, s): saved["curves"][v][str(s)][-1]["step"]
        for v in ("baseline", "isbl")
        for s in (1, 2)
    }
    assert len(set(steps.values())) == 1, steps
    assert (out / "compare" / "det.png").exists()
    assert (out / "compare" / "report.txt").read_text().strip()
