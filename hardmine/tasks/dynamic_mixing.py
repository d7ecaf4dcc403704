"""Dynamic mixing: new training mixtures every epoch, made from the sources.

A static separation set shows the model the same mixtures in every epoch.
With dynamic mixing (``dynamic_mixing: True`` in the separation recipes) the
training set is a :class:`DynamicMixingDataset`: every epoch it makes
``dm_mixtures_per_epoch`` new mixtures out of a table of single-speaker
*sources*, so the model rarely sees the same mixture twice.

**Sources** (:class:`SourceTable`). By default they are the source files of
the prepared training list (the ``s1_wav`` .. ``sN_wav`` columns), one per
distinct utterance, the speaker read from the file name: WSJ0-mix names
``<utt>_<gain>_<utt>_<gain>[...]`` (speaker = the utterance id's first three
characters) and LibriMix names ``<spk>-<chapter>-<utt>_<spk>-...``. With
``dm_source_folder`` they are every ``.wav`` / ``.flac`` file under a folder
of per-speaker sub-folders (speaker = first-level sub-folder), the layout of
wsj0 ``si_tr_s`` converted to wav, or of LibriSpeech ``train-clean-360``;
files at another sampling rate are resampled.

**A mixture** of ``num_spks`` sources is made as follows:

1. ``num_spks`` distinct speakers are chosen, each draw in proportion to
   the number of sources of the speakers not chosen yet (what SpeechBrain's
   dynamic mixing does; :func:`draw_speakers`), and one source of each
   (uniformly, or by the source sampler of :mod:`hardmine.source_sampler`);
2. with ``speed_perturb``, each source is resampled at a speed drawn from
   ``speed_perturb_speeds`` (percent; SpeechBrain's
   :class:`~speechbrain.augment.time_domain.SpeedPerturb` resamplers, so 90
   gives 10/9 of the samples);
3. each source is scaled to a level drawn uniformly from
   [``dm_gain_low``, ``dm_gain_high``] dB (mean absolute amplitude re full
   scale, SpeechBrain's ``rescale``), measured over the whole source;
4. the corpus' length rule (``version``): ``min`` cuts every source to
   ``L = min(shortest source, training_signal_len)`` samples, each at its own
   random offset; ``max`` pads every source at the end to the longest, then
   cuts one random window of ``training_signal_len`` common to all;
5. with noise (LibriMix, ``mixture: both``, the training list's
   ``noise_wav`` column), a noise file of the training split, a random
   window of it (repeated when shorter), at a level from
   [``dm_noise_gain_low``, ``dm_noise_gain_high``] dB;
6. the mixture is the sum; when it or a source peaks above 1, all signals
   are scaled so that the largest peak is 0.9.

**Determinism.** Every random choice of a mixture comes from a generator
seeded with ``(seed, epoch, number)``: the mixture number ``number`` of the
epoch (its slot, or the draw number the source sampler gives it). A resumed
epoch therefore replays its mixtures exactly and DataLoader workers share no
random state. The sources of a mixture are in its id
(:func:`mixture_id`), so a sampler can map the loss of a mixture back to its
sources.

**Items** carry the keys of the static training set: ``id``, ``mix_sig``,
``s1_sig`` .. ``sN_sig`` and ``audio_problem`` ("" when fine, else which
file failed and why; the signals are then silent placeholders and the
Brain leaves the mixture out of the loss).

The dataset is indexed either by a slot number (an int: the plain loader,
sources drawn uniformly within the chosen speakers) or by a *plan*
``(epoch, number, source_1, ..., source_N)`` from
:class:`hardmine.source_sampler.SourceSampler`.

Example
-------
>>> import os, tempfile
>>> from hardmine.synthetic.layouts import make_wsj0mix
>>> tmp = tempfile.TemporaryDirectory()
>>> root = make_wsj0mix(tmp.name, sizes={"tr": 4, "cv": 1, "tt": 1}, seconds=0.25)
>>> train = os.path.join(root, "wav8k", "min", "tr")
>>> rows = [
...     {f"s{i}_wav": os.path.join(train, f"s{i}", name) for i in (1, 2)}
...     for name in sorted(os.listdir(os.path.join(train, "mix")))
... ]
>>> table = SourceTable.from_rows(rows, num_spks=2)
>>> len(table), table.speaker_names[:2]
(8, ['001', '002'])
>>> dataset = DynamicMixingDataset(table, num_spks=2, sample_rate=8000, seed=0)
>>> dataset.set_epoch(1)
>>> item = dataset[0]
>>> sorted(item), item["audio_problem"]
(['audio_problem', 'id', 'mix_sig', 's1_sig', 's2_sig'], '')
>>> item["mix_sig"].shape, parse_mixture_id(item["id"])[:2]
(torch.Size([2000]), (1, 0))
>>> torch.equal(dataset[0]["mix_sig"], item["mix_sig"])  # a function of (seed, epoch, slot)
True
>>> dataset.set_epoch(2)
>>> torch.equal(dataset[0]["mix_sig"], item["mix_sig"])
False
>>> tmp.cleanup()
"""

import math
import os
import re

import numpy as np
import torch

from hardmine.validation import ConfigError, check_choice, check_int, check_number

__all__ = [
    "DM_DEFAULTS",
    "check_dm_fields",
    "SourceTable",
    "DynamicMixingDataset",
    "draw_speakers",
    "mixture_id",
    "parse_mixture_id",
    "build_dm_train_set",
]

#: The YAML fields of dynamic mixing and speed perturbation with their
#: defaults (a recipe file without a field gets the default).
DM_DEFAULTS = {
    "dynamic_mixing": False,
    "dm_source_folder": None,
    "dm_mixtures_per_epoch": None,
    "dm_gain_low": -30.0,
    "dm_gain_high": -25.0,
    "dm_noise_gain_low": -38.0,
    "dm_noise_gain_high": -30.0,
    "speed_perturb": False,
    "speed_perturb_speeds": [95, 100, 105],
}

#: Audio files a source folder may hold.
AUDIO_EXTENSIONS = (".wav", ".flac")
#: Largest peak after the anti-clipping rescale.
PEAK = 0.9
#: Words that separate the random streams of a mixture from those of a slot.
_SLOT_STREAM, _MIX_STREAM = 11, 12
_ID = re.compile(r"^dm-e(\d+)-n(\d+)((?:-s\d+)+)$")
_WSJ_UTT = re.compile(r"^[0-9a-z]{8}$", re.IGNORECASE)
_LIBRI_UTT = re.compile(r"^([^-_]+)-[^-_]+-[^-_]+$")


def _check_bool(field, value):
    if not isinstance(value, bool):
        raise ConfigError(field, f"must be True or False, got {value!r}")
    return value


def check_dm_fields(hparams):
    """Check the dynamic-mixing fields of a recipe, naming the bad one.

    Arguments
    ---------
    hparams : dict
        The loaded hyperparameters; missing fields take :data:`DM_DEFAULTS`.

    Returns
    -------
    dict
        The checked fields.

    Example
    -------
    >>> check_dm_fields({"dynamic_mixing": True})["dm_gain_low"]
    -30.0
    >>> check_dm_fields({"dynamic_mixing": True, "dm_gain_low": -10, "dm_gain_high": -20})
    Traceback (most recent call last):
    ...
    hardmine.validation.ConfigError: dm_gain_high: must be >= dm_gain_low (-10.0), got -20.0
    >>> check_dm_fields({"speed_perturb": True})
    Traceback (most recent call last):
    ...
    hardmine.validation.ConfigError: speed_perturb: perturbs the sources before they are mixed, so it needs dynamic_mixing: True
    """
    fields = {key: hparams.get(key, default) for key, default in DM_DEFAULTS.items()}
    _check_bool("dynamic_mixing", fields["dynamic_mixing"])
    _check_bool("speed_perturb", fields["speed_perturb"])
    folder = fields["dm_source_folder"]
    if folder is not None and (not isinstance(folder, str) or not folder):
        raise ConfigError("dm_source_folder", f"must be a folder path, got {folder!r}")
    if fields["dm_mixtures_per_epoch"] is not None:
        check_int("dm_mixtures_per_epoch", fields["dm_mixtures_per_epoch"], minimum=1)
    for kind in ("dm_gain", "dm_noise_gain"):
        low = check_number(f"{kind}_low", fields[f"{kind}_low"], maximum=60.0)
        high = check_number(f"{kind}_high", fields[f"{kind}_high"], maximum=60.0)
        if not math.isfinite(low):
            raise ConfigError(f"{kind}_low", f"must be finite, got {low}")
        if high < low:
            raise ConfigError(
                f"{kind}_high", f"must be >= {kind}_low ({low}), got {high}"
            )
        fields[f"{kind}_low"], fields[f"{kind}_high"] = low, high
    speeds = fields["speed_perturb_speeds"]
    if not isinstance(speeds, (list, tuple)) or not speeds:
        raise ConfigError(
            "speed_perturb_speeds",
            f"must be a non-empty list of speeds in percent, got {speeds!r}",
        )
    fields["speed_perturb_speeds"] = [
        check_number("speed_perturb_speeds", s, minimum=10.0, maximum=1000.0)
        for s in speeds
    ]
    if fields["speed_perturb"] and not fields["dynamic_mixing"]:
        raise ConfigError(
            "speed_perturb",
            "perturbs the sources before they are mixed, so it needs "
            "dynamic_mixing: True",
        )
    if folder is not None and not fields["dynamic_mixing"]:
        raise ConfigError("dm_source_folder", "is used only with dynamic_mixing: True")
    return fields


# ------------------------------------------------------------------ sources
def _speakers_from_name(name, num_spks):
    """``[(utterance id, speaker)]`` of a WSJ0-mix or LibriMix file name, or None."""
    parts = os.path.splitext(os.path.basename(name))[0].split("_")
    if len(parts) == 2 * num_spks:
        utts, gains = parts[0::2], parts[1::2]
        try:
            [float(g) for g in gains]
        except ValueError:
            utts = None
        if utts and all(_WSJ_UTT.match(u) for u in utts):
            return [(u, u[:3]) for u in utts]
    if len(parts) == num_spks:
        matches = [_LIBRI_UTT.match(u) for u in parts]
        if all(matches):
            return [(u, m.group(1)) for u, m in zip(parts, matches, strict=True)]
    return None


class SourceTable:
    """The sources dynamic mixing draws from, grouped by speaker.

    Arguments
    ---------
    paths : list of str
        One audio file per source.
    ids : list of str
        A unique name per source (the utterance id, or the path under the
        source folder).
    speakers : list of str
        The speaker of every source.
    resample : bool
        Whether files at another sampling rate are resampled (a source
        folder) or flagged as a problem (the prepared lists).

    Example
    -------
    >>> table = SourceTable(["a.wav", "b.wav", "c.wav"], ["a", "b", "c"], ["x", "y", "x"])
    >>> table.speaker_names, table.speaker_of.tolist(), table.speaker_sizes.tolist()
    (['x', 'y'], [0, 1, 0], [2, 1])
    >>> table.members(0).tolist()
    [0, 2]
    """

    def __init__(self, paths, ids, speakers, resample=False):
        self.paths = [str(p) for p in paths]
        self.ids = [str(i) for i in ids]
        if not (len(self.paths) == len(self.ids) == len(speakers)):
            raise ValueError("paths, ids and speakers differ in length")
        if len(set(self.ids)) != len(self.ids):
            raise ValueError("source ids are not unique")
        self.speaker_names = sorted({str(s) for s in speakers})
        lookup = {name: k for k, name in enumerate(self.speaker_names)}
        self.speaker_of = np.array([lookup[str(s)] for s in speakers], dtype=np.int64)
        self.speaker_sizes = np.bincount(
            self.speaker_of, minlength=len(self.speaker_names)
        )
        self._order = np.argsort(self.speaker_of, kind="stable")
        self._start = np.concatenate([[0], np.cumsum(self.speaker_sizes)[:-1]])
        self.resample = bool(resample)

    def __len__(self):
        return len(self.paths)

    def members(self, speaker):
        """Indices of the sources of speaker number ``speaker``."""
        start = self._start[speaker]
        return self._order[start : start + self.speaker_sizes[speaker]]

    def member(self, speaker, position):
        """Source number ``position`` of speaker number ``speaker`` (vectorised)."""
        return self._order[self._start[speaker] + position]

    @classmethod
    def from_rows(cls, rows, num_spks):
        """Sources of a prepared training list (rows with ``s<i>_wav`` paths).

        One source per distinct utterance id (the first file seen), its
        speaker read from the file name.
        """
        paths, ids, speakers, seen = [], [], [], set()
        for row in rows:
            name = row["s1_wav"]
            parsed = _speakers_from_name(name, num_spks)
            if parsed is None:
                raise ConfigError(
                    "dynamic_mixing",
                    f"cannot read {num_spks} speakers from the training file name "
                    f"{os.path.basename(name)!r} (expected WSJ0-mix "
                    "<utt>_<gain>_<utt>_<gain> or LibriMix <spk>-<chapter>-<utt>_... "
                    "names); give dm_source_folder, a folder of per-speaker "
                    "sub-folders",
                )
            for i, (utt, speaker) in enumerate(parsed, start=1):
                if utt in seen:
                    continue
                seen.add(utt)
                ids.append(utt)
                paths.append(row[f"s{i}_wav"])
                speakers.append(speaker)
        return cls(paths, ids, speakers)

    @classmethod
    def from_folder(cls, folder):
        """Every audio file under ``folder/<speaker>/`` (any depth below it)."""
        if not os.path.isdir(folder):
            raise ConfigError("dm_source_folder", f"{folder} is not a folder")
        paths, ids, speakers = [], [], []
        for speaker in sorted(os.listdir(folder)):
            top = os.path.join(folder, speaker)
            if not os.path.isdir(top):
                continue
            for here, dirs, files in os.walk(top):
                dirs.sort()
                for name in sorted(files):
                    if name.lower().endswith(AUDIO_EXTENSIONS):
                        path = os.path.join(here, name)
                        rel = os.path.relpath(path, folder)
                        ids.append(os.path.splitext(rel)[0].replace(os.sep, "/"))
                        paths.append(path)
                        speakers.append(speaker)
        if not paths:
            raise ConfigError(
                "dm_source_folder",
                f"no {'/'.join(AUDIO_EXTENSIONS)} files in per-speaker "
                f"sub-folders of {folder}",
            )
        return cls(paths, ids, speakers, resample=True)


# -------------------------------------------------------------- randomness
def _generator(*words):
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(list(words))))


def draw_speakers(rng, sizes, count, num_spks):
    """``count`` rows of ``num_spks`` distinct speakers.

    Each row is a succession of draws without replacement, each speaker
    drawn in proportion to its number of sources among those not drawn yet
    (``sizes``); drawn at once as the ``num_spks`` largest keys
    ``log(u_k) / N_k`` (Efraimidis and Spirakis), in decreasing order.

    Example
    -------
    >>> rows = draw_speakers(np.random.default_rng(0), np.array([5, 1, 1, 3]), 6, 2)
    >>> rows.shape, bool((rows[:, 0] != rows[:, 1]).all())
    ((6, 2), True)
    """
    sizes = np.asarray(sizes, dtype=np.float64)
    if num_spks > np.count_nonzero(sizes):
        raise ConfigError(
            "num_spks",
            f"dynamic mixing needs {num_spks} distinct speakers, the sources have "
            f"{np.count_nonzero(sizes)}",
        )
    with np.errstate(divide="ignore"):
        keys = np.log(rng.random((count, sizes.shape[0]))) / sizes
    top = np.argpartition(-keys, num_spks - 1, axis=1)[:, :num_spks]
    order = np.argsort(-np.take_along_axis(keys, top, axis=1), axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1)


def mixture_id(epoch, number, sources):
    """The id of mixture ``number`` of ``epoch`` made of ``sources``.

    Example
    -------
    >>> mixture_id(3, 17, [4, 250])
    'dm-e3-n17-s4-s250'
    >>> parse_mixture_id("dm-e3-n17-s4-s250")
    (3, 17, [4, 250])
    """
    return f"dm-e{int(epoch)}-n{int(number)}-" + "-".join(f"s{int(s)}" for s in sources)


def parse_mixture_id(name):
    """``(epoch, number, sources)`` of a :func:`mixture_id` (ValueError if not one)."""
    match = _ID.match(str(name))
    if match is None:
        raise ValueError(f"{name!r} is not a dynamic-mixing mixture id")
    sources = [int(s) for s in match.group(3).split("-s")[1:]]
    return int(match.group(1)), int(match.group(2)), sources


# ------------------------------------------------------------------ dataset
class DynamicMixingDataset(torch.utils.data.Dataset):
    """Training mixtures made on the fly from a :class:`SourceTable`.

    See the module for the recipe of a mixture. ``len()`` is the number of
    mixtures per epoch; :meth:`set_epoch` must be called before each epoch
    is loaded (the Brain does it when the training stage starts).

    Arguments
    ---------
    sources : SourceTable
        The sources.
    num_spks : int
        Speakers per mixture.
    sample_rate : int
        Sampling rate of the mixtures.
    mixtures_per_epoch : int, optional
        Mixtures per epoch (default: one per source, at least one).
    version : str
        ``"min"`` or ``"max"``: the length rule.
    training_signal_len : int, optional
        Longest mixture in samples (None: no limit).
    gain_low, gain_high : float
        Range of the source levels in dB.
    noise_paths : list of str, optional
        Noise files; when given every mixture gets one.
    noise_gain_low, noise_gain_high : float
        Range of the noise level in dB.
    speed_perturb : bool
        Whether each source is speed-perturbed.
    speeds : list of float
        The speeds in percent, drawn uniformly.
    seed : int
        Seed of every random choice.
    """

    #: Marks the dataset for the samplers and the Brain.
    dynamic_mixing = True

    def __init__(
        self,
        sources,
        num_spks,
        sample_rate,
        mixtures_per_epoch=None,
        *,
        version="min",
        training_signal_len=None,
        gain_low=-30.0,
        gain_high=-25.0,
        noise_paths=None,
        noise_gain_low=-38.0,
        noise_gain_high=-30.0,
        speed_perturb=False,
        speeds=(95, 100, 105),
        seed=1234,
    ):
        self.sources = sources
        self.num_spks = check_int("num_spks", num_spks, minimum=1)
        self.sample_rate = check_int("sample_rate", sample_rate, minimum=1)
        if mixtures_per_epoch is None:
            mixtures_per_epoch = max(1, len(sources) // self.num_spks)
        self.mixtures_per_epoch = check_int(
            "dm_mixtures_per_epoch", mixtures_per_epoch, minimum=1
        )
        self.version = check_choice("version", version, ("min", "max"))
        if training_signal_len is not None:
            training_signal_len = check_int(
                "training_signal_len", training_signal_len, minimum=1
            )
        self.training_signal_len = training_signal_len
        self.gain_range = (float(gain_low), float(gain_high))
        self.noise_paths = list(noise_paths) if noise_paths else []
        self.noise_gain_range = (float(noise_gain_low), float(noise_gain_high))
        self.speed_perturb = bool(speed_perturb)
        self.speeds = [float(s) for s in speeds]
        self.seed = check_int("seed", seed, minimum=0)
        self.epoch = 0
        # Raises now when there are too few speakers.
        draw_speakers(_generator(0), sources.speaker_sizes, 1, self.num_spks)
        self._perturber = None  # built lazily (in each worker)
        self._resamplers = {}

    def __len__(self):
        return self.mixtures_per_epoch

    def set_epoch(self, epoch):
        """The epoch whose mixtures slot indices give."""
        self.epoch = check_int("epoch", epoch, minimum=0)

    # ------------------------------------------------------------- plans
    def plan(self, slot, epoch=None):
        """The sources of slot ``slot``: distinct speakers, uniform sources.

        Returns ``(epoch, slot, source_1, ..., source_N)``.
        """
        epoch = self.epoch if epoch is None else epoch
        rng = _generator(self.seed, _SLOT_STREAM, epoch, slot)
        table = self.sources
        speakers = draw_speakers(rng, table.speaker_sizes, 1, self.num_spks)[0]
        positions = np.floor(
            rng.random(self.num_spks) * table.speaker_sizes[speakers]
        ).astype(np.int64)
        return (epoch, slot, *table.member(speakers, positions).tolist())

    def __getitem__(self, index):
        if isinstance(index, (int, np.integer)):
            if not 0 <= index < len(self):
                raise IndexError(f"slot {index} outside 0..{len(self) - 1}")
            index = self.plan(int(index))
        epoch, number, *sources = (int(v) for v in index)
        if len(sources) != self.num_spks:
            raise ValueError(f"a plan names {self.num_spks} sources, got {index!r}")
        return self.mixture(epoch, number, sources)

    # ------------------------------------------------------------- audio
    def _speed_resampler(self, choice):
        if self._perturber is None:
            from speechbrain.augment.time_domain import SpeedPerturb

            self._perturber = SpeedPerturb(self.sample_rate, speeds=self.speeds)
        return self._perturber.resamplers[choice]

    def _rate_resampler(self, rate):
        if rate not in self._resamplers:
            from speechbrain.augment.time_domain import Resample

            self._resamplers[rate] = Resample(orig_freq=rate, new_freq=self.sample_rate)
        return self._resamplers[rate]

    def _load(self, path):
        """``(signal, problem)`` of a file at the mixtures' sampling rate."""
        from hardmine.tasks.audio import load_checked

        if not self.sources.resample:
            signal, problem = load_checked(path, expected_sr=self.sample_rate)
            return signal, problem
        import soundfile

        try:
            rate = soundfile.info(path).samplerate
        except (RuntimeError, OSError, ValueError, TypeError):
            return None, "unreadable"
        signal, problem = load_checked(path)
        if problem is None and rate != self.sample_rate:
            with torch.no_grad():
                signal = self._rate_resampler(rate)(signal.unsqueeze(0)).squeeze(0)
        return signal, problem

    @staticmethod
    def _level(signal, level_db):
        from speechbrain.processing.signal_processing import rescale

        return rescale(signal, None, level_db, amp_type="avg", scale="dB")

    def mixture(self, epoch, number, sources):
        """The item of mixture ``number`` of ``epoch`` made of ``sources``."""
        rng = _generator(self.seed, _MIX_STREAM, epoch, number)
        n = self.num_spks
        # Every random number is drawn, in a fixed order, whatever happens.
        levels = rng.uniform(*self.gain_range, size=n)
        speed_choice = rng.integers(len(self.speeds), size=n)
        offsets = rng.random(n)
        noise_pick, noise_offset = rng.random(), rng.random()
        noise_level = rng.uniform(*self.noise_gain_range)
        item = {"id": mixture_id(epoch, number, sources)}

        signals, problems = [], []
        for k, src in enumerate(sources):
            signal, problem = self._load(self.sources.paths[src])
            if problem:
                problems.append(f"{self.sources.paths[src]}: {problem}")
                continue
            if signal.dim() != 1 or signal.shape[0] == 0:
                problems.append(f"{self.sources.paths[src]}: not one channel")
                continue
            if self.speed_perturb:
                with torch.no_grad():
                    signal = self._speed_resampler(int(speed_choice[k]))(
                        signal.unsqueeze(0)
                    ).squeeze(0)
            signals.append(self._level(signal, float(levels[k])))
        if not problems:
            signals = self._fit_lengths(signals, offsets)
            noise = None
            if self.noise_paths:
                noise, problem = self._noise(
                    noise_pick, noise_offset, noise_level, signals[0].shape[0]
                )
                if problem:
                    problems.append(problem)
        if problems:
            length = self.training_signal_len or self.sample_rate
            signals = [torch.zeros(length) for _ in sources]
            mix = torch.zeros(length)
        else:
            mix = torch.stack(signals).sum(0)
            if noise is not None:
                mix = mix + noise
            peak = max(float(mix.abs().max()), *(float(s.abs().max()) for s in signals))
            if peak > 1.0:
                scale = PEAK / peak
                mix = mix * scale
                signals = [s * scale for s in signals]
        item["mix_sig"] = mix.float()
        for k, signal in enumerate(signals, start=1):
            item[f"s{k}_sig"] = signal.float()
        item["audio_problem"] = "; ".join(problems)
        return item

    def _fit_lengths(self, signals, offsets):
        lengths = [s.shape[0] for s in signals]
        limit = self.training_signal_len
        if self.version == "min":
            target = min(lengths) if limit is None else min(min(lengths), limit)
            out = []
            for signal, u in zip(signals, offsets, strict=True):
                start = int(u * (signal.shape[0] - target + 1))
                out.append(signal[start : start + target])
            return out
        longest = max(lengths)
        padded = [
            torch.nn.functional.pad(s, (0, longest - s.shape[0])) for s in signals
        ]
        if limit is not None and longest > limit:
            start = int(offsets[0] * (longest - limit + 1))
            padded = [s[start : start + limit] for s in padded]
        return padded

    def _noise(self, pick, offset, level, length):
        path = self.noise_paths[
            min(int(pick * len(self.noise_paths)), len(self.noise_paths) - 1)
        ]
        noise, problem = self._load(path)
        if problem:
            return None, f"{path}: {problem}"
        if noise.shape[0] < length:
            noise = noise.repeat(math.ceil(length / noise.shape[0]))[:length]
        else:
            start = int(offset * (noise.shape[0] - length + 1))
            noise = noise[start : start + length]
        return self._level(noise, float(level)), ""


# ------------------------------------------------------------- the recipes
def build_dm_train_set(hparams, train_csv):
    """The dynamic-mixing training set of a separation recipe.

    Arguments
    ---------
    hparams : dict
        The loaded hyperparameters (the fields of :data:`DM_DEFAULTS`,
        ``num_spks``, ``sample_rate``, ``version``, ``training_signal_len``,
        ``seed`` and, for LibriMix, ``mixture``).
    train_csv : str
        The prepared training list.

    Returns
    -------
    DynamicMixingDataset
    """
    import csv

    fields = check_dm_fields(hparams)
    num_spks = hparams["num_spks"]
    with open(train_csv, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise ConfigError("data_folder", f"the train list {train_csv} is empty")
    missing = [
        f"s{i}_wav" for i in range(1, num_spks + 1) if f"s{i}_wav" not in rows[0]
    ]
    if missing:
        raise ConfigError(
            "num_spks",
            f"{train_csv} has no column {', '.join(missing)} (num_spks={num_spks})",
        )
    if fields["dm_source_folder"] is not None:
        table = SourceTable.from_folder(fields["dm_source_folder"])
    else:
        table = SourceTable.from_rows(rows, num_spks)
    noise_paths = None
    if hparams.get("mixture") == "both" and "noise_wav" in rows[0]:
        noise_paths = sorted({row["noise_wav"] for row in rows if row["noise_wav"]})
    count = fields["dm_mixtures_per_epoch"]
    return DynamicMixingDataset(
        table,
        num_spks=num_spks,
        sample_rate=hparams["sample_rate"],
        mixtures_per_epoch=len(rows) if count is None else count,
        version=hparams.get("version", "min"),
        training_signal_len=hparams.get("training_signal_len"),
        gain_low=fields["dm_gain_low"],
        gain_high=fields["dm_gain_high"],
        noise_paths=noise_paths,
        noise_gain_low=fields["dm_noise_gain_low"],
        noise_gain_high=fields["dm_noise_gain_high"],
        speed_perturb=fields["speed_perturb"],
        speeds=fields["speed_perturb_speeds"],
        seed=int(hparams.get("seed", 1234)),
    )
