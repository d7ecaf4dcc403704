"""Speech-like sources: pitch, rhythm, speaker identity, and mixture difficulty draws."""

import numpy as np
import pytest
from scipy.signal import find_peaks
from scipy.stats import chisquare

from hardmine.synthetic.mixtures import (
    MixtureSpec,
    draw_mixture_spec,
    make_mixture,
    noise_like,
    random_speaker,
    semitones,
    speech_like,
)


def _frames(x, sr, hop_s=0.01, win_s=0.04):
    hop, win = int(hop_s * sr), int(win_s * sr)
    idx = np.arange(0, len(x) - win, hop)[:, None] + np.arange(win)[None, :]
    return x[idx].astype(np.float64)


def _median_f0(x, sr, fmin=60.0, fmax=450.0):
    """Median autocorrelation pitch (parabolic lag interpolation) over the
    clearly voiced frames."""
    frames = _frames(x, sr)
    frames = frames - frames.mean(axis=1, keepdims=True)
    energy = (frames**2).sum(axis=1)
    lo, hi = int(sr / fmax), int(sr / fmin)
    estimates = []
    for frame, e in zip(frames, energy, strict=True):
        if e < 0.01 * energy.max():
            continue
        ac = np.correlate(frame, frame, "full")[len(frame) - 1 :]
        lag = lo + int(np.argmax(ac[lo:hi]))
        if ac[lag] < 0.5 * ac[0]:
            continue
        a, b, c = ac[lag - 1], ac[lag], ac[lag + 1]
        shift = 0.5 * (a - c) / (a - 2 * b + c) if a - 2 * b + c < 0 else 0.0
        estimates.append(sr / (lag + shift))
    return float(np.median(estimates))


def _syllable_rate(x, sr):
    """Prominent peaks per second of the smoothed energy envelope (dB)."""
    hop = int(0.01 * sr)
    energy = np.add.reduceat(x.astype(np.float64) ** 2, np.arange(0, len(x), hop))
    db = 10 * np.log10(energy / hop + 1e-12)
    kernel = np.hanning(7) / np.hanning(7).sum()
    peaks, _ = find_peaks(np.convolve(db, kernel, "same"), prominence=6, distance=6)
    return len(peaks) / (len(x) / sr)


def test_shape_level_and_determinism():
    for sr in (8000, 16000):
        a = speech_like(np.random.default_rng(7), 1.5, sr, rms=0.1)
        b = speech_like(np.random.default_rng(7), 1.5, sr, rms=0.1)
        c = speech_like(np.random.default_rng(8), 1.5, sr, rms=0.1)
        assert a.dtype == np.float32 and a.shape == (int(1.5 * sr),)
        assert np.isfinite(a).all()
        assert np.sqrt(np.mean(a.astype(float) ** 2)) == pytest.approx(0.1, rel=1e-4)
        assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert speech_like(np.random.default_rng(0), 0.0, 8000).shape == (0,)


@pytest.mark.parametrize("sr", [8000, 16000])
@pytest.mark.parametrize("f0", [90.0, 140.0, 200.0, 250.0])
def test_pitch_follows_the_speaker(sr, f0):
    rng = np.random.default_rng(int(f0) + sr)
    speaker = random_speaker(rng, f0=f0)
    estimates = [
        _median_f0(speech_like(rng, 2.0, sr, speaker=speaker), sr) for _ in range(4)
    ]
    # Each utterance's median moves with its few syllable accents (about 1
    # semitone); the mean over utterances stays near the speaker's F0.
    assert abs(np.mean(semitones(estimates, f0))) < 1.5
    assert np.all(np.abs(semitones(estimates, f0)) < 3.0)


def test_f0_argument_overrides_speaker_pitch():
    rng = np.random.default_rng(3)
    speaker = random_speaker(rng, f0=100.0)
    x = speech_like(rng, 2.0, 16000, speaker=speaker, f0=220.0)
    assert abs(semitones(_median_f0(x, 16000), 220.0)) < 3.0
    with pytest.raises(TypeError, match="speaker="):
        speech_like(rng, 1.0, 8000, speaker)


def _ltas_db(x, sr):
    """Long-term spectrum in 8 bands, dB relative to the total."""
    n = 256 * sr // 8000
    frames = x[: len(x) // n * n].reshape(-1, n).astype(np.float64) * np.hanning(n)
    power = (np.abs(np.fft.rfft(frames, axis=1)) ** 2).mean(axis=0)[1:]
    bands = power[: (len(power) // 8) * 8].reshape(8, -1).mean(axis=1)
    return 10 * np.log10(bands / bands.sum())


def test_utterances_of_one_speaker_are_alike():
    rng = np.random.default_rng(0)
    speakers = [random_speaker(rng) for _ in range(6)]
    ltas, pitch = [], []
    for speaker in speakers:
        utts = [speech_like(rng, 2.0, 8000, speaker=speaker) for _ in range(4)]
        ltas.append([_ltas_db(x, 8000) for x in utts])
        pitch.append([12 * np.log2(_median_f0(x, 8000)) for x in utts])
    ltas, pitch = np.array(ltas), np.array(pitch)  # [speaker, utt, ...]
    # Timbre: the long-term spectrum varies more between speakers than
    # between utterances of a speaker.
    within = ltas.var(axis=1).mean(axis=0)
    between = ltas.mean(axis=1).var(axis=0)
    assert np.mean(between / within) > 2.0
    # Pitch: utterances of a speaker vary far less than speakers do.
    assert 10 * pitch.var(axis=1).mean() < pitch.mean(axis=1).var()
    # Nearest-neighbour speaker identification on (pitch, spectrum).
    feats = np.concatenate([pitch[..., None], ltas], axis=-1).reshape(24, -1)
    feats = (feats - feats.mean(axis=0)) / feats.std(axis=0)
    labels = np.repeat(np.arange(6), 4)
    dist = ((feats[:, None] - feats[None]) ** 2).sum(-1)
    np.fill_diagonal(dist, np.inf)
    # Chance is 1/6; short utterances with few syllables keep it imperfect.
    assert np.mean(labels[dist.argmin(axis=1)] == labels) >= 0.6


def test_syllable_rhythm_follows_speaking_rate():
    def measured(rate):
        values = []
        for seed in range(3):
            rng = np.random.default_rng(seed)
            speaker = random_speaker(rng)
            speaker = type(speaker)(**{**speaker.__dict__, "rate": rate})
            x = speech_like(rng, 4.0, 8000, speaker=speaker, pause_prob=0.0)
            values.append(_syllable_rate(x, 8000))
        return np.array(values)

    slow, fast = measured(3.0), measured(6.0)
    # Energy peaks per second stay in the range of speech (about 3-6 per
    # second) and follow the speaker's rate.
    assert np.all((slow > 2.0) & (slow < 7.0)) and np.all((fast > 2.0) & (fast < 7.0))
    assert fast.mean() > slow.mean() + 0.7


def test_pauses_and_unvoiced_consonants():
    sr = 16000

    def quiet_fraction(pause_prob):
        rng = np.random.default_rng(5)
        x = np.concatenate(
            [speech_like(rng, 2.0, sr, pause_prob=pause_prob) for _ in range(4)]
        )
        energy = (_frames(x, sr) ** 2).mean(axis=1)
        return np.mean(energy < 1e-4 * energy.max())

    assert quiet_fraction(0.5) > quiet_fraction(0.0) + 0.1
    # Noise bursts: some loud frames with a high zero-crossing rate, which
    # voiced frames (F0 < 300 Hz, formants < 4 kHz) never reach.
    x = speech_like(np.random.default_rng(6), 4.0, sr)
    frames = _frames(x, sr, win_s=0.02)
    energy = (frames**2).mean(axis=1)
    zcr = np.mean(np.abs(np.diff(np.sign(frames), axis=1)) > 0, axis=1)
    audible = energy > 1e-3 * energy.max()
    assert np.any(audible & (zcr > 0.25))
    assert np.median(zcr[audible]) < 0.2


def test_noise_like_is_coloured():
    x = noise_like(np.random.default_rng(0), 2.0, 8000, rms=0.02).astype(np.float64)
    assert x.shape == (16000,) and np.sqrt(np.mean(x**2)) == pytest.approx(0.02)
    power = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / 8000)
    low = power[(freqs > 100) & (freqs < 500)].mean()
    high = power[(freqs > 2000) & (freqs < 3500)].mean()
    assert low > 10 * high


N_DRAWS = 3000


def _draws(n_spks=2, seed=0, **kwargs):
    rng = np.random.default_rng(seed)
    return [draw_mixture_spec(rng, n_spks, **kwargs) for _ in range(N_DRAWS)]


def _joint_counts(specs):
    counts = np.zeros(8)
    for s in specs:
        counts[4 * s.hard_level + 2 * s.close_pitch + (s.overlap < 1.0)] += 1
    return counts


def _joint_expected(p_hard, p_close, p_partial):
    probs = []
    for hard in (0, 1):
        for close in (0, 1):
            for partial in (0, 1):
                probs.append(
                    (p_hard if hard else 1 - p_hard)
                    * (p_close if close else 1 - p_close)
                    * (p_partial if partial else 1 - p_partial)
                )
    return N_DRAWS * np.array(probs)


def test_difficulty_factors_follow_their_probabilities():
    counts = _joint_counts(_draws())
    assert chisquare(counts, _joint_expected(0.2, 0.25, 0.3)).pvalue > 0.01
    # The same sample is clearly rejected against slightly different rates,
    # so the test has power.
    assert chisquare(counts, _joint_expected(0.25, 0.25, 0.3)).pvalue < 1e-3
    assert chisquare(counts, _joint_expected(0.2, 0.25, 0.35)).pvalue < 1e-3
    custom = _joint_counts(_draws(p_hard_level=0.5, p_close_pitch=0.1, p_partial=0.6))
    assert chisquare(custom, _joint_expected(0.5, 0.1, 0.6)).pvalue > 0.01


def test_level_difference_and_overlap_distributions():
    specs = _draws(seed=1)
    diffs = np.array([s.level_diff_db for s in specs])
    observed, _ = np.histogram(diffs, bins=np.arange(11))
    # 80 % uniform on 0-5 dB, 20 % uniform on 5-10 dB.
    expected = N_DRAWS * np.array([0.16] * 5 + [0.04] * 5)
    assert observed.sum() == N_DRAWS
    assert chisquare(observed, expected).pvalue > 0.01
    flat = N_DRAWS * np.full(10, 0.1)
    assert chisquare(observed, flat).pvalue < 1e-6
    hard = np.array([s.hard_level for s in specs])
    assert np.all(diffs[hard] >= 5.0) and np.all(diffs[~hard] <= 5.0)

    overlaps = np.array([s.overlap for s in specs if s.overlap < 1.0])
    observed, _ = np.histogram(overlaps, bins=np.linspace(0.35, 0.8, 6))
    assert observed.sum() == len(overlaps)
    assert chisquare(observed, np.full(5, len(overlaps) / 5)).pvalue > 0.01


def test_gains_are_wsj_style():
    specs = _draws(seed=2)
    gains = np.array([s.gains_db for s in specs])
    assert np.allclose(gains.sum(axis=1), 0.0)
    louder_first = int(np.sum(gains[:, 0] > gains[:, 1]))
    # Which source is louder is a fair coin.
    assert chisquare([louder_first, N_DRAWS - louder_first]).pvalue > 0.01
    three = _draws(n_spks=3, seed=3)[:200]
    for s in three:
        assert len(s.gains_db) == 3
        assert s.level_diff_db == pytest.approx(max(s.gains_db) - min(s.gains_db))


def test_make_mixture_levels_and_partial_overlap():
    rng = np.random.default_rng(4)
    speakers = [random_speaker(rng), random_speaker(rng)]
    full = make_mixture(
        rng, speakers, MixtureSpec((2.0, -2.0), False, False, 1.0), [8000, 8000], 8000
    )
    ratio = 10 * np.log10(np.mean(full[0] ** 2) / np.mean(full[1] ** 2))
    assert ratio == pytest.approx(4.0, abs=1e-6)

    spec = MixtureSpec((0.0, 0.0), False, False, 0.5)
    starts = set()
    for _ in range(12):
        src = make_mixture(rng, speakers, spec, [8000, 8000], 8000)
        active = np.flatnonzero(src[1])
        assert active[-1] - active[0] + 1 <= 4000
        starts.add(int(active[0]) < 100)
        # Same speaking level while active as the fully active source.
        seg = src[1, active[0] : active[-1] + 1]
        assert np.sqrt(np.mean(seg**2)) == pytest.approx(
            np.sqrt(np.mean(src[0] ** 2)), rel=0.05
        )
    assert starts == {True, False}  # the short source starts early or ends late

    padded = make_mixture(
        rng, speakers, MixtureSpec((0.0, 0.0), False, False, 1.0), [8000, 5000], 8000
    )
    assert padded.shape == (2, 8000) and np.all(padded[1, 5000:] == 0)
