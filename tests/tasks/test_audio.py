"""Checked audio loading: every kind of broken file gives its label, never an error."""

import numpy as np
import pytest
import soundfile as sf
import torch

from hardmine.tasks.audio import PROBLEMS, load_checked


def _sine(n=8000, amp=0.3, sr=8000):
    return (amp * np.sin(2 * np.pi * 440 * np.arange(n) / sr)).astype(np.float32)


def test_good_file_is_returned_unchanged(tmp_path):
    path = tmp_path / "good.wav"
    data = _sine()
    sf.write(path, data, 8000, subtype="FLOAT")
    signal, problem = load_checked(path, expected_sr=8000)
    assert problem is None
    assert signal.dtype == torch.float32 and signal.dim() == 1
    assert torch.equal(signal, torch.from_numpy(data))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_zeroed(tmp_path, bad):
    path = tmp_path / "nan.wav"
    data = _sine()
    data[100:110] = bad
    sf.write(path, data, 8000, subtype="FLOAT")
    signal, problem = load_checked(path, expected_sr=8000)
    assert problem == "non-finite"
    assert torch.isfinite(signal).all()
    assert torch.all(signal[100:110] == 0)
    keep = np.r_[0:100, 110:8000]
    assert torch.equal(signal[keep], torch.from_numpy(data[keep]))


def test_zero_length_file(tmp_path):
    path = tmp_path / "empty.wav"
    sf.write(path, np.zeros(0, dtype=np.float32), 8000)
    assert sf.info(path).frames == 0
    signal, problem = load_checked(path, expected_sr=8000)
    assert problem == "zero-length"
    assert signal.shape == (8000,) and torch.all(signal == 0)
    signal, _ = load_checked(path, length=123)
    assert signal.shape == (123,)


@pytest.mark.parametrize(
    "content", [b"this is not audio at all\n", b"RIFF\x10\x00\x00\x00WAVEjunk", b""]
)
def test_unreadable_files(tmp_path, content):
    path = tmp_path / "text.wav"
    path.write_bytes(content)
    signal, problem = load_checked(path, expected_sr=16000)
    assert problem == "unreadable"
    assert signal.shape == (16000,) and torch.all(signal == 0)


def test_missing_file_and_directory_are_unreadable(tmp_path):
    for path in (tmp_path / "missing.wav", tmp_path):
        signal, problem = load_checked(path, length=50)
        assert problem == "unreadable"
        assert signal.shape == (50,)
    # Without length or expected rate the fallback is one second at 16 kHz.
    assert load_checked(tmp_path / "missing.wav")[0].shape == (16000,)


def test_silent_and_near_silent(tmp_path):
    path = tmp_path / "zeros.wav"
    sf.write(path, np.zeros(4000, dtype=np.float32), 8000, subtype="FLOAT")
    assert load_checked(path)[1] == "silent"
    sf.write(path, np.full(4000, 5e-6, dtype=np.float32), 8000, subtype="FLOAT")
    assert load_checked(path)[1] == "silent"
    # The threshold is a parameter: 5e-6 passes a lower bar.
    assert load_checked(path, min_rms=1e-6)[1] is None


def test_clipped_versus_single_peak(tmp_path):
    path = tmp_path / "clip.wav"
    clipped = np.clip(3.0 * _sine(amp=1.0), -1.0, 1.0)
    sf.write(path, clipped, 8000, subtype="PCM_16")
    assert load_checked(path, expected_sr=8000)[1] == "clipped"
    one_peak = _sine()
    one_peak[500] = 1.0
    sf.write(path, one_peak, 8000, subtype="PCM_16")
    assert load_checked(path, expected_sr=8000)[1] is None


def test_wrong_sample_rate_keeps_signal(tmp_path):
    path = tmp_path / "rate.wav"
    data = _sine(sr=16000)
    sf.write(path, data, 16000, subtype="FLOAT")
    signal, problem = load_checked(path, expected_sr=8000)
    assert problem == "wrong-sample-rate"
    assert torch.equal(signal, torch.from_numpy(data))
    assert load_checked(path)[1] is None  # no expectation, no problem


def test_most_severe_problem_wins(tmp_path):
    path = tmp_path / "both.wav"
    data = _sine()
    data[0] = np.nan
    sf.write(path, data, 16000, subtype="FLOAT")
    assert load_checked(path, expected_sr=8000)[1] == "non-finite"
    assert PROBLEMS.index("non-finite") < PROBLEMS.index("wrong-sample-rate")


def test_stereo_is_averaged(tmp_path):
    path = tmp_path / "stereo.wav"
    left, right = _sine(), np.zeros(8000, dtype=np.float32)
    sf.write(path, np.stack([left, right], axis=1), 8000, subtype="FLOAT")
    signal, problem = load_checked(path, expected_sr=8000)
    assert problem is None
    assert torch.allclose(signal, torch.from_numpy(left / 2))


def test_random_bytes_never_raise(tmp_path):
    rng = np.random.default_rng(0)
    for k in range(20):
        path = tmp_path / f"fuzz{k}.wav"
        header = b"RIFF" if k % 2 else b""
        path.write_bytes(header + rng.bytes(int(rng.integers(0, 400))))
        signal, problem = load_checked(path, expected_sr=8000)
        assert problem in PROBLEMS
        assert signal.dim() == 1 and torch.isfinite(signal).all()
