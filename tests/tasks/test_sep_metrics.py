"""Separation metrics on cases whose answers are known in closed form."""

import csv
import json

import fast_bss_eval
import numpy as np
import pytest
import torch
from speechbrain.nnet.losses import get_si_snr_with_pitwrapper

from hardmine.tasks.sep_metrics import (
    si_snr,
    summarize,
    utterance_metrics,
    write_test_results,
)


def _sources(rng, n_src=2, n=8000):
    return rng.standard_normal((n, n_src))


def _noise_at_snr(rng, ref, snr_db):
    """Zero-mean noise orthogonal to the zero-mean reference, at an exact SNR."""
    ref = ref - ref.mean()
    noise = rng.standard_normal(ref.shape)
    noise -= noise.mean()
    noise -= (noise @ ref) / (ref @ ref) * ref
    noise *= np.sqrt((ref @ ref) / (noise @ noise) / 10 ** (snr_db / 10))
    return noise


@pytest.mark.parametrize("snr_db", [-5.0, 0.0, 7.5, 20.0])
def test_si_snr_of_reference_plus_noise(snr_db):
    rng = np.random.default_rng(1)
    ref = rng.standard_normal(8000)
    est = 2.5 * (ref - ref.mean()) + 2.5 * _noise_at_snr(rng, ref, snr_db) + 0.3
    value = si_snr(est[None], ref[None])[0, 0]
    assert value == pytest.approx(snr_db, abs=1e-6)
    # Plain white noise (not orthogonalised) on a long signal: within 0.1 dB.
    ref = rng.standard_normal(200000)
    noisy = ref + rng.standard_normal(200000) * 10 ** (-snr_db / 20)
    assert si_snr(noisy[None], ref[None])[0, 0] == pytest.approx(snr_db, abs=0.1)


def test_utterance_si_snr_and_permutation():
    rng = np.random.default_rng(2)
    refs = _sources(rng)
    mix = refs.sum(axis=1)
    est = np.stack(
        [refs[:, i] + _noise_at_snr(rng, refs[:, i], 10.0 + 5 * i) for i in range(2)],
        axis=1,
    )
    straight = utterance_metrics(mix, est, refs)
    swapped = utterance_metrics(mix, est[:, ::-1], refs)
    assert straight["si-snr"] == pytest.approx(12.5, abs=0.01)
    for key in straight:
        assert swapped[key] == pytest.approx(straight[key], abs=1e-6)


def test_improvements_are_relative_to_the_mixture():
    rng = np.random.default_rng(3)
    refs = _sources(rng, n_src=3, n=4000)
    refs[:, 0] *= 2.0
    mix = refs.sum(axis=1)
    est = refs + 0.3 * rng.standard_normal(refs.shape)
    m = utterance_metrics(mix, est, refs)
    mix_sisnr = np.mean([si_snr(mix[None], refs[:, i][None])[0, 0] for i in range(3)])
    mix_sdr = fast_bss_eval.bss_eval_sources(refs.T, np.repeat(mix[None], 3, 0))[0]
    assert m["si-snr_i"] == pytest.approx(m["si-snr"] - mix_sisnr, abs=1e-9)
    assert m["sdr_i"] == pytest.approx(m["sdr"] - float(np.mean(mix_sdr)), abs=1e-9)
    # Known mixture baseline: source 0 has 4x the power of each other one, so
    # its SI-SNR in the mixture is 10log10(4/2) and the others' 10log10(1/5).
    expected = np.mean([10 * np.log10(2.0), 10 * np.log10(0.2), 10 * np.log10(0.2)])
    assert mix_sisnr == pytest.approx(expected, abs=0.15)
    # Using the mixture itself as the estimate gives zero improvement.
    zero = utterance_metrics(mix, np.repeat(mix[:, None], 3, 1), refs)
    assert zero["si-snr_i"] == pytest.approx(0.0, abs=1e-9)
    assert zero["sdr_i"] == pytest.approx(0.0, abs=1e-6)


def test_sdr_is_bss_eval_not_si_snr():
    rng = np.random.default_rng(4)
    n = 20000
    refs = _sources(rng, n=n)
    mix = refs.sum(axis=1)
    # White noise at 20 dB: BSS-Eval's 512-tap filter explains a 512/n share
    # of the noise, so SDR is 20 dB plus a small, predictable amount.
    noisy = refs + 0.1 * rng.standard_normal(refs.shape)
    expected = 20.0 - 10 * np.log10(1 - 512 / n)
    assert utterance_metrics(mix, noisy, refs)["sdr"] == pytest.approx(
        expected, abs=0.1
    )
    # A short delay is a distortion filter: nearly free for SDR (only the 3
    # samples shifted out are lost), costly for SI-SNR.
    delayed = np.concatenate([np.zeros((3, 2)), refs[:-3]])
    m = utterance_metrics(mix, delayed, refs)
    assert m["sdr"] > 30.0
    assert m["si-snr"] < 0.0


def test_torch_inputs_and_speechbrain_agreement():
    rng = np.random.default_rng(5)
    refs = _sources(rng, n=4000)
    est = refs[:, ::-1] + 0.2 * rng.standard_normal(refs.shape)
    mix = refs.sum(axis=1)
    from_numpy = utterance_metrics(mix, est, refs)
    from_torch = utterance_metrics(
        torch.tensor(mix), torch.tensor(est.copy()), torch.tensor(refs)
    )
    for key in from_numpy:
        assert from_torch[key] == pytest.approx(from_numpy[key], abs=1e-9)
    # SpeechBrain's PIT SI-SNR loss is the negative of our SI-SNR.
    loss = get_si_snr_with_pitwrapper(
        torch.tensor(refs[None]), torch.tensor(est[None].copy())
    )
    assert -float(loss[0]) == pytest.approx(from_numpy["si-snr"], abs=1e-3)


def test_bad_shapes_and_values_are_rejected():
    rng = np.random.default_rng(6)
    refs = _sources(rng, n=1000)
    mix = refs.sum(axis=1)
    with pytest.raises(ValueError, match="equal shape"):
        utterance_metrics(mix, refs[:, :1], refs)
    with pytest.raises(ValueError, match="samples"):
        utterance_metrics(mix[:900], refs, refs)
    bad = refs.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="estimates"):
        utterance_metrics(mix, bad, refs)
    with pytest.raises(ValueError, match="sr"):
        utterance_metrics(mix, refs, refs, sr=0)


def test_summarize_matches_numpy():
    rng = np.random.default_rng(7)
    values = rng.normal(10.0, 3.0, 257)
    s = summarize(list(values) + [np.nan, np.inf])
    assert s["count"] == 257 and s["n_nonfinite"] == 2
    assert s["mean"] == pytest.approx(values.mean())
    assert s["median"] == pytest.approx(np.median(values))
    assert s["p5"] == pytest.approx(np.percentile(values, 5))
    assert s["p10"] == pytest.approx(np.percentile(values, 10))
    assert s["p5"] < s["p10"] < s["median"]
    empty = summarize([])
    assert empty["count"] == 0 and np.isnan(empty["mean"])


def test_write_test_results(tmp_path):
    rng = np.random.default_rng(8)
    rows = [
        {"snt_id": f"utt{i}", **dict(zip(["sdr", "sdr_i", "si-snr", "si-snr_i"], v))}
        for i, v in enumerate(rng.normal(10, 2, (11, 4)))
    ]
    rows[3]["si-snr"] = float("nan")
    csv_path, json_path = tmp_path / "out" / "test_results.csv", tmp_path / "s.json"
    summary = write_test_results(rows, csv_path, json_path)
    with open(csv_path, newline="") as handle:
        table = list(csv.DictReader(handle))
    assert list(table[0]) == ["snt_id", "sdr", "sdr_i", "si-snr", "si-snr_i"]
    assert [r["snt_id"] for r in table] == [f"utt{i}" for i in range(11)] + ["avg"]
    assert float(table[-1]["sdr_i"]) == pytest.approx(
        np.mean([r["sdr_i"] for r in rows])
    )
    finite = [r["si-snr"] for r in rows if np.isfinite(r["si-snr"])]
    assert float(table[-1]["si-snr"]) == pytest.approx(np.mean(finite))
    loaded = json.loads(json_path.read_text())
    assert loaded["count"] == 11
    assert loaded["si-snr"]["count"] == 10 and loaded["si-snr"]["n_nonfinite"] == 1
    for key in ("sdr", "sdr_i", "si-snr", "si-snr_i"):
        for stat in ("mean", "median", "p5", "p10"):
            assert loaded[key][stat] == pytest.approx(summary[key][stat])
    with pytest.raises(ValueError, match="lacks"):
        write_test_results([{"snt_id": "x", "sdr": 1.0}], csv_path, json_path)
