"""Small speech-like stand-in for Google Speech Commands, in the real layout.

The real corpus cannot be downloaded here, so the keyword-spotting recipe
generates its default data: every word is a fixed sequence of phone-like
segments (vowels with formant targets, fricatives, plosive bursts, nasals)
with its own pitch contour and rhythm; every speaker changes the pitch, the
vocal-tract length (formant scale) and the speaking rate; every utterance adds
small random variations, a random onset and a little noise.

The files are laid out like the official release::

    <root>/<word>/<speaker>_nohash_<n>.wav        16 kHz, 16-bit, <= 1 s
    <root>/_background_noise_/<name>.wav          long noise recordings
    <root>/_background_noise_/README.md
    <root>/validation_list.txt                    lines like "yes/0a1b2c3d_nohash_0.wav"
    <root>/testing_list.txt

Speakers are split into train / validation / test speakers, as the official
lists do (they never share a speaker across splits).

Example
-------
>>> import tempfile, os
>>> with tempfile.TemporaryDirectory() as tmp:
...     root = generate_gsc(os.path.join(tmp, "gsc"), words=("yes", "no"),
...                         n_speakers=3, repetitions=1, valid_speakers=1,
...                         test_speakers=1, background_seconds=2.0)
...     sorted(os.listdir(root))
['_background_noise_', 'no', 'testing_list.txt', 'validation_list.txt', 'yes']
"""

import os
import zlib

import numpy as np
import soundfile as sf
from scipy import signal

from hardmine.synthetic.cache import cached_dataset
from hardmine.validation import ConfigError, check_int, check_number

__all__ = [
    "CORE_KEYWORDS",
    "V1_WORDS",
    "V2_WORDS",
    "DEFAULT_WORDS",
    "word_spec",
    "synthesize_word",
    "generate_gsc",
    "default_gsc",
]

# The ten command words of the 12-class task.
CORE_KEYWORDS = (
    "yes",
    "no",
    "up",
    "down",
    "left",
    "right",
    "on",
    "off",
    "stop",
    "go",
)
# Word inventories of the two public releases (v0.01: 30 words, v0.02: 35).
V1_WORDS = CORE_KEYWORDS + (
    "bed",
    "bird",
    "cat",
    "dog",
    "eight",
    "five",
    "four",
    "happy",
    "house",
    "marvin",
    "nine",
    "one",
    "seven",
    "sheila",
    "six",
    "three",
    "tree",
    "two",
    "wow",
    "zero",
)
V2_WORDS = V1_WORDS + ("backward", "follow", "forward", "learn", "visual")
# Embedded default: the ten keywords plus three "unknown" words.
DEFAULT_WORDS = CORE_KEYWORDS + ("bed", "cat", "dog")

BACKGROUND_NAMES = ("white_noise", "pink_noise", "running_tap", "humming_fan")
_FORMAT_VERSION = 2

# Vowel formant targets (F1, F2, F3 in Hz) for an adult vocal tract.
_VOWELS = {
    "i": (270, 2290, 3010),
    "I": (390, 1990, 2550),
    "e": (530, 1840, 2480),
    "ae": (660, 1720, 2410),
    "a": (730, 1090, 2440),
    "o": (570, 840, 2410),
    "U": (440, 1020, 2240),
    "u": (300, 870, 2240),
    "V": (640, 1190, 2390),
    "er": (490, 1350, 1690),
}
# Unvoiced noise segments: (low, high) pass band in Hz and relative level.
_FRICATIVES = {
    "s": (4200, 7400, 0.35),
    "sh": (2200, 4200, 0.4),
    "f": (1500, 7000, 0.15),
    "h": (500, 3000, 0.12),
}
_PLOSIVES = {"p": (600, 3000), "t": (3000, 7000), "k": (1500, 3500)}
_NASALS = {"m": (250, 1100, 2200), "n": (250, 1600, 2500)}


def _rng_for(*parts):
    """A numpy generator seeded from the given strings/ints (stable across runs)."""
    key = "|".join(str(p) for p in parts).encode()
    return np.random.default_rng(zlib.crc32(key))


def word_spec(word, salt=0):
    """Return the phone sequence, rhythm and pitch contour of a synthetic word.

    The spec depends only on ``word`` and ``salt``, so a word sounds the same in
    every run and on every machine.

    Arguments
    ---------
    word : str
        The word name (only used as a seed).
    salt : int
        Changes the spec when two words would otherwise collide.

    Returns
    -------
    dict
        ``segments``: list of ``(kind, phone, duration_s)`` with kind in
        vowel/fricative/plosive/nasal; ``pitch``: (start, end) multipliers of
        the speaker's base pitch.

    Example
    -------
    >>> spec = word_spec("yes")
    >>> spec == word_spec("yes"), spec == word_spec("no")
    (True, False)
    >>> {kind for kind, _, _ in spec["segments"]} <= {"vowel", "fricative", "plosive", "nasal"}
    True
    """
    rng = _rng_for("word", word, salt)
    n_syll = 1 if rng.random() < 0.6 else 2
    onsets = list(_FRICATIVES) + list(_PLOSIVES) + list(_NASALS)
    segments = []
    for _ in range(n_syll):
        if rng.random() < 0.75:
            segments.append(_consonant(rng, onsets))
        vowel = rng.choice(list(_VOWELS))
        segments.append(("vowel", str(vowel), float(rng.uniform(0.11, 0.2))))
        if rng.random() < 0.4:  # diphthong glide
            glide = rng.choice([v for v in _VOWELS if v != vowel])
            segments.append(("vowel", str(glide), float(rng.uniform(0.06, 0.12))))
    if rng.random() < 0.6:
        segments.append(_consonant(rng, onsets))
    pitch = (float(rng.uniform(0.9, 1.3)), float(rng.uniform(0.7, 1.05)))
    return {"segments": segments, "pitch": pitch}


def _consonant(rng, names):
    name = str(rng.choice(names))
    if name in _FRICATIVES:
        return ("fricative", name, float(rng.uniform(0.07, 0.14)))
    if name in _PLOSIVES:
        return ("plosive", name, float(rng.uniform(0.05, 0.08)))
    return ("nasal", name, float(rng.uniform(0.06, 0.1)))


def _signature(spec):
    return tuple((kind, phone) for kind, phone, _ in spec["segments"])


def _distinct_specs(words):
    """Specs for ``words``, re-salting any word whose phones repeat another's."""
    specs, seen = {}, set()
    for word in words:
        salt = 0
        spec = word_spec(word, salt)
        while _signature(spec) in seen:
            salt += 1
            spec = word_spec(word, salt)
        seen.add(_signature(spec))
        specs[word] = spec
    return specs


def _speaker(rng):
    """Random speaker traits: base pitch, formant scale, rate."""
    female = rng.random() < 0.5
    return {
        "f0": float(rng.uniform(170, 250) if female else rng.uniform(90, 150)),
        "formant_scale": float(
            rng.uniform(1.05, 1.2) if female else rng.uniform(0.9, 1.02)
        ),
        "rate": float(rng.uniform(0.8, 1.2)),
    }


def synthesize_word(spec, speaker, rng, sample_rate=16000):
    """Render one utterance of a word (no padding, no noise).

    Arguments
    ---------
    spec : dict
        Output of :func:`word_spec`.
    speaker : dict
        ``f0`` (Hz), ``formant_scale`` and ``rate`` (duration divisor).
    rng : numpy.random.Generator
        Source of the per-utterance variation.
    sample_rate : int
        Output rate in Hz.

    Returns
    -------
    numpy.ndarray
        float32 waveform with peak 1.

    Example
    -------
    >>> rng = np.random.default_rng(0)
    >>> wav = synthesize_word(word_spec("go"), {"f0": 120.0, "formant_scale": 1.0, "rate": 1.0}, rng)
    >>> wav.dtype, 0.1 < len(wav) / 16000 < 1.0, float(abs(wav).max())
    (dtype('float32'), True, 1.0)
    """
    sr = sample_rate
    rate = speaker["rate"] * rng.uniform(0.93, 1.07)
    scale = speaker["formant_scale"] * rng.uniform(0.97, 1.03)
    durations = [max(int(d / rate * sr), 1) for _, _, d in spec["segments"]]
    total = sum(durations)
    t = np.arange(total)

    # Formant tracks: targets at the centre of each voiced segment, linear
    # transitions in between (consonants borrow the neighbouring vowels').
    knots, targets, voicing = [], [], np.zeros(total)
    unvoiced = np.zeros(total)
    start = 0
    for (kind, phone, _), n in zip(spec["segments"], durations, strict=True):
        stop = start + n
        if kind == "vowel":
            knots.append(start + n / 2)
            targets.append(_VOWELS[phone])
            voicing[start:stop] = 1.0
        elif kind == "nasal":
            knots.append(start + n / 2)
            targets.append(_NASALS[phone])
            voicing[start:stop] = 0.35
        elif kind == "fricative":
            low, high, level = _FRICATIVES[phone]
            unvoiced[start:stop] += level * _band_noise(rng, n, low, high, sr)
        else:  # plosive: closure then a short burst
            low, high = _PLOSIVES[phone]
            burst = min(int(0.018 * sr), n)
            unvoiced[stop - burst : stop] += 0.5 * _band_noise(
                rng, burst, low, high, sr
            )
        start = stop
    targets = np.asarray(targets, dtype=float) * scale
    if len(knots) == 1:
        formants = np.repeat(targets, total, axis=0).T
    else:
        formants = np.stack([np.interp(t, knots, targets[:, i]) for i in range(3)])

    # Smooth the on/off voicing so segments do not click.
    ramp = np.hanning(max(int(0.012 * sr), 3))
    voicing = np.convolve(voicing, ramp / ramp.sum(), mode="same")

    # Pitch: the word's contour over the speaker's base, with a little jitter.
    p0, p1 = spec["pitch"]
    f0 = speaker["f0"] * rng.uniform(0.95, 1.05) * np.linspace(p0, p1, total)
    f0 *= 1.0 + 0.01 * np.sin(2 * np.pi * rng.uniform(4, 7) * t / sr)
    phase = 2 * np.pi * np.cumsum(f0) / sr

    # Additive synthesis: harmonic k gets the formant envelope at k * f0.
    # The envelope moves slowly, so it is computed every `hop` samples and
    # interpolated linearly in between.
    hop = 32
    n_harm = int(0.47 * sr / f0.min())
    k = np.arange(1, n_harm + 1)[:, None]
    grid = np.arange(0, total + hop, hop).clip(max=total - 1)
    freq = k * f0[grid]
    env = np.zeros_like(freq)
    for i, (gain, bandwidth) in enumerate(
        zip((1.0, 0.6, 0.3), (90.0, 120.0, 180.0), strict=True)
    ):
        env += gain / (1.0 + ((freq - formants[i][grid]) / bandwidth) ** 2)
    env *= (freq < 0.47 * sr) / np.sqrt(k)
    position = t / hop
    left = position.astype(int)
    frac = position - left
    env = env[:, left] * (1 - frac) + env[:, left + 1] * frac
    voiced = np.einsum("kt,kt->t", env, np.sin(k * phase))
    voiced /= max(np.abs(voiced).max(), 1e-9)
    wav = voicing * voiced + unvoiced
    wav /= max(np.abs(wav).max(), 1e-9)
    return wav.astype(np.float32)


def _band_noise(rng, n, low, high, sr):
    sos = signal.butter(
        2, [low, min(high, 0.49 * sr)], btype="band", fs=sr, output="sos"
    )
    noise = signal.sosfilt(sos, rng.standard_normal(n + 64))[64:]
    noise /= max(np.abs(noise).max(), 1e-9)
    return noise * np.hanning(n) ** 0.5


def _background(name, seconds, sr, rng):
    n = int(seconds * sr)
    white = rng.standard_normal(n)
    if name == "white_noise":
        out = white
    elif name == "pink_noise":
        spectrum = np.fft.rfft(white)
        freqs = np.fft.rfftfreq(n, 1 / sr)
        spectrum[1:] /= np.sqrt(freqs[1:])
        spectrum[0] = 0
        out = np.fft.irfft(spectrum, n)
    elif name == "running_tap":
        sos = signal.butter(2, [800, 5000], btype="band", fs=sr, output="sos")
        wobble = 1 + 0.4 * np.sin(2 * np.pi * 3.1 * np.arange(n) / sr)
        out = signal.sosfilt(sos, white) * wobble
    else:  # humming_fan: low hum with harmonics over soft noise
        t = np.arange(n) / sr
        out = 0.3 * white + sum(np.sin(2 * np.pi * 60 * h * t) / h for h in range(1, 6))
    out = out / np.abs(out).max() * rng.uniform(0.2, 0.5)
    return out.astype(np.float32)


def _utterance_noise(rng, n):
    """White or pink (1/f power) noise of unit scale."""
    white = rng.standard_normal(n)
    if rng.random() < 0.5:
        return white
    spectrum = np.fft.rfft(white)
    spectrum[1:] /= np.sqrt(np.arange(1, len(spectrum)))
    spectrum[0] = 0
    return np.fft.irfft(spectrum, n)


def _speaker_ids(rng, n):
    ids = set()
    while len(ids) < n:
        ids.add(f"{int(rng.integers(0, 2**32)):08x}")
    return sorted(ids)


def generate_gsc(
    root,
    words=DEFAULT_WORDS,
    n_speakers=14,
    repetitions=2,
    valid_speakers=2,
    test_speakers=2,
    background_seconds=20.0,
    sample_rate=16000,
    snr_db=(0.0, 20.0),
    short_fraction=0.1,
    seed=0,
):
    """Write a synthetic speech-commands corpus in the official layout.

    Arguments
    ---------
    root : str
        Output folder (created; must not already contain a corpus).
    words : sequence of str
        Word folders to create.
    n_speakers : int
        Number of speakers; each says every word ``repetitions`` times.
    repetitions : int
        Utterances per speaker and word (``_nohash_0`` ... ``_nohash_<r-1>``).
    valid_speakers, test_speakers : int
        Speakers whose files are listed in ``validation_list.txt`` /
        ``testing_list.txt``; the rest are training speakers.
    background_seconds : float
        Length of each ``_background_noise_`` file.
    sample_rate : int
        Sampling rate of every file.
    snr_db : (float, float)
        Each utterance gets white or pink noise at a signal-to-noise ratio
        drawn uniformly from this range (in dB, over the word's span), so some
        utterances are hard to hear.
    short_fraction : float
        Fraction of clips cut shorter than 1 s (as some real ones are).
    seed : int
        Seed of the speaker and utterance variation (word specs are fixed).

    Returns
    -------
    str
        ``root``.
    """
    words = list(words)
    if not words or len(set(words)) != len(words):
        raise ConfigError("words", f"need distinct word names, got {words!r}")
    n_speakers = check_int("n_speakers", n_speakers, minimum=1)
    repetitions = check_int("repetitions", repetitions, minimum=1)
    valid_speakers = check_int("valid_speakers", valid_speakers, minimum=0)
    test_speakers = check_int("test_speakers", test_speakers, minimum=0)
    if valid_speakers + test_speakers >= n_speakers:
        raise ConfigError(
            "n_speakers",
            f"{n_speakers} speakers leave none for training after "
            f"{valid_speakers} validation and {test_speakers} test speakers",
        )
    check_number("background_seconds", background_seconds, minimum=1.0)
    check_number("short_fraction", short_fraction, minimum=0.0, maximum=1.0)
    sr = check_int("sample_rate", sample_rate, minimum=8000)
    try:
        snr_low, snr_high = (float(v) for v in snr_db)
    except (TypeError, ValueError):
        raise ConfigError(
            "snr_db", f"must be a (low, high) pair, got {snr_db!r}"
        ) from None
    if snr_low > snr_high:
        raise ConfigError("snr_db", f"low {snr_low} is above high {snr_high}")

    rng = np.random.default_rng(seed)
    specs = _distinct_specs(words)
    speaker_ids = _speaker_ids(rng, n_speakers)
    traits = {spk: _speaker(rng) for spk in speaker_ids}
    order = rng.permutation(n_speakers)
    valid_set = {speaker_ids[i] for i in order[:valid_speakers]}
    test_set = {
        speaker_ids[i] for i in order[valid_speakers : valid_speakers + test_speakers]
    }

    os.makedirs(root, exist_ok=True)
    valid_lines, test_lines = [], []
    clip = sr  # 1 s
    for word in words:
        os.makedirs(os.path.join(root, word), exist_ok=True)
        for spk in speaker_ids:
            for rep in range(repetitions):
                wav = synthesize_word(specs[word], traits[spk], rng, sr)[:clip]
                length = clip
                if rng.random() < short_fraction:
                    length = max(int(rng.uniform(0.7, 0.95) * clip), len(wav))
                out = np.zeros(length, dtype=np.float32)
                onset = int(rng.integers(0, length - len(wav) + 1))
                word_audio = wav * rng.uniform(0.2, 0.6)
                out[onset : onset + len(wav)] = word_audio
                noise = _utterance_noise(rng, length)
                snr = rng.uniform(snr_low, snr_high)
                gain = np.sqrt(
                    np.mean(word_audio**2) / 10 ** (snr / 10) / np.mean(noise**2)
                )
                out += (gain * noise).astype(np.float32)
                rel = f"{word}/{spk}_nohash_{rep}.wav"
                sf.write(
                    os.path.join(root, rel), np.clip(out, -1, 1), sr, subtype="PCM_16"
                )
                if spk in valid_set:
                    valid_lines.append(rel)
                elif spk in test_set:
                    test_lines.append(rel)

    noise_dir = os.path.join(root, "_background_noise_")
    os.makedirs(noise_dir, exist_ok=True)
    for name in BACKGROUND_NAMES:
        noise = _background(name, background_seconds, sr, rng)
        sf.write(os.path.join(noise_dir, f"{name}.wav"), noise, sr, subtype="PCM_16")
    with open(os.path.join(noise_dir, "README.md"), "w") as f:
        f.write("Long background-noise recordings; 1 s crops form the silence class.\n")
    for name, lines in (
        ("validation_list.txt", valid_lines),
        ("testing_list.txt", test_lines),
    ):
        with open(os.path.join(root, name), "w") as f:
            f.write("".join(line + "\n" for line in sorted(lines)))
    return root


def default_gsc(cache_dir=None, **generate_kwargs):
    """Return the folder of the embedded default corpus, generating it once.

    The corpus goes to ``<cache_dir>/gsc-default``; ``cache_dir`` defaults to
    ``$HARDMINE_CACHE`` or ``~/.cache/hardmine``. It is generated once by
    :func:`hardmine.synthetic.cache.cached_dataset`: written to a temporary
    sibling folder and renamed into place, under a file lock, so an
    interrupted generation never leaves a half-written corpus behind and
    concurrent callers (e.g. DDP ranks) wait for one generation.

    Arguments
    ---------
    cache_dir : str, optional
        Parent folder of the cached corpus.
    **generate_kwargs
        Passed to :func:`generate_gsc`; they are recorded in the folder and
        a cached corpus made with different arguments raises an error (a
        ConfigError naming ``data_folder``).

    Returns
    -------
    str
        Path of the corpus.

    Example
    -------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     kw = dict(words=("yes", "no"), n_speakers=3, repetitions=1,
    ...               valid_speakers=1, test_speakers=1, background_seconds=2.0)
    ...     first = default_gsc(tmp, **kw)
    ...     mtime = os.path.getmtime(os.path.join(first, "yes"))
    ...     again = default_gsc(tmp, **kw)
    ...     first == again, mtime == os.path.getmtime(os.path.join(again, "yes"))
    (True, True)
    """
    spec = {"format": _FORMAT_VERSION, **generate_kwargs}
    return cached_dataset(
        "gsc-default",
        lambda folder: generate_gsc(folder, **generate_kwargs),
        spec,
        cache_dir=cache_dir,
        marker="corpus.json",
        on_mismatch="error",
        description="default synthetic Speech Commands corpus",
    )
