"""Keyword spotting on Speech Commands: data pipeline and the training Brain.

The recipe in ``recipes/GoogleSpeechCommands/kws`` is a thin script over this
module:

* :func:`dataio_prep` turns the prepared CSV files (ID, duration, wav, start,
  stop, command, pool) into SpeechBrain datasets whose items carry ``sig``
  (a fixed-length clip), ``command`` (the label string), ``command_encoded``,
  ``pool`` and ``audio_problem``, and builds the label encoder;
* :func:`build_augmenter` chains SpeechBrain's waveform augmentations (time
  shift, speed perturbation, reverberation, background noise) for training;
* :class:`KWSBrain` classifies Fbank features with a compact x-vector network,
  returns one NLL per example (so the mining policies of
  :class:`~hardmine.brain.HardMiningBrain` apply), and scores the validation
  and test sets with :mod:`hardmine.tasks.kws_metrics`.

Example
-------
>>> ordered_labels(["_unknown_", "no", "_silence_", "yes", "no"], ["yes", "no"])
['yes', 'no', '_silence_', '_unknown_']
"""

import csv
import logging
import os

import speechbrain as sb
import torch
import torch.nn.functional as F
from speechbrain.augment.augmenter import Augmenter
from speechbrain.augment.freq_domain import RandomShift
from speechbrain.augment.time_domain import AddNoise, AddReverb, SpeedPerturb
from speechbrain.dataio.dataset import DynamicItemDataset
from speechbrain.dataio.encoder import CategoricalEncoder

from hardmine.brain import AUDIO_PROBLEM_FIELD, HardMiningBrain
from hardmine.tasks.kws_metrics import KWSResults
from hardmine.validation import ConfigError, check_choice, check_int, check_number

__all__ = [
    "KWSBrain",
    "build_augmenter",
    "check_augment_files",
    "dataio_prep",
    "ordered_labels",
    "keywords_of",
    "log_posteriors",
    "read_clip",
    "set_norm",
    "false_alarm_scores",
]

logger = logging.getLogger(__name__)

KEYWORD_ORDER = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")


def ordered_labels(labels, keywords):
    """Distinct labels, keywords first (in the given order), the rest sorted."""
    present = set(labels)
    head = [k for k in keywords if k in present]
    return head + sorted(present - set(head))


def keywords_of(csv_path, target_pool="targets"):
    """Labels of the rows of ``csv_path`` whose pool is ``target_pool``.

    Example
    -------
    >>> import tempfile, os
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = os.path.join(tmp, "train.csv")
    ...     with open(path, "w") as f:
    ...         _ = f.write("ID,command,pool\\na,no,targets\\nb,_unknown_,negatives\\nc,yes,targets\\n")
    ...     keywords_of(path)
    ['yes', 'no']
    """
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    for column in ("command", "pool"):
        if rows and column not in rows[0]:
            raise ConfigError("train_csv", f"{csv_path} has no {column!r} column")
    found = {r["command"] for r in rows if r["pool"] == target_pool}
    return ordered_labels(found, KEYWORD_ORDER) if found else []


def read_clip(path, start, stop, sample_rate, clip_samples):
    """Read ``path[start:stop]`` and zero-pad or cut it to ``clip_samples``.

    Returns ``(signal, problem)`` with ``problem`` "" when the audio is fine
    (see :func:`hardmine.tasks.audio.load_checked`); a broken file gives a silent
    clip of the right length, so the batch still collates.
    """
    from hardmine.tasks.audio import load_checked

    signal, problem = load_checked(path, expected_sr=sample_rate)
    out = torch.zeros(clip_samples)
    if problem:
        return out, str(problem)
    signal = torch.as_tensor(signal, dtype=torch.float32).reshape(-1)
    start, stop = int(start), int(stop)
    if stop <= 0 or stop > signal.numel():
        stop = signal.numel()
    if not 0 <= start < stop:
        return out, f"crop {start}:{stop} outside the {signal.numel()} samples"
    piece = signal[start:stop][:clip_samples]
    out[: piece.numel()] = piece
    return out, ""


def _check_bool(field, value):
    if not isinstance(value, bool):
        raise ConfigError(field, f"must be True or False, got {value!r}")
    return value


def _has_wav(folder):
    for _, _, files in os.walk(folder):
        if any(name.lower().endswith(".wav") for name in files):
            return True
    return False


def build_augmenter(
    augment=True,
    augment_prob=1.0,
    speed_perturb=True,
    speeds=(90, 100, 110),
    rir_folder=None,
    rir_csv=None,
    augment_noise=True,
    noise_csv=None,
    noise_snr_low=0.0,
    noise_snr_high=15.0,
    time_shift_ms=100.0,
    sample_rate=16000,
    clip_seconds=1.0,
):
    """SpeechBrain's waveform augmentations for keyword-spotting training.

    The enabled augmentations run one after the other on every training
    batch (an :class:`~speechbrain.augment.augmenter.Augmenter` with
    ``parallel_augment=False`` and ``concat_original=False``), so the batch
    keeps its size and order: labels and example ids stay aligned. In order:

    1. speed perturbation (:class:`~speechbrain.augment.time_domain.SpeedPerturb`):
       resampling to one of ``speeds`` percent, one per batch;
    2. reverberation (:class:`~speechbrain.augment.time_domain.AddReverb`),
       only with a ``rir_folder``: convolution with an impulse response of
       ``rir_csv``;
    3. background noise (:class:`~speechbrain.augment.time_domain.AddNoise`):
       a piece of ``noise_csv`` at an SNR drawn per example, uniformly in
       ``[noise_snr_low, noise_snr_high]`` dB;
    4. time shift (:class:`~speechbrain.augment.freq_domain.RandomShift`): a
       circular shift of up to ``time_shift_ms`` either way, one per batch
       (a shift to the left also shortens the relative lengths by as much).

    Every argument is the recipe handle of the same name and is checked here,
    when the YAML file is loaded.

    Arguments
    ---------
    augment : bool
        Master switch; False returns None (no augmentation).
    augment_prob : float
        Probability that a training batch is augmented at all.
    speed_perturb : bool
        Whether to change the speed.
    speeds : list of int
        Speeds in percent of the original (100 keeps a batch unchanged).
    rir_folder : str or None
        Folder of room impulse responses (``.wav``, searched recursively);
        None: no reverberation.
    rir_csv : str
        The impulse-response list the data preparation writes for
        ``rir_folder``.
    augment_noise : bool
        Whether to add background noise.
    noise_csv : str
        The noise list the data preparation writes (pieces of the training
        region of the background-noise files).
    noise_snr_low, noise_snr_high : float
        SNR range in dB.
    time_shift_ms : float
        Largest shift in milliseconds (0: no shift); below the clip length.
    sample_rate : int
        Sample rate of clips, noise and impulse responses.
    clip_seconds : float
        Clip length (bounds ``time_shift_ms``).

    Returns
    -------
    Augmenter or None
        None when ``augment`` is False or nothing is enabled.

    Example
    -------
    >>> import torch
    >>> aug = build_augmenter(augment_noise=False, speeds=[90], time_shift_ms=0)
    >>> wavs, lens = aug(torch.randn(3, 16000), torch.ones(3))
    >>> tuple(wavs.shape)
    (3, 17778)
    >>> build_augmenter(augment=False) is None
    True
    >>> build_augmenter(noise_snr_low=20, noise_snr_high=10)
    Traceback (most recent call last):
    ...
    hardmine.validation.ConfigError: noise_snr_low: 20.0 is above noise_snr_high (10.0)
    """
    if not _check_bool("augment", augment):
        return None
    augment_prob = check_number("augment_prob", augment_prob, minimum=0.0, maximum=1.0)
    sample_rate = check_int("sample_rate", sample_rate, minimum=1)
    clip_ms = 1000.0 * check_number("clip_seconds", clip_seconds, minimum=0.0)
    time_shift_ms = check_number("time_shift_ms", time_shift_ms, minimum=0.0)
    if time_shift_ms >= clip_ms:
        raise ConfigError(
            "time_shift_ms", f"{time_shift_ms} ms is not below the {clip_ms} ms clip"
        )
    stages = []
    if _check_bool("speed_perturb", speed_perturb):
        if isinstance(speeds, (int, float, str)) or not speeds:
            raise ConfigError(
                "speeds", f"must be a list of percentages, got {speeds!r}"
            )
        for speed in speeds:
            check_int("speeds", speed, minimum=1)
        stages.append(
            SpeedPerturb(orig_freq=sample_rate, speeds=[int(v) for v in speeds])
        )
    if rir_folder is not None:
        if not isinstance(rir_folder, str) or not os.path.isdir(rir_folder):
            raise ConfigError("rir_folder", f"{rir_folder!r} is not a folder")
        if not _has_wav(rir_folder):
            raise ConfigError("rir_folder", f"no .wav file under {rir_folder}")
        if not rir_csv:
            raise ConfigError("rir_csv", "needs a path when rir_folder is set")
        stages.append(
            AddReverb(
                csv_file=rir_csv,
                reverb_sample_rate=sample_rate,
                clean_sample_rate=sample_rate,
            )
        )
    if _check_bool("augment_noise", augment_noise):
        low = check_number("noise_snr_low", noise_snr_low)
        high = check_number("noise_snr_high", noise_snr_high)
        if low > high:
            raise ConfigError(
                "noise_snr_low", f"{low} is above noise_snr_high ({high})"
            )
        if not noise_csv:
            raise ConfigError("noise_csv", "needs a path when augment_noise is on")
        stages.append(
            AddNoise(
                csv_file=noise_csv,
                snr_low=low,
                snr_high=high,
                pad_noise=True,
                noise_sample_rate=sample_rate,
                clean_sample_rate=sample_rate,
            )
        )
    # Last: AddNoise needs the full relative lengths the shift may shorten.
    shift = int(round(time_shift_ms * sample_rate / 1000.0))
    if shift > 0:
        stages.append(RandomShift(min_shift=-shift, max_shift=shift, dim=1))
    if not stages:
        return None
    return Augmenter(
        parallel_augment=False,
        concat_original=False,
        # Every enabled stage on every augmented batch (the default draws
        # how many of the first stages run).
        min_augmentations=len(stages),
        max_augmentations=len(stages),
        augment_prob=augment_prob,
        augmentations=stages,
    )


def check_augment_files(augmenter):
    """Check that the noise and impulse-response lists of ``augmenter`` exist.

    Call after the data preparation, which writes them; a missing list
    raises a ConfigError naming the handle that turns it off.
    """
    if augmenter is None:
        return
    for stage in augmenter.augmentations.values():
        if isinstance(stage, AddNoise) and not os.path.isfile(stage.csv_file):
            raise ConfigError(
                "augment_noise",
                f"{stage.csv_file} does not exist (the data preparation writes "
                "it from the _background_noise_ files; with none usable, set "
                "--augment_noise False)",
            )
        if isinstance(stage, AddReverb) and not os.path.isfile(stage.csv_file):
            raise ConfigError(
                "rir_folder", f"{stage.csv_file} does not exist (prepare the data)"
            )


def dataio_prep(hparams, data_folder):
    """Datasets and label encoder from the prepared CSV files.

    Arguments
    ---------
    hparams : dict
        Needs ``train_csv``, ``valid_csv``, ``test_csv``, ``sample_rate``,
        ``clip_seconds``, ``save_folder``, ``n_classes`` and optionally
        ``target_pool`` (default "targets") and ``wav_augment`` (its noise
        and impulse-response lists must exist).
    data_folder : str
        Replaces ``$data_root`` in the CSV ``wav`` column.

    Returns
    -------
    datasets : dict
        ``{"train", "valid", "test"}`` DynamicItemDatasets.
    label_encoder : CategoricalEncoder
    keywords : list of str
        The classes of the target pool (the detection side of the metrics).
    """
    check_augment_files(hparams.get("wav_augment"))
    sample_rate = check_int("sample_rate", hparams["sample_rate"], minimum=1)
    clip = int(round(float(hparams["clip_seconds"]) * sample_rate))
    if clip < 1:
        raise ConfigError("clip_seconds", f"gives {clip} samples")

    datasets = {}
    for split in ("train", "valid", "test"):
        path = hparams[f"{split}_csv"]
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{split}_csv: {path!r} does not exist")
        datasets[split] = DynamicItemDataset.from_csv(
            csv_path=path, replacements={"data_root": data_folder}
        )
        if len(datasets[split]) == 0:
            raise ConfigError(f"{split}_csv", f"{path} has no examples")

    label_encoder = CategoricalEncoder()

    @sb.utils.data_pipeline.takes("wav", "start", "stop")
    @sb.utils.data_pipeline.provides("sig", AUDIO_PROBLEM_FIELD)
    def audio_pipeline(wav, start, stop):
        sig, problem = read_clip(wav, start, stop, sample_rate, clip)
        yield sig
        yield problem

    @sb.utils.data_pipeline.takes("command")
    @sb.utils.data_pipeline.provides("command", "command_encoded")
    def label_pipeline(command):
        yield command
        yield label_encoder.encode_label_torch(command)

    target_pool = hparams.get("target_pool", "targets")
    keywords = keywords_of(hparams["train_csv"], target_pool)
    if not keywords:
        raise ConfigError(
            "target_pool",
            f"no example of {hparams['train_csv']} is in pool {target_pool!r}",
        )
    train_labels = [row["command"] for row in datasets["train"].data.values()]
    labels = ordered_labels(train_labels, keywords)
    for split in ("valid", "test"):
        extra = {row["command"] for row in datasets[split].data.values()} - set(labels)
        if extra:
            raise ConfigError(
                f"{split}_csv",
                f"labels {sorted(extra)} of {hparams[f'{split}_csv']} never occur in training",
            )
    n_classes = check_int("n_classes", hparams["n_classes"], minimum=2)
    if len(labels) != n_classes:
        raise ConfigError(
            "n_classes",
            f"the training data has {len(labels)} classes ({', '.join(labels)}), "
            f"not {n_classes}; set --n_classes {len(labels)}",
        )

    encoder_file = os.path.join(hparams["save_folder"], "label_encoder.txt")
    os.makedirs(hparams["save_folder"], exist_ok=True)
    label_encoder.load_or_create(path=encoder_file, from_iterables=[labels])
    saved = [label_encoder.ind2lab[i] for i in range(len(label_encoder))]
    if saved != labels:
        raise ConfigError(
            "save_folder",
            f"{encoder_file} holds the classes {saved}, not {labels}; use a fresh "
            "output_folder for a different task",
        )

    for dataset in datasets.values():
        dataset.add_dynamic_item(audio_pipeline)
        dataset.add_dynamic_item(label_pipeline)
        dataset.set_output_keys(
            ["id", "sig", "command", "command_encoded", "pool", AUDIO_PROBLEM_FIELD]
        )
    return datasets, label_encoder, keywords


NORMS = ("batch", "layer")


def set_norm(modules, norm):
    """Choose the normalisation inside the x-vector network and its classifier.

    ``"batch"`` keeps SpeechBrain's ``BatchNorm1d`` layers: statistics over
    the batch, so training needs at least two examples per batch. ``"layer"``
    swaps the normalisation each of them wraps for ``GroupNorm(1, C)``:
    every example normalised over its own channels (and frames), the same at
    any batch size, batch 1 included, and in training and evaluation alike.
    Call it before the optimizer is made; the modules change in place.

    Arguments
    ---------
    modules : dict of torch.nn.Module
        The recipe's modules.
    norm : str
        ``"batch"`` or ``"layer"``.

    Returns
    -------
    int
        How many normalisation layers were swapped.

    Example
    -------
    >>> from speechbrain.lobes.models.Xvector import Classifier
    >>> head = Classifier(input_shape=[None, None, 8], lin_neurons=8, out_neurons=3)
    >>> set_norm({"classifier": head}, "layer")
    2
    >>> head(torch.randn(1, 1, 8)).shape  # one example trains too
    torch.Size([1, 1, 3])
    """
    if check_choice("norm", norm, NORMS) == "batch":
        return 0
    swapped = 0
    for module in modules.values():
        for layer in module.modules():
            if isinstance(layer, sb.nnet.normalization.BatchNorm1d):
                batch_norm = layer.norm
                layer.norm = torch.nn.GroupNorm(
                    1, batch_norm.num_features, eps=batch_norm.eps, affine=True
                )
                swapped += 1
    return swapped


#: What the sampler records for a negative (``negative_hardness``).
NEGATIVE_HARDNESS = ("loss", "false_alarm")

#: Largest keyword posterior a false-alarm score takes in (about 13.8 nats).
_FA_CAP = 1.0 - 1e-6


def false_alarm_scores(log_probs, targets, n_keywords, losses):
    """Hardness of each example for a sampler that mines false alarms.

    A keyword example (class index below ``n_keywords``: the label encoder
    lists the keywords first) keeps its loss. A negative one (``_silence_``,
    ``_unknown_``) scores ``-log(1 - max_k p_k)`` over the keyword classes
    ``k``: near 0 while no keyword is likely, large when the clip would
    fire a keyword at a high threshold, which is what a false alarm at a low
    false-alarm rate is. Its own loss also grows when a negative is taken
    for the other negative class, which raises no alarm; this score does not.

    Example
    -------
    >>> lp = torch.tensor([[0.7, 0.1, 0.2], [0.1, 0.1, 0.8], [0.05, 0.05, 0.9]]).log()
    >>> scores = false_alarm_scores(lp, torch.tensor([0, 2, 2]), 2, torch.full((3,), 9.0))
    >>> [round(x, 3) for x in scores.tolist()]  # a keyword, then two negatives
    [9.0, 0.105, 0.051]
    """
    p_keyword = log_probs[:, :n_keywords].exp().max(dim=1).values.double()
    scores = -torch.log1p(-p_keyword.clamp(max=_FA_CAP))
    negative = targets >= n_keywords
    return torch.where(negative, scores.to(losses.dtype), losses)


def log_posteriors(modules, wavs, lens):
    """Log-posteriors ``[B, n_classes]``: Fbank, normalisation, x-vector, classifier.

    ``modules`` has ``compute_features``, ``mean_var_norm``,
    ``embedding_model`` and ``classifier`` (attributes or keys).
    """
    get = modules.__getitem__ if isinstance(modules, dict) else modules.__getattr__
    feats = get("compute_features")(wavs)
    feats = get("mean_var_norm")(feats, lens)
    return get("classifier")(get("embedding_model")(feats, lens)).squeeze(1)


class KWSBrain(HardMiningBrain):
    """Keyword classifier: Fbank -> x-vector embedding -> softmax classifier.

    Expected modules: ``compute_features``, ``mean_var_norm``,
    ``embedding_model``, ``classifier`` (log-probabilities). Expected hparams:
    ``far_targets`` (false-alarm budgets for the metrics), ``train_logger``,
    ``output_folder``; optional ``lr_annealing`` (epoch -> lr scheduler) and
    ``wav_augment`` (from :func:`build_augmenter`; applied to training
    batches only, before the features).
    Set ``label_encoder`` and ``keywords`` (from :func:`dataio_prep`) before
    fitting.

    Example
    -------
    >>> import torch
    >>> from speechbrain.lobes.features import Fbank
    >>> from speechbrain.lobes.models.Xvector import Classifier, Xvector
    >>> from speechbrain.processing.features import InputNormalization
    >>> from speechbrain.dataio.batch import PaddedBatch
    >>> modules = {
    ...     "compute_features": Fbank(n_mels=20),
    ...     "mean_var_norm": InputNormalization(norm_type="sentence", std_norm=False),
    ...     "embedding_model": Xvector(in_channels=20, tdnn_blocks=2,
    ...         tdnn_channels=[16, 16], tdnn_kernel_sizes=[3, 1],
    ...         tdnn_dilations=[1, 1], lin_neurons=8),
    ...     "classifier": Classifier(input_shape=[None, None, 8], lin_neurons=8,
    ...                              out_neurons=3),
    ... }
    >>> brain = KWSBrain(modules, hparams={"far_targets": [0.05]}, run_opts={"device": "cpu"})
    >>> batch = PaddedBatch([
    ...     {"id": f"u{i}", "sig": torch.randn(4000), "command_encoded": torch.tensor([i % 3]),
    ...      "command": "abc"[i % 3], "audio_problem": ""} for i in range(4)])
    >>> log_probs = brain.compute_forward(batch, sb.Stage.TRAIN)
    >>> losses = brain._recipe_objectives(log_probs, batch, sb.Stage.TRAIN)  # no mining
    >>> losses.shape
    torch.Size([4])
    """

    label_encoder = None
    keywords = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.negative_hardness = check_choice(
            "negative_hardness",
            getattr(self.hparams, "negative_hardness", "loss"),
            NEGATIVE_HARDNESS,
        )
        if self.negative_hardness != "loss" and self.sampler_factory is None:
            raise ConfigError(
                "negative_hardness",
                f"{self.negative_hardness!r} feeds a mining sampler; sampler is none",
            )

    def mining_scores(self, losses, predictions, batch):
        """The loss, or with ``negative_hardness: false_alarm`` the negatives'
        false-alarm scores (:func:`false_alarm_scores`)."""
        if self.negative_hardness != "false_alarm":
            return losses
        if self.keywords is None:
            raise RuntimeError("set brain.keywords first")
        targets = batch.command_encoded.data.reshape(-1).to(predictions.device)
        return false_alarm_scores(
            predictions.detach(), targets, len(self.keywords), losses
        )

    def compute_forward(self, batch, stage):
        """Log-posteriors ``[B, n_classes]`` of a batch."""
        batch = batch.to(self.device)
        wavs, lens = batch.sig
        augmenter = getattr(self.hparams, "wav_augment", None)
        if stage == sb.Stage.TRAIN and augmenter is not None:
            wavs, lens = augmenter(wavs, lens)
            if wavs.shape[0] != len(batch.id):
                raise RuntimeError(
                    f"wav_augment turned {len(batch.id)} examples into "
                    f"{wavs.shape[0]}; per-example losses need one output each "
                    "(no concat_original or parallel_augment)"
                )
        return log_posteriors(self.modules, wavs, lens)

    def compute_objectives(self, predictions, batch, stage):
        """Negative log-likelihood of the true class, one per example."""
        targets = batch.command_encoded.data.reshape(-1).to(predictions.device)
        losses = F.nll_loss(predictions, targets, reduction="none")
        if stage != sb.Stage.TRAIN and self.results is not None:
            problems = getattr(batch, AUDIO_PROBLEM_FIELD, None) or [""] * len(batch.id)
            keep = [i for i, p in enumerate(problems) if not p]
            if keep:
                posteriors = predictions.detach()[keep].exp().float().cpu().numpy()
                self.results.append(
                    [batch.id[i] for i in keep], posteriors, targets[keep].cpu().numpy()
                )
        return losses

    results = None

    def on_stage_start(self, stage, epoch=None):
        """Fresh metric accumulators for validation and test."""
        super().on_stage_start(stage, epoch)
        self.results = None
        if stage != sb.Stage.TRAIN:
            if self.label_encoder is None or self.keywords is None:
                raise RuntimeError("set brain.label_encoder and brain.keywords first")
            names = [
                self.label_encoder.ind2lab[i] for i in range(len(self.label_encoder))
            ]
            self.results = KWSResults(names, self.keywords, self.hparams.far_targets)

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Log losses, mining statistics and metrics; checkpoint on validation error."""
        super().on_stage_end(stage, stage_loss, epoch)
        if stage == sb.Stage.TRAIN:
            self.train_stats = {"loss": stage_loss, **self.mining_stats}
            return
        summary = self.results.summary()
        stats = {"loss": stage_loss, "error": 1.0 - summary["accuracy"]}
        stats["accuracy"] = summary["accuracy"]
        for far, res in summary["frr_at_far"].items():
            stats[f"frr@far{far}"] = res["frr"]
        if stage == sb.Stage.VALID:
            meta = {"epoch": epoch}
            scheduler = getattr(self.hparams, "lr_annealing", None)
            if scheduler is not None:
                old_lr, new_lr = scheduler(epoch)
                sb.nnet.schedulers.update_learning_rate(self.optimizer, new_lr)
                meta["lr"] = old_lr
            self.hparams.train_logger.log_stats(
                stats_meta=meta, train_stats=self.train_stats, valid_stats=stats
            )
            if self.checkpointer is not None:
                self.checkpointer.save_and_keep_only(meta=stats, min_keys=["error"])
        else:
            self.hparams.train_logger.log_stats(
                stats_meta={"Epoch loaded": self.hparams.epoch_counter.current},
                test_stats=stats,
            )
            if sb.utils.distributed.if_main_process():
                paths = self.results.write(self.hparams.output_folder, prefix="test")
                logger.info("Test results written to %s", ", ".join(paths))
        self.last_summary = summary
