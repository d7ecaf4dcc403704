"""Synthetic separation datasets written in the real WSJ0-mix and LibriMix layouts.

The preparation scripts of the recipes are meant for the real corpora, which
cannot be downloaded here. These generators write speech-like mixtures
(:mod:`hardmine.synthetic.mixtures`) with the same folder structure, file naming, audio
format (16-bit PCM wav) and, for LibriMix, metadata CSVs, so the real
preparation code runs unchanged on them. :func:`default_wsj0mix` and
:func:`default_librimix` build the small sets the two separation recipes use
by default, once, and cache them.

Every generated set also gets ``mixture_info.csv`` next to its split folders,
listing each mixture's difficulty factors (level difference, pitch gap of the
first two speakers, overlap), so mined hard examples can be related to them.

Example
-------
>>> import os, tempfile
>>> with tempfile.TemporaryDirectory() as tmp:
...     root = make_wsj0mix(tmp, sizes={"tr": 2, "cv": 1, "tt": 1}, seconds=0.5)
...     names = sorted(os.listdir(os.path.join(root, "wav8k", "min", "tr", "mix")))
...     len(names), names[0].count("_")
(2, 3)
"""

import csv
import logging
import os

import numpy as np
import soundfile as sf

from hardmine.synthetic.cache import cached_dataset
from hardmine.synthetic.mixtures import (
    draw_mixture_spec,
    make_mixture,
    noise_like,
    random_speaker,
    semitones,
)
from hardmine.validation import ConfigError, check_choice, check_int, check_number

__all__ = [
    "make_wsj0mix",
    "make_librimix",
    "default_wsj0mix",
    "default_librimix",
    "DEFAULT_SIZES",
    "DEFAULT_LIBRI_SIZES",
]

logger = logging.getLogger(__name__)

WSJ_SPLITS = ("tr", "cv", "tt")
LIBRI_SPLITS = ("train", "dev", "test")
DEFAULT_SIZES = {"tr": 400, "cv": 50, "tt": 100}
DEFAULT_LIBRI_SIZES = {"train": 400, "dev": 50, "test": 100}
DEFAULT_LIBRI_SECONDS = 2.0
# Bump when the generator changes so cached default sets are rebuilt.
GENERATOR_VERSION = 2
_MARKER = "hardmine-dataset.json"
_BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"


def _check_common(n_spks, fs, version, seconds):
    check_choice("n_spks", n_spks, (2, 3))
    check_choice("fs", fs, (8000, 16000))
    check_choice("version", version, ("min", "max"))
    check_number("seconds", seconds, minimum=0.0, strict=True)


def _check_sizes(sizes, splits):
    for key, value in sizes.items():
        if key not in splits:
            raise ConfigError("sizes", f"unknown split {key!r}, expected {splits}")
        check_int(f"sizes[{key}]", value, minimum=0)


def _speaker_pool(rng, count, prefix):
    """A fixed pool of speakers, named with WSJ-like three-character codes."""
    pool = []
    for k in range(count):
        code = prefix + _BASE36[(k // 36) % 36] + _BASE36[k % 36]
        pool.append(random_speaker(rng, name=code))
    return pool


def _pick_speakers(rng, pool, n_spks, close_pitch):
    """Choose distinct speakers; with ``close_pitch`` the second one is the
    pool member whose mean F0 is nearest the first one's."""
    first = int(rng.integers(len(pool)))
    rest = [k for k in range(len(pool)) if k != first]
    gaps = np.abs([semitones(pool[k].f0, pool[first].f0) for k in rest])
    if close_pitch:
        second = rest[int(np.argmin(gaps))]
    else:
        far = [k for k, gap in zip(rest, gaps, strict=True) if gap > 2.0] or rest
        second = far[int(rng.integers(len(far)))]
    chosen = [first, second]
    others = [k for k in rest if k != second]
    chosen += [others[i] for i in rng.permutation(len(others))[: n_spks - 2]]
    return [pool[k] for k in chosen]


def _lengths(rng, n_spks, n, version):
    """Source lengths: all ``n`` for ``min``; for ``max`` one source is full
    length and the others last 60-100 % of it."""
    if version == "min":
        return [n] * n_spks
    lengths = [int(n * rng.uniform(0.6, 1.0)) for _ in range(n_spks)]
    lengths[int(rng.integers(n_spks))] = n
    return lengths


def _to_pcm(signals, peak=0.9, mixtures=None):
    """Scale float sources jointly so the loudest mixture peaks at ``peak`` and
    round them to int16, so that a stored mixture is exactly its stored sum.

    ``mixtures`` lists the row sets whose sums are written as mixtures (all
    rows by default); each must fit, e.g. LibriMix's clean mixture (speech
    only) can peak higher than the noisy one.
    """
    mixtures = mixtures or [slice(None)]
    total = max(np.abs(signals[rows].sum(axis=0)).max() for rows in mixtures)
    biggest = np.abs(signals).max()
    scale = peak / max(total, biggest, 1e-9)
    return np.round(signals * scale * 32767.0).astype(np.int16)


def _write(path, samples, fs):
    """Write integer samples (a sum of int16 signals) as 16-bit PCM."""
    samples = np.asarray(samples, dtype=np.int64)
    if np.abs(samples).max(initial=0) > 32767:
        raise ValueError(f"sample overflow while writing {path}")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    sf.write(path, samples.astype(np.int16), fs, subtype="PCM_16")


def _info_row(split, name, spec, speakers):
    return {
        "split": split,
        "name": name,
        "gains_db": " ".join(f"{g:.4f}" for g in spec.gains_db),
        "level_diff_db": f"{spec.level_diff_db:.3f}",
        "hard_level": int(spec.hard_level),
        "f0_hz": " ".join(f"{s.f0:.1f}" for s in speakers),
        "f0_gap_st": f"{abs(semitones(speakers[1].f0, speakers[0].f0)):.3f}",
        "close_pitch": int(spec.close_pitch),
        "overlap": f"{spec.overlap:.3f}",
    }


def _write_info(path, rows):
    fields = ["split", "name", "gains_db", "level_diff_db", "hard_level"]
    fields += ["f0_hz", "f0_gap_st", "close_pitch", "overlap"]
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def make_wsj0mix(
    root, n_spks=2, fs=8000, version="min", sizes=None, seconds=2.0, seed=0
):
    """Write a synthetic dataset in the WSJ0-2mix / WSJ0-3mix layout.

    Files go to ``<root>/wav{8k|16k}/{min|max}/{tr,cv,tt}/{mix,s1,s2[,s3]}/``
    with the same name in every folder, ``<utt1>_<gain1>_<utt2>_<gain2>.wav``
    (plus ``_<utt3>_<gain3>`` for three speakers), gains in dB as in the
    original lists. Audio is 16-bit PCM and each mixture is exactly the sum of
    its stored sources. In ``min`` every file of a set lasts ``seconds``; in
    ``max`` sources last 60-100 % of ``seconds`` and are zero-padded at the end
    to the mixture's length. ``tr`` and ``cv`` share a pool of 20 speakers and
    ``tt`` uses 8 others, like the unseen test speakers of WSJ0-mix.

    Arguments
    ---------
    root : str
        Dataset root (created if needed).
    n_spks : int
        2 or 3 speakers per mixture.
    fs : int
        8000 or 16000.
    version : str
        "min" or "max".
    sizes : dict, optional
        Mixtures per split, e.g. ``{"tr": 8, "cv": 4, "tt": 4}`` (the default).
    seconds : float
        Mixture duration.
    seed : int
        Random seed; the same arguments always give the same files.

    Returns
    -------
    str
        ``root``, to pass as the recipes' ``data_folder``.
    """
    _check_common(n_spks, fs, version, seconds)
    sizes = dict({"tr": 8, "cv": 4, "tt": 4}, **(sizes or {}))
    _check_sizes(sizes, WSJ_SPLITS)
    base = os.path.join(root, f"wav{fs // 1000}k", version)
    n = int(round(seconds * fs))
    pools = {
        "train": _speaker_pool(np.random.default_rng([seed, 101]), 20, "0"),
        "test": _speaker_pool(np.random.default_rng([seed, 102]), 8, "4"),
    }
    info = []
    for s_idx, split in enumerate(WSJ_SPLITS):
        rng = np.random.default_rng([seed, s_idx, n_spks, fs, version == "max"])
        pool = pools["test" if split == "tt" else "train"]
        for k in range(sizes[split]):
            spec = draw_mixture_spec(rng, n_spks)
            speakers = _pick_speakers(rng, pool, n_spks, spec.close_pitch)
            lengths = _lengths(rng, n_spks, n, version)
            sources = _to_pcm(make_mixture(rng, speakers, spec, lengths, fs))
            parts = []
            for i, spk in enumerate(speakers):
                # WSJ-like 8-character utterance ID: speaker code, a letter
                # for the split, and a running number (unique in the split).
                utt = f"{spk.name}{'cao'[s_idx]}{k * n_spks + i:04x}"
                parts += [utt, f"{spec.gains_db[i]:.4f}"]
            name = "_".join(parts) + ".wav"
            _write(os.path.join(base, split, "mix", name), sources.sum(0), fs)
            for i in range(n_spks):
                _write(os.path.join(base, split, f"s{i + 1}", name), sources[i], fs)
            info.append(_info_row(split, name, spec, speakers))
    _write_info(os.path.join(base, "mixture_info.csv"), info)
    return root


def make_librimix(
    root,
    n_spks=2,
    fs=8000,
    version="min",
    sizes=None,
    seconds=2.0,
    seed=0,
    with_metadata=True,
    train_set="train-360",
):
    """Write a synthetic dataset in the Libri2Mix / Libri3Mix layout.

    Files go to ``<root>/wav{8k|16k}/{min|max}/{<train_set>,dev,test}/`` in the
    folders ``mix_clean`` (sum of the sources), ``mix_both`` (sources plus
    noise), ``s1``, ``s2`` [, ``s3``] and ``noise``, named
    ``<utt1>_<utt2>[_<utt3>].wav`` with LibriSpeech-style utterance IDs
    (``<speaker>-<chapter>-<nnnn>``). The noise is coloured, slowly modulated
    noise at 0-10 dB below the speech (20 % of mixtures at 0-5 dB above it).
    With ``with_metadata``, ``<root>/wav{8k|16k}/{min|max}/metadata/
    mixture_<split>_mix_<clean|both>.csv`` lists absolute paths and lengths
    (columns mixture_ID, mixture_path, source_1_path, source_2_path,
    [source_3_path], [noise_path for mix_both], length).

    Arguments are as for :func:`make_wsj0mix`; ``sizes`` uses the keys
    ``"train"``, ``"dev"`` and ``"test"`` (default 8, 4, 4) and
    ``train_set`` is "train-360" or "train-100".

    Example
    -------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     root = make_librimix(tmp, sizes={"train": 1, "dev": 1, "test": 1},
    ...                          seconds=0.25)
    ...     sorted(os.listdir(os.path.join(root, "wav8k", "min")))
    ['dev', 'metadata', 'mixture_info.csv', 'test', 'train-360']
    """
    _check_common(n_spks, fs, version, seconds)
    check_choice("train_set", train_set, ("train-360", "train-100"))
    sizes = dict({"train": 8, "dev": 4, "test": 4}, **(sizes or {}))
    _check_sizes(sizes, LIBRI_SPLITS)
    base = os.path.abspath(os.path.join(root, f"wav{fs // 1000}k", version))
    n = int(round(seconds * fs))
    info = []
    for s_idx, split in enumerate(LIBRI_SPLITS):
        folder = train_set if split == "train" else split
        rng = np.random.default_rng([seed, 50 + s_idx, n_spks, fs, version == "max"])
        # LibriMix splits have disjoint speakers, as LibriSpeech's do.
        pool = _speaker_pool(rng, 12, str(s_idx + 1))
        chapters = {s.name: int(rng.integers(1000, 99999)) for s in pool}
        meta = {"clean": [], "both": []}
        for k in range(sizes[split]):
            spec = draw_mixture_spec(rng, n_spks)
            speakers = _pick_speakers(rng, pool, n_spks, spec.close_pitch)
            lengths = _lengths(rng, n_spks, n, version)
            speech = make_mixture(rng, speakers, spec, lengths, fs)
            noise = noise_like(rng, speech.shape[1] / fs, fs)[: speech.shape[1]]
            snr = rng.uniform(-5.0, 0.0) if rng.random() < 0.2 else rng.uniform(0, 10)
            speech_rms = np.sqrt(np.mean(speech.sum(0) ** 2))
            noise = noise * speech_rms / np.sqrt(np.mean(noise**2)) * 10 ** (-snr / 20)
            pcm = _to_pcm(
                np.vstack([speech, noise[None]]),
                mixtures=[slice(None), slice(0, len(speech))],
            )
            utts = [
                f"{int(spk.name, 36)}-{chapters[spk.name]}-{k * n_spks + i:04d}"
                for i, spk in enumerate(speakers)
            ]
            mix_id = "_".join(utts)
            name = mix_id + ".wav"
            paths = {
                sub: os.path.join(base, folder, sub, name)
                for sub in ["mix_clean", "mix_both", "noise"]
                + [f"s{i + 1}" for i in range(n_spks)]
            }
            _write(paths["mix_clean"], pcm[:n_spks].sum(0), fs)
            _write(paths["mix_both"], pcm.sum(0), fs)
            _write(paths["noise"], pcm[n_spks], fs)
            for i in range(n_spks):
                _write(paths[f"s{i + 1}"], pcm[i], fs)
            for kind in ("clean", "both"):
                row = {"mixture_ID": mix_id, "mixture_path": paths[f"mix_{kind}"]}
                for i in range(n_spks):
                    row[f"source_{i + 1}_path"] = paths[f"s{i + 1}"]
                if kind == "both":
                    row["noise_path"] = paths["noise"]
                row["length"] = pcm.shape[1]
                meta[kind].append(row)
            info.append(_info_row(folder, name, spec, speakers))
        if with_metadata:
            meta_dir = os.path.join(base, "metadata")
            os.makedirs(meta_dir, exist_ok=True)
            for kind, rows in meta.items():
                fields = ["mixture_ID", "mixture_path"]
                fields += [f"source_{i + 1}_path" for i in range(n_spks)]
                fields += ["noise_path"] if kind == "both" else []
                fields += ["length"]
                path = os.path.join(meta_dir, f"mixture_{folder}_mix_{kind}.csv")
                with open(path, "w", newline="") as handle:
                    writer = csv.DictWriter(handle, fieldnames=fields)
                    writer.writeheader()
                    writer.writerows(rows)
    _write_info(os.path.join(base, "mixture_info.csv"), info)
    return root


def _move_metadata_paths(root, new_root):
    """Rewrite the absolute paths of a LibriMix set's metadata CSVs written
    under ``root`` so they point under ``new_root``."""
    old = os.path.abspath(root)
    for meta_dir in _glob_metadata_dirs(old):
        for file_name in sorted(os.listdir(meta_dir)):
            path = os.path.join(meta_dir, file_name)
            with open(path, newline="") as handle:
                rows = list(csv.reader(handle))
            for row in rows[1:]:
                for k, cell in enumerate(row):
                    if cell.startswith(old + os.sep):
                        row[k] = new_root + cell[len(old) :]
            with open(path, "w", newline="") as handle:
                csv.writer(handle).writerows(rows)


def _glob_metadata_dirs(root):
    found = []
    for rate in sorted(os.listdir(root)):
        for version in ("min", "max"):
            meta_dir = os.path.join(root, rate, version, "metadata")
            if os.path.isdir(meta_dir):
                found.append(meta_dir)
    return found


def default_wsj0mix(cache_dir=None):
    """The recipes' embedded default data set, generated once and cached.

    A synthetic two-speaker, 8 kHz, ``min`` set in the WSJ0-2mix layout with
    400 train (``tr``), 50 validation (``cv``) and 100 test (``tt``) mixtures
    of 2 s. Difficulty is spread on purpose so that hard-example mining has
    something to find (each factor drawn independently per mixture):

    - level difference between the speakers: uniform 0-5 dB (the WSJ0-2mix
      range) for 80 % of mixtures, uniform 5-10 dB for the other 20 %;
    - pitch: for 25 % of mixtures the second speaker is the one whose mean F0
      is nearest the first speaker's (typically < 1 semitone apart in a pool
      of 20), otherwise the speakers are > 2 semitones apart;
    - overlap: 70 % fully overlapped, 30 % with the second speaker active
      over only 35-80 % of the mixture.

    ``mixture_info.csv`` in ``wav8k/min`` lists these factors per mixture.

    The set lives in ``<cache>/wsj0mix-default`` where ``<cache>`` is
    ``cache_dir``, else ``$HARDMINE_CACHE``, else ``~/.cache/hardmine``. It is
    generated once by :func:`hardmine.synthetic.cache.cached_dataset`: in a
    temporary sibling folder renamed into place, with a marker file recording
    the generator version (a set from another version is rebuilt), so an
    interrupted run never leaves a half set that looks complete; a file lock
    makes concurrent callers (e.g. several DDP ranks) wait for one generation.

    Arguments
    ---------
    cache_dir : str, optional
        Folder holding the cached set.

    Returns
    -------
    str
        The dataset root, to pass as ``data_folder``.
    """
    spec = {
        "generator_version": GENERATOR_VERSION,
        "layout": "wsj0-2mix",
        "fs": 8000,
        "version": "min",
        "sizes": DEFAULT_SIZES,
        "seconds": 2.0,
        "seed": 1234,
    }

    def generate(folder):
        make_wsj0mix(
            folder,
            n_spks=2,
            fs=8000,
            version="min",
            sizes=DEFAULT_SIZES,
            seconds=2.0,
            seed=spec["seed"],
        )

    sizes = ", ".join(f"{k}: {v}" for k, v in DEFAULT_SIZES.items())
    return cached_dataset(
        "wsj0mix-default",
        generate,
        spec,
        cache_dir=cache_dir,
        marker=_MARKER,
        description=f"default synthetic WSJ0-2mix-style set ({sizes})",
    )


def default_librimix(cache_dir=None):
    """The LibriMix recipe's embedded default data set, generated once and cached.

    A synthetic Libri2Mix-layout set written by :func:`make_librimix`: two
    speakers, 8 kHz, ``min``, 400 ``train-360``, 50 ``dev`` and 100 ``test``
    mixtures of 2 s, each with its noise file, its clean (``mix_clean``) and
    noisy (``mix_both``) mixture, and the metadata CSVs. The speech has the
    same spread of difficulty as :func:`default_wsj0mix` (level difference,
    close pitch, partial overlap; listed per mixture in
    ``wav8k/min/mixture_info.csv``); the noise lies 0-10 dB below the speech,
    for 20 % of mixtures 0-5 dB above it.

    The set lives in ``<cache>/librimix-default`` (``<cache>`` as for
    :func:`default_wsj0mix`) and is generated the same way, by
    :func:`hardmine.synthetic.cache.cached_dataset`.

    Arguments
    ---------
    cache_dir : str, optional
        Folder holding the cached set.

    Returns
    -------
    str
        The dataset root, to pass as ``data_folder``.
    """
    name = "librimix-default"
    spec = {
        "generator_version": GENERATOR_VERSION,
        "layout": "libri2mix",
        "fs": 8000,
        "version": "min",
        "sizes": DEFAULT_LIBRI_SIZES,
        "seconds": DEFAULT_LIBRI_SECONDS,
        "seed": 1234,
        "train_set": "train-360",
    }

    def generate(folder):
        make_librimix(
            folder,
            n_spks=2,
            fs=8000,
            version="min",
            sizes=DEFAULT_LIBRI_SIZES,
            seconds=DEFAULT_LIBRI_SECONDS,
            seed=spec["seed"],
            with_metadata=True,
            train_set="train-360",
        )
        # The set is written in a temporary folder and then renamed: the
        # metadata's absolute paths must name the final folder.
        final = os.path.join(os.path.dirname(os.path.abspath(folder)), name)
        _move_metadata_paths(folder, final)

    sizes = ", ".join(f"{k}: {v}" for k, v in DEFAULT_LIBRI_SIZES.items())
    return cached_dataset(
        name,
        generate,
        spec,
        cache_dir=cache_dir,
        marker=_MARKER,
        description=f"default synthetic Libri2Mix-style set with noise ({sizes})",
    )
