"""Speech-like synthetic sources and mixtures of controlled difficulty.

No speech corpus can be downloaded here, so the separation recipes train and
test on signals that share the traits separation models rely on: a voiced
excitation with a moving pitch, formant resonances that glide between vowel
targets, a syllable rhythm, noisy consonants and pauses. A *speaker* is a fixed
parameter set (pitch range, vocal-tract size, speaking rate, voice quality), so
two utterances of one speaker resemble each other and differ from another
speaker's.

Synthesis is source-filter, done frame by frame in the frequency domain: the
glottal pulse train and the consonant noise are cut into 50 % overlapping
Hann-windowed frames, each frame is multiplied by the (causal) frequency
response of its formant cascade, and the frames are overlap-added. This is
fully vectorised in numpy; see ``benchmarks/synthetic_bench.py`` for timings.

Example
-------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> spk = random_speaker(rng, f0=120.0)
>>> x = speech_like(rng, 2.0, 8000, speaker=spk)
>>> x.shape, x.dtype
((16000,), dtype('float32'))
>>> bool(np.isfinite(x).all()) and float(np.abs(x).max()) < 1.0
True
"""

from dataclasses import dataclass, replace

import numpy as np

__all__ = [
    "Speaker",
    "MixtureSpec",
    "random_speaker",
    "speech_like",
    "noise_like",
    "draw_mixture_spec",
    "make_mixture",
    "semitones",
]

# Vowel formant targets (F1, F2, F3) in Hz for an adult male vocal tract,
# rounded from classic American English vowel measurements.
_VOWELS = np.array(
    [
        [270.0, 2290.0, 3010.0],  # i
        [390.0, 1990.0, 2550.0],  # I
        [530.0, 1840.0, 2480.0],  # E
        [660.0, 1720.0, 2410.0],  # ae
        [730.0, 1090.0, 2440.0],  # a
        [570.0, 840.0, 2410.0],  # open o
        [440.0, 1020.0, 2240.0],  # U
        [300.0, 870.0, 2240.0],  # u
        [640.0, 1190.0, 2390.0],  # ^
        [490.0, 1350.0, 1690.0],  # r-coloured
    ]
)
_F4 = 3400.0
_BANDWIDTHS = np.array([70.0, 100.0, 140.0, 220.0])

F0_MIN, F0_MAX = 85.0, 255.0


def semitones(f_a, f_b):
    """Distance in semitones from frequency ``f_b`` to ``f_a`` (12 log2 ratio)."""
    return 12.0 * np.log2(np.asarray(f_a, dtype=float) / np.asarray(f_b, dtype=float))


@dataclass(frozen=True)
class Speaker:
    """Voice parameters shared by every utterance of one synthetic speaker.

    Arguments
    ---------
    f0 : float
        Mean fundamental frequency in Hz.
    f0_range : float
        Standard deviation of syllable pitch accents, in semitones.
    formant_scale : float
        Vocal-tract scaling of all formants (1.0 = adult male, ~1.2 = child-like).
    rate : float
        Mean speaking rate in syllables per second.
    breathiness : float
        Level of aspiration noise mixed into the voiced excitation (0-1).
    jitter : float
        Relative period-to-period pitch perturbation (e.g. 0.01 = 1 %).
    name : str
        Speaker code, used in file names.
    glottal_close : float
        Closing phase of the glottal pulse as a fraction of the period; short
        closures give a bright voice, long ones a soft, dark voice.
    formant_offsets : tuple of float
        Individual multipliers of F1-F4 on top of ``formant_scale`` (how this
        speaker realises every vowel).
    tilt : float
        First-order spectral tilt of the voice in (-1, 1): positive values
        brighten it, negative values darken it.
    consonant_db : float
        Level of this speaker's consonant noise relative to the vowels, in dB.

    Example
    -------
    >>> spk = Speaker(f0=110.0, f0_range=2.0, formant_scale=1.0, rate=4.5,
    ...               breathiness=0.05, jitter=0.01, name="01a")
    >>> spk.f0, spk.formant_offsets
    (110.0, (1.0, 1.0, 1.0, 1.0))
    """

    f0: float
    f0_range: float
    formant_scale: float
    rate: float
    breathiness: float
    jitter: float
    name: str = ""
    glottal_close: float = 0.16
    formant_offsets: tuple = (1.0, 1.0, 1.0, 1.0)
    tilt: float = 0.0
    consonant_db: float = -11.0


def random_speaker(rng, f0=None, name=""):
    """Draw a speaker; F0 is log-uniform in [85, 255] Hz unless given.

    The formant scale grows with F0 (low voices have long vocal tracts), with
    some individual spread, so pitch and timbre are correlated as in speech.
    """
    if f0 is None:
        f0 = float(np.exp(rng.uniform(np.log(F0_MIN), np.log(F0_MAX))))
    pos = np.clip(np.log(f0 / F0_MIN) / np.log(F0_MAX / F0_MIN), 0.0, 1.0)
    return Speaker(
        f0=float(f0),
        f0_range=float(rng.uniform(1.0, 3.0)),
        formant_scale=float(1.0 + 0.18 * pos + rng.normal(0.0, 0.03)),
        rate=float(rng.uniform(3.0, 6.0)),
        breathiness=float(rng.uniform(0.02, 0.15)),
        jitter=float(rng.uniform(0.003, 0.015)),
        name=name,
        glottal_close=float(rng.uniform(0.06, 0.3)),
        formant_offsets=tuple(float(v) for v in rng.normal(1.0, 0.06, 4)),
        tilt=float(rng.uniform(-0.7, 0.7)),
        consonant_db=float(rng.uniform(-16.0, -6.0)),
    )


def _resonator_response(freqs, bandwidths, omega):
    """Complex frequency response of a cascade of two-pole resonators.

    ``freqs`` and ``bandwidths`` are [frames, k] normalised to cycles/sample;
    ``omega`` is the [bins] angular frequency grid. Each section has unit gain
    at DC, so a cascade gets the natural spectral tilt of a vocal tract.
    """
    r = np.exp(-np.pi * bandwidths)
    a1 = (2.0 * r * np.cos(2.0 * np.pi * freqs)).astype(np.float32)
    a2 = (r * r).astype(np.float32)
    z1 = np.exp(-1j * omega).astype(np.complex64)
    z2 = z1 * z1
    response = np.ones((freqs.shape[0], omega.shape[0]), dtype=np.complex64)
    for k in range(freqs.shape[1]):
        gain = (1.0 - a1[:, k] + a2[:, k])[:, None]
        response *= gain / (1.0 - a1[:, k, None] * z1 + a2[:, k, None] * z2)
    return response


def _smooth(values, width):
    """Moving average along axis 0 with edge padding (width odd, >= 1)."""
    if width <= 1 or values.shape[0] < 2:
        return values
    half = width // 2
    padded = np.concatenate(
        [np.repeat(values[:1], half, 0), values, np.repeat(values[-1:], half, 0)]
    )
    csum = np.cumsum(padded, axis=0)
    csum = np.concatenate([np.zeros_like(csum[:1]), csum])
    return (csum[width:] - csum[:-width]) / width


def _glottal_pulse(phase, t_close):
    """Rosenberg-style glottal flow for fractional phase in [0, 1)."""
    t_open = 0.4
    flow = np.zeros_like(phase)
    rising = phase < t_open
    flow[rising] = 0.5 * (1.0 - np.cos(np.pi * phase[rising] / t_open))
    falling = (~rising) & (phase < t_open + t_close)
    flow[falling] = np.cos(0.5 * np.pi * (phase[falling] - t_open) / t_close)
    return flow


def _syllables(rng, n, sr, speaker, pause_prob):
    """Draw a syllable timeline covering ``n`` samples."""
    lengths, voiced = [], []
    total = 0
    while total < n:
        if total > 0 and rng.random() < pause_prob:
            length = int(rng.uniform(0.1, 0.35) * sr)
            is_voiced = False
        else:
            dur = rng.gamma(6.0, 1.0 / (6.0 * speaker.rate))
            length = int(np.clip(dur, 0.08, 0.5) * sr)
            is_voiced = True
        lengths.append(max(length, 1))
        voiced.append(is_voiced)
        total += lengths[-1]
    k = len(lengths)
    return {
        "lengths": np.array(lengths),
        "voiced": np.array(voiced),
        "vowel": rng.integers(0, len(_VOWELS), k),
        "onset": np.where(rng.random(k) < 0.7, rng.uniform(0.12, 0.3, k), 0.0),
        "coda": np.where(rng.random(k) < 0.3, rng.uniform(0.08, 0.2, k), 0.0),
        "plosive": rng.random(k) < 0.5,
        "gain": 10.0 ** (rng.normal(0.0, 2.0, k) / 20.0),
        "noise_gain": 10.0 ** ((speaker.consonant_db + rng.normal(0.0, 2.0, k)) / 20.0),
        "noise_fc": rng.uniform(1800.0, 6000.0, k),
        "accent": rng.normal(0.0, speaker.f0_range, k),
    }


def speech_like(
    rng,
    seconds,
    sr,
    f0=None,
    speaker=None,
    pause_prob=0.12,
    rms=0.05,
):
    """Synthesise one speech-like utterance.

    Arguments
    ---------
    rng : numpy.random.Generator
        Source of randomness (the output is a pure function of its state).
    seconds : float
        Duration of the output.
    sr : int
        Sample rate in Hz.
    f0 : float, optional
        Mean pitch in Hz; overrides the speaker's pitch when both are given.
    speaker : Speaker, optional
        Voice to use; a random one is drawn when omitted.
    pause_prob : float
        Probability that a syllable slot is a pause.
    rms : float
        RMS level of the returned signal.

    Returns
    -------
    numpy.ndarray
        float32 signal of ``round(seconds * sr)`` samples.

    Example
    -------
    >>> rng = np.random.default_rng(3)
    >>> x = speech_like(rng, 1.0, 16000, f0=200.0)
    >>> len(x), round(float(np.sqrt(np.mean(x.astype(float) ** 2))), 3)
    (16000, 0.05)
    """
    n = int(round(seconds * sr))
    if n <= 0:
        return np.zeros(0, dtype=np.float32)
    if isinstance(f0, Speaker):
        raise TypeError("speech_like: pass the voice as speaker=..., not as f0")
    if speaker is None:
        speaker = random_speaker(rng, f0)
    elif f0 is not None:
        speaker = replace(speaker, f0=float(f0))
    syl = _syllables(rng, n, sr, speaker, pause_prob)

    # Per-sample syllable index and relative position inside the syllable.
    starts = np.concatenate([[0], np.cumsum(syl["lengths"])[:-1]])
    idx = np.repeat(np.arange(len(starts)), syl["lengths"])[:n]
    u = (np.arange(n) - starts[idx]) / syl["lengths"][idx]
    onset, coda = syl["onset"][idx], syl["coda"][idx]
    voiced_syl = syl["voiced"][idx]

    # Vowel nucleus envelope and consonant noise envelopes.
    nucleus = np.clip((u - onset) / np.maximum(1.0 - onset - coda, 1e-3), 0.0, 1.0)
    v_amp = voiced_syl * np.sin(np.pi * nucleus) ** 0.6 * syl["gain"][idx]
    in_onset = u < onset
    burst = np.where(
        syl["plosive"][idx],
        np.exp(-8.0 * np.clip(u / np.maximum(onset, 1e-3), 0.0, 1.0)),
        np.sin(np.pi * np.clip(u / np.maximum(onset, 1e-3), 0.0, 1.0)),
    )
    coda_pos = np.clip((u - (1.0 - coda)) / np.maximum(coda, 1e-3), 0.0, 1.0)
    in_coda = u > 1.0 - coda
    n_amp = voiced_syl * syl["noise_gain"][idx] * syl["gain"][idx]
    n_amp = n_amp * (in_onset * burst + in_coda * np.sin(np.pi * coda_pos))

    # Pitch: declination across the utterance, smoothed syllable accents, and
    # per-period jitter.
    t = np.arange(n) / sr
    decline = 1.5 - 3.0 * t / max(t[-1], 1e-9)
    hop = max(int(round(0.008 * sr)), 8)
    accent = _smooth(syl["accent"][idx][::hop], 9)
    accent = np.interp(np.arange(n), np.arange(len(accent)) * hop, accent)
    f0_track = speaker.f0 * 2.0 ** ((decline + accent) / 12.0)
    period = np.floor(np.cumsum(f0_track / sr)).astype(int)
    jit = 1.0 + speaker.jitter * rng.standard_normal(period[-1] + 2)
    f0_track = f0_track * jit[period]
    phase = np.cumsum(f0_track / sr) % 1.0
    flow = _glottal_pulse(phase, speaker.glottal_close)
    excitation = np.diff(flow, prepend=flow[0])
    excitation = excitation / (np.std(excitation) + 1e-12)
    breath = speaker.breathiness * rng.standard_normal(n)
    voiced_exc = (excitation + breath) * v_amp
    noise_exc = rng.standard_normal(n) * n_amp

    # Frame-wise filtering with overlap-add: frames of 2*hop samples, FFT of
    # 4*hop so the resonators' tails (time constant < 5 ms) fit inside each
    # frame's buffer; what wraps around is below -30 dB.
    n_frames = int(np.ceil(n / hop)) + 1
    padded_len = (n_frames + 1) * hop
    win = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(2 * hop) / (2 * hop))
    frame_starts = (np.arange(n_frames) - 1) * hop
    sample_idx = frame_starts[:, None] + np.arange(2 * hop)[None, :]
    valid = (sample_idx >= 0) & (sample_idx < n)
    safe_idx = np.clip(sample_idx, 0, n - 1)
    nfft = 4 * hop
    omega = 2.0 * np.pi * np.arange(nfft // 2 + 1) / nfft

    centres = np.clip(frame_starts + hop, 0, n - 1)
    targets = _VOWELS[syl["vowel"][idx[centres]]]
    formants = np.concatenate([targets, np.full((n_frames, 1), _F4)], axis=1)
    formants = formants * speaker.formant_scale * np.asarray(speaker.formant_offsets)
    formants = _smooth(formants, 7)
    bandwidths = np.broadcast_to(_BANDWIDTHS, formants.shape)
    keep = formants < 0.47 * sr
    h_voiced = _resonator_response(
        np.where(keep, formants, 0.25 * sr) / sr,
        np.where(keep, bandwidths, 0.5 * sr) / sr,
        omega,
    )
    # Speaker tilt: a fixed first-order section, normalised at 1 kHz.
    shelf = 1.0 - speaker.tilt * np.exp(-1j * omega)
    h_voiced = h_voiced * (
        shelf / abs(1.0 - speaker.tilt * np.exp(-2j * np.pi * 1000 / sr))
    )
    fc = np.minimum(syl["noise_fc"][idx[centres]], 0.4 * sr)[:, None]
    h_noise = _resonator_response(fc / sr, 0.35 * fc / sr, omega)
    h_noise = h_noise * (1.0 - np.exp(-1j * omega))  # tilt noise upwards

    spec = np.fft.rfft(np.where(valid, voiced_exc[safe_idx], 0.0) * win, nfft)
    spec = spec * h_voiced
    spec += np.fft.rfft(np.where(valid, noise_exc[safe_idx], 0.0) * win, nfft) * h_noise
    frames = np.fft.irfft(spec, nfft)

    out = np.zeros(padded_len + nfft)
    blocks = frames.reshape(n_frames, nfft // hop, hop)
    out_blocks = out.reshape(-1, hop)
    for j in range(nfft // hop):
        out_blocks[j : j + n_frames] += blocks[:, j, :]
    y = out[hop : hop + n]  # frame 0 starts one hop before sample 0

    level = np.sqrt(np.mean(y * y))
    # A faint room-noise floor (-60 dB) so pauses are not digital silence.
    y = y + 1e-3 * max(level, 1e-12) * rng.standard_normal(n)
    level = np.sqrt(np.mean(y * y))
    return (y * (rms / level)).astype(np.float32)


def noise_like(rng, seconds, sr, rms=0.05):
    """Coloured, slowly modulated background noise (stands in for WHAM! noise).

    The spectrum follows a random power law (between pink and brown) and the
    level drifts slowly, like a café or street recording.

    Example
    -------
    >>> x = noise_like(np.random.default_rng(0), 0.5, 8000)
    >>> x.shape, x.dtype
    ((4000,), dtype('float32'))
    """
    n = int(round(seconds * sr))
    if n <= 0:
        return np.zeros(0, dtype=np.float32)
    spec = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1.0 / sr)
    slope = rng.uniform(0.5, 1.0)
    spec = spec / np.maximum(freqs, 50.0) ** slope
    y = np.fft.irfft(spec, n)
    n_knots = max(int(seconds * 2) + 2, 2)
    knots = 10.0 ** (rng.normal(0.0, 3.0, n_knots) / 20.0)
    y = y * np.interp(np.linspace(0, n_knots - 1, n), np.arange(n_knots), knots)
    level = np.sqrt(np.mean(y * y))
    return (y * (rms / max(level, 1e-12))).astype(np.float32)


@dataclass(frozen=True)
class MixtureSpec:
    """How hard one mixture is meant to be.

    Arguments
    ---------
    gains_db : tuple of float
        Level of each source relative to the others, in dB (WSJ0-mix style:
        for two sources ``(+d/2, -d/2)`` in random order).
    hard_level : bool
        Whether the level difference was drawn from the hard range.
    close_pitch : bool
        Whether the first two speakers should have nearly the same mean F0.
    overlap : float
        Fraction of the mixture during which the second source is active
        (1.0 = full overlap).

    Example
    -------
    >>> spec = draw_mixture_spec(np.random.default_rng(0))
    >>> len(spec.gains_db), 0.0 < spec.overlap <= 1.0
    (2, True)
    """

    gains_db: tuple
    hard_level: bool
    close_pitch: bool
    overlap: float

    @property
    def level_diff_db(self):
        """Spread between the loudest and quietest source, in dB."""
        return float(max(self.gains_db) - min(self.gains_db))


def draw_mixture_spec(
    rng,
    n_spks=2,
    p_hard_level=0.2,
    p_close_pitch=0.25,
    p_partial=0.3,
    level_range=(0.0, 5.0),
    hard_level_range=(5.0, 10.0),
    overlap_range=(0.35, 0.8),
):
    """Draw the difficulty factors of one mixture.

    The level difference is uniform in ``level_range`` dB (the WSJ0-2mix
    range), except with probability ``p_hard_level`` where it is uniform in
    ``hard_level_range``; with probability ``p_close_pitch`` the first two
    speakers get nearly equal pitch; with probability ``p_partial`` the second
    source covers only a uniform ``overlap_range`` fraction of the mixture.
    """
    hard = bool(rng.random() < p_hard_level)
    low, high = hard_level_range if hard else level_range
    diff = float(rng.uniform(low, high))
    if n_spks == 2:
        gains = [diff / 2.0, -diff / 2.0]
    else:
        gains = [diff / 2.0, -diff / 2.0]
        gains += list(rng.uniform(-diff / 2.0, diff / 2.0, n_spks - 2))
    gains = [float(g) for g in rng.permutation(gains)]
    close = bool(rng.random() < p_close_pitch)
    partial = bool(rng.random() < p_partial)
    overlap = float(rng.uniform(*overlap_range)) if partial else 1.0
    return MixtureSpec(tuple(gains), hard, close, overlap)


def make_mixture(rng, speakers, spec, lengths, sr):
    """Synthesise the sources of one mixture, scaled by ``spec.gains_db``.

    Arguments
    ---------
    rng : numpy.random.Generator
        Random state.
    speakers : list of Speaker
        One voice per source.
    spec : MixtureSpec
        Difficulty factors; only ``gains_db`` and ``overlap`` are used here
        (pitch closeness is the caller's choice of ``speakers``).
    lengths : list of int
        Number of samples of each source before zero padding.
    sr : int
        Sample rate.

    Returns
    -------
    numpy.ndarray
        float64 array [n_spks, max(lengths)], each row zero-padded at the end.

    Example
    -------
    >>> rng = np.random.default_rng(1)
    >>> spks = [random_speaker(rng), random_speaker(rng)]
    >>> spec = MixtureSpec((3.0, -3.0), False, False, 1.0)
    >>> src = make_mixture(rng, spks, spec, [8000, 8000], 8000)
    >>> ratio = 10 * np.log10(np.mean(src[0] ** 2) / np.mean(src[1] ** 2))
    >>> round(float(ratio), 1)
    6.0
    """
    total = max(lengths)
    sources = np.zeros((len(speakers), total))
    for i, (speaker, length) in enumerate(zip(speakers, lengths, strict=True)):
        active = length
        offset = 0
        if i == 1 and spec.overlap < 1.0:
            active = max(int(round(spec.overlap * length)), 1)
            offset = 0 if rng.random() < 0.5 else length - active
        sig = speech_like(rng, active / sr, sr, speaker=speaker).astype(np.float64)
        sig = sig[:active]
        # Gains compare speaking levels: a partially active source has the
        # same level while it speaks as it would have over the full length.
        scale = 10.0 ** (spec.gains_db[i] / 20.0)
        sources[i, offset : offset + len(sig)] = sig * scale
    return sources
