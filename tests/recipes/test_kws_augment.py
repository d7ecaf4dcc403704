"""Training-time augmentation of the keyword-spotting recipe (speechbrain.augment)."""

import csv
import importlib.util
import io
import os
import pathlib

import numpy as np
import pytest
import soundfile as sf
import speechbrain as sb
import torch
from conftest import tiny_kws_brain
from hyperpyyaml import load_hyperpyyaml
from scipy import stats
from speechbrain.augment.freq_domain import RandomShift
from speechbrain.augment.time_domain import AddNoise, AddReverb, SpeedPerturb

from hardmine.synthetic.gsc import generate_gsc
from hardmine.tasks.kws import build_augmenter, check_augment_files
from hardmine.validation import ConfigError

RECIPE = (
    pathlib.Path(__file__).resolve().parents[2] / "recipes/GoogleSpeechCommands/kws"
)
SR = 16000
TRAIN_TONE, HELD_TONE = 500.0, 3000.0


def _load_prepare():
    spec = importlib.util.spec_from_file_location(
        "prepare_gsc_aug", RECIPE / "prepare_gsc.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


prep = _load_prepare()


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A tiny corpus whose noise files carry a 500 Hz tone in their training
    region and a 3 kHz tone in the valid/test regions; prepared once."""
    base = tmp_path_factory.mktemp("kwsaug")
    root = generate_gsc(
        str(base / "gsc"),
        words=("yes", "no", "cat"),
        n_speakers=4,
        repetitions=1,
        valid_speakers=1,
        test_speakers=1,
        background_seconds=6.0,
        seed=5,
    )
    noise_dir = pathlib.Path(root) / "_background_noise_"
    n = 6 * SR
    t = np.arange(n) / SR
    cut = int(prep.NOISE_REGIONS["train"][1] * n)
    for k, path in enumerate(sorted(noise_dir.glob("*.wav"))):
        tone = np.where(
            np.arange(n) < cut,
            np.sin(2 * np.pi * TRAIN_TONE * t + k),
            np.sin(2 * np.pi * HELD_TONE * t),
        )
        sf.write(str(path), (0.3 * tone).astype(np.float32), SR)
    rirs = base / "rirs" / "room_a"
    rirs.mkdir(parents=True)
    rir = np.zeros(1600, dtype=np.float32)
    rir[0], rir[800] = 1.0, 0.6
    sf.write(str(rirs / "echo.wav"), rir, SR)
    save = base / "save"
    prep.prepare_gsc(root, str(save), rir_folder=str(base / "rirs"))
    return {
        "root": root,
        "save": save,
        "noise_csv": str(save / prep.NOISE_CSV),
        "rir_csv": str(save / prep.RIR_CSV),
        "rir_folder": str(base / "rirs"),
        "cut": cut,
        "n": n,
    }


def _only(**kwargs):
    """An augmenter with just the named stages switched on."""
    options = dict(speed_perturb=False, augment_noise=False, time_shift_ms=0)
    options.update(kwargs)
    return build_augmenter(**options)


def _tones(batch, n=SR, freq=1000.0, seed=0):
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(n) / SR
    amps = 0.05 + 0.5 * torch.rand(batch, 1, generator=gen)
    phases = 6.28 * torch.rand(batch, 1, generator=gen)
    return amps * torch.sin(2 * np.pi * freq * t + phases)


def _rms(x):
    return x.pow(2).mean(dim=-1).sqrt()


def test_noise_pieces_come_from_the_training_region_only(prepared):
    rows = _rows(prepared["noise_csv"])
    assert list(rows[0]) == ["ID", "duration", "wav", "wav_format", "wav_opts"]
    piece = int(prep.NOISE_PIECE_SECONDS * SR)
    by_file = {}
    for row in rows:
        stem, index = row["ID"].rsplit("_", 1)
        by_file.setdefault(stem, []).append((int(index), row["wav"]))
    assert len(by_file) == 4
    for stem, pieces in by_file.items():
        source, _ = sf.read(
            os.path.join(prepared["root"], "_background_noise_", stem + ".wav"),
            dtype="float32",
        )
        # 4.8 s of training region: two whole 2 s pieces, nothing after the cut.
        assert sorted(i for i, _ in pieces) == [0, 1]
        for index, path in pieces:
            audio, rate = sf.read(path, dtype="float32")
            assert rate == SR and len(audio) == piece
            start = index * piece
            assert start + piece <= prepared["cut"]
            np.testing.assert_array_equal(audio, source[start : start + piece])


def test_noise_is_added_at_the_requested_snr(prepared):
    torch.manual_seed(0)
    aug = _only(
        augment_noise=True,
        noise_csv=prepared["noise_csv"],
        noise_snr_low=10,
        noise_snr_high=10,
    )
    [stage] = aug.augmentations.values()
    assert isinstance(stage, AddNoise)
    clean = _tones(16)
    noisy, lens = aug(clean, torch.ones(16))
    assert noisy.shape == clean.shape and torch.equal(lens, torch.ones(16))
    # AddNoise scales the clean part by 1 - f, f = 1 / (10^(snr/20) + 1).
    f = 1.0 / (10 ** (10 / 20) + 1.0)
    speech = (1 - f) * clean
    noise = noisy - speech
    snr = 20 * torch.log10(_rms(speech) / _rms(noise))
    assert torch.allclose(snr, torch.full_like(snr, 10.0), atol=0.05)
    # The added noise is the training-region tone, never the held-out one.
    spectrum = torch.fft.rfft(noise, dim=-1).abs() ** 2
    freqs = torch.fft.rfftfreq(SR, 1 / SR)
    train_band = spectrum[:, (freqs - TRAIN_TONE).abs() < 20].sum(dim=-1)
    held_band = spectrum[:, (freqs - HELD_TONE).abs() < 20].sum(dim=-1)
    assert bool((held_band < 1e-4 * train_band).all())


def test_noise_snr_is_uniform_over_the_range(prepared):
    torch.manual_seed(1)
    low, high = 0.0, 20.0
    aug = _only(
        augment_noise=True,
        noise_csv=prepared["noise_csv"],
        noise_snr_low=low,
        noise_snr_high=high,
    )
    clean = _tones(160, n=4000, seed=3)
    noisy, _ = aug(clean, torch.ones(160))
    # Recover each example's SNR: noisy = (1 - f) clean + noise, noise
    # orthogonal-ish to the 1 kHz tone; fit (1 - f) by least squares.
    scale = (noisy * clean).sum(-1) / (clean * clean).sum(-1)
    f = 1 - scale
    snr = (20 * torch.log10((1 - f) / f)).numpy()
    assert snr.min() > low - 0.5 and snr.max() < high + 0.5
    counts, _ = np.histogram(np.clip(snr, low, high - 1e-9), bins=8, range=(low, high))
    assert stats.chisquare(counts).pvalue > 0.001


@pytest.mark.parametrize("speed,length", [(90, 17778), (100, 16000), (110, 14546)])
def test_speed_perturbation_changes_length_and_pitch(speed, length):
    aug = _only(speed_perturb=True, speeds=[speed])
    [stage] = aug.augmentations.values()
    assert isinstance(stage, SpeedPerturb)
    clean = _tones(2, freq=1000.0)
    out, lens = aug(clean, torch.ones(2))
    assert out.shape == (2, length) and torch.equal(lens, torch.ones(2))
    # Played at 16 kHz, a 1 kHz tone now sounds at speed/100 kHz.
    spectrum = torch.fft.rfft(out[0]).abs()
    peak = float(torch.fft.rfftfreq(length, 1 / SR)[spectrum.argmax()])
    assert peak == pytest.approx(1000.0 * speed / 100, abs=3.0)


def test_time_shift_rolls_the_signal_within_the_bound():
    torch.manual_seed(2)
    aug = _only(time_shift_ms=100)
    [stage] = aug.augmentations.values()
    assert isinstance(stage, RandomShift)
    clean = 0.01 * torch.randn(3, SR)
    clean[:, 5000] = 1.0  # a marker to find the shift by
    seen = set()
    for _ in range(12):
        out, lens = aug(clean, torch.ones(3))
        shift = int(out[0].argmax()) - 5000
        assert torch.equal(out, torch.roll(clean, shift, 1))
        seen.add(shift)
        expected = min(1.0, 1.0 + shift / SR)
        assert torch.allclose(lens, torch.full((3,), expected))
    assert len(seen) > 6 and all(abs(k) <= 1600 for k in seen)


def test_reverb_only_with_a_folder(prepared):
    assert not any(
        isinstance(s, AddReverb)
        for s in build_augmenter(noise_csv="n.csv").augmentations.values()
    )
    aug = _only(rir_folder=prepared["rir_folder"], rir_csv=prepared["rir_csv"])
    [stage] = aug.augmentations.values()
    assert isinstance(stage, AddReverb)
    # rir.csv lists the file found in a sub-folder.
    [row] = _rows(prepared["rir_csv"])
    assert row["wav"].endswith(os.path.join("room_a", "echo.wav"))
    clean = torch.zeros(1, SR)
    clean[0, 2000] = 1.0
    out, _ = aug(clean, torch.ones(1))
    # The impulse response (direct path + echo 800 samples later at 0.6),
    # rescaled to the clean signal's mean amplitude.
    peaks = out[0].abs()
    assert float(peaks[2000]) > 0 and float(peaks[2800]) == pytest.approx(
        0.6 * float(peaks[2000]), rel=0.01
    )
    assert float(peaks[2000 + 1 : 2800].max()) < 1e-3 * float(peaks[2000])


def test_off_is_identity_and_validation_never_augments(prepared):
    assert build_augmenter(augment=False) is None
    assert _only() is None  # every stage off
    aug = build_augmenter(
        noise_csv=prepared["noise_csv"], augment_prob=0.0, time_shift_ms=50
    )
    clean = torch.randn(2, SR)
    out, lens = aug(clean, torch.ones(2))
    assert out is clean and torch.equal(lens, torch.ones(2))

    class Counting(torch.nn.Module):
        calls = 0

        def forward(self, wavs, lens):
            Counting.calls += 1
            return wavs, lens

    brain = _tiny_brain({"wav_augment": Counting()})
    batch = _batch(4)
    for stage in (sb.Stage.VALID, sb.Stage.TEST):
        brain.compute_forward(batch, stage)
    assert Counting.calls == 0
    brain.compute_forward(batch, sb.Stage.TRAIN)
    assert Counting.calls == 1


def test_an_augmenter_that_changes_the_batch_size_is_refused():
    class Doubling(torch.nn.Module):
        def forward(self, wavs, lens):
            return torch.cat([wavs, wavs]), torch.cat([lens, lens])

    brain = _tiny_brain({"wav_augment": Doubling()})
    with pytest.raises(RuntimeError, match="wav_augment turned 4 examples into 8"):
        brain.compute_forward(_batch(4), sb.Stage.TRAIN)


def _tiny_brain(hparams):
    return tiny_kws_brain(hparams)


def _batch(n):
    from speechbrain.dataio.batch import PaddedBatch

    return PaddedBatch(
        [
            {
                "id": f"u{i}",
                "sig": torch.randn(4000),
                "command_encoded": torch.tensor([i % 3]),
                "command": "abc"[i % 3],
                "audio_problem": "",
            }
            for i in range(n)
        ]
    )


def _yaml(tmp_path, **overrides):
    overrides = {"output_folder": str(tmp_path / "out"), **overrides}
    with open(RECIPE / "hparams" / "kws.yaml") as f:
        return load_hyperpyyaml(f, overrides)


def test_yaml_handles_reach_the_augmenter(tmp_path, prepared):
    hparams = _yaml(tmp_path)
    kinds = [type(s) for s in hparams["wav_augment"].augmentations.values()]
    assert kinds == [SpeedPerturb, AddNoise, RandomShift]  # baseline: all but reverb
    # All of them on every batch (not a random number of the first ones).
    aug = hparams["wav_augment"]
    assert aug.min_augmentations == aug.max_augmentations == 3
    assert aug.augment_prob == 0.5  # half the batches stay clean
    noise = hparams["wav_augment"].augmentations["AddNoise1"]
    assert (noise.snr_low, noise.snr_high) == (0, 15)
    assert noise.csv_file == str(tmp_path / "out" / "save" / "noise_train.csv")
    hparams = _yaml(
        tmp_path,
        speeds=[95, 105],
        noise_snr_low=5,
        noise_snr_high=8,
        time_shift_ms=50,
        rir_folder=prepared["rir_folder"],
    )
    stages = list(hparams["wav_augment"].augmentations.values())
    assert [type(s) for s in stages] == [SpeedPerturb, AddReverb, AddNoise, RandomShift]
    assert stages[0].speeds == [95, 105]
    assert (stages[2].snr_low, stages[2].snr_high) == (5, 8)
    assert (stages[3].min_shift, stages[3].max_shift) == (-800, 800)
    assert _yaml(tmp_path, augment=False)["wav_augment"] is None
    assert (
        _yaml(tmp_path, augment_noise=False, speed_perturb=False, time_shift_ms=0)[
            "wav_augment"
        ]
        is None
    )


@pytest.mark.parametrize(
    "overrides,field,message",
    [
        ({"noise_snr_low": 20, "noise_snr_high": 10}, "noise_snr_low", "above"),
        ({"noise_snr_high": "loud"}, "noise_snr_high", "number"),
        ({"speeds": [90, 0]}, "speeds", ">= 1"),
        ({"speeds": [90.5]}, "speeds", "whole number"),
        ({"speeds": []}, "speeds", "list"),
        ({"time_shift_ms": -5}, "time_shift_ms", ">= 0"),
        ({"time_shift_ms": 1000}, "time_shift_ms", "not below"),
        ({"rir_folder": "/nonexistent/rirs"}, "rir_folder", "not a folder"),
        ({"augment": "yes"}, "augment", "True or False"),
        ({"augment_noise": 1}, "augment_noise", "True or False"),
        ({"augment_prob": 1.5}, "augment_prob", "<= 1.0"),
    ],
)
def test_bad_handles_are_refused_when_the_yaml_loads(
    tmp_path, overrides, field, message
):
    with pytest.raises(ConfigError, match=f"^{field}: .*{message}") as info:
        _yaml(tmp_path, **overrides)
    assert info.value.field == field


def test_rir_folder_without_wav_is_refused(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(ConfigError, match="^rir_folder: no .wav"):
        _yaml(tmp_path, rir_folder=str(tmp_path / "empty"))


def test_missing_noise_list_names_augment_noise(tmp_path):
    aug = build_augmenter(noise_csv=str(tmp_path / "none.csv"))
    with pytest.raises(ConfigError, match="^augment_noise: .*none.csv"):
        check_augment_files(aug)
    check_augment_files(None)


def test_command_line_error_is_one_line(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("kws_train_aug", RECIPE / "train.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.syspath_prepend(str(RECIPE))
    spec.loader.exec_module(module)
    err = io.StringIO()
    argv = [
        str(RECIPE / "hparams" / "kws.yaml"),
        "--output_folder",
        str(tmp_path / "o"),
        "--noise_snr_low",
        "20",
    ]
    with pytest.raises(SystemExit) as info:
        module.run(argv, stream=err)
    assert info.value.code == 2
    assert err.getvalue() == (
        "error: --noise_snr_low 20: 20.0 is above noise_snr_high (15.0)\n"
    )
