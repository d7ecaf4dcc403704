"""Shared parts of the speech-separation recipes (WSJ0Mix and LibriMix).

Each recipe's ``train.py`` shows SpeechBrain's flow (parse the arguments, load
the hparams, initialise DDP, create the experiment folder, prepare the data on
the main process, build the datasets, fit, evaluate) and takes the pieces both
recipes share from here, so they train the same model code:

* :data:`TINY_OVERRIDES` holds the command-line overrides of a CPU-sized
  model, per architecture;
* :func:`check_hparams` rejects unusable settings before anything is built;
* :func:`resolve_data_folder` replaces ``data_folder: null`` by the recipe's
  embedded default set (WSJ0-2mix or Libri2Mix layout);
* :func:`build_datasets` creates the data pipeline (checked audio loading,
  random training crops, the ``audio_problem`` flag);
* :class:`SeparationBrain` runs encoder -> mask network -> decoder, returns
  the per-example negative SI-SNR (with permutation-invariant matching) to
  :class:`hardmine.brain.HardMiningBrain`, or with the reweighting ``over:
  sources`` each source's negative SI-SNR under the best permutation
  (:func:`pit_source_losses`), and writes per-utterance test metrics.

Example
-------
>>> TINY_OVERRIDES["sepformer"][:2]
['--N_encoder_out', '64']
"""

import functools
import logging
import os

import speechbrain as sb
import torch

from hardmine.brain import HardMiningBrain
from hardmine.plainyaml import PlainLoader, read_fields
from hardmine.validation import ConfigError, check_choice, check_int, check_number

logger = logging.getLogger(__name__)

__all__ = [
    "TINY_OVERRIDES",
    "read_plain_fields",
    "check_hparams",
    "resolve_data_folder",
    "load_example",
    "build_datasets",
    "pit_source_losses",
    "SeparationBrain",
]

#: Command-line overrides that shrink each architecture to a CPU-sized model
#: (the demo, the benchmarks and the test suite): pass them after the hparams
#: file, e.g. ``python train.py hparams/sepformer.yaml *TINY_OVERRIDES["sepformer"]``.
#: Without them the YAML files keep SpeechBrain's published sizes. SpeechBrain
#: rejects an option given twice, so to change one of these fields as well,
#: change its value in the list.
TINY_OVERRIDES = {
    "sepformer": [
        "--N_encoder_out", "64",
        "--intra_layers", "1",
        "--inter_layers", "1",
        "--dual_layers", "2",
        "--nhead", "4",
        "--d_ffn", "256",
        "--chunk_size", "100",
    ],
    "convtasnet": [
        "--N_encoder_out", "64",
        "--bottleneck_channels", "64",
        "--conv_channels", "128",
        "--blocks_per_repeat", "4",
        "--repeats", "1",
    ],
}  # fmt: skip


#: Safe YAML loader reading tagged hyperpyyaml nodes as ``None``
#: (:class:`hardmine.plainyaml.PlainLoader`).
_PlainLoader = PlainLoader


def read_plain_fields(hparams_file):
    """Read the top-level fields of a hyperpyyaml file without building it.

    Tagged values (``!new:``, ``!ref``, ``!include:``, ``!PLACEHOLDER`` ...)
    come back as ``None``; plain scalars come back as written
    (:func:`hardmine.plainyaml.read_fields`).

    Arguments
    ---------
    hparams_file : str
        Path to the YAML file.

    Returns
    -------
    dict
    """
    return read_fields(hparams_file, tags=False)


def check_hparams(hparams):
    """Check the separation fields of a loaded recipe, naming the bad one.

    Arguments
    ---------
    hparams : dict
        The loaded hyperparameters.

    Example
    -------
    >>> check_hparams({"num_spks": 4})
    Traceback (most recent call last):
    ...
    hardmine.validation.ConfigError: num_spks: must be one of 2, 3, got 4
    """
    check_choice("num_spks", hparams.get("num_spks"), (2, 3))
    check_choice("sample_rate", hparams.get("sample_rate"), (8000, 16000))
    check_choice("version", hparams.get("version"), ("min", "max"))
    if hparams.get("training_signal_len") is not None:
        check_int("training_signal_len", hparams["training_signal_len"], minimum=1)
    check_int("batch_size", hparams.get("batch_size"), minimum=1)
    check_int("N_epochs", hparams.get("N_epochs"), minimum=1)
    check_number("lr", hparams.get("lr"), minimum=0.0, strict=True)
    check_number("clip_grad_norm", hparams.get("clip_grad_norm"), 0.0, strict=True)
    check_choice(
        "precision", hparams.get("precision", "fp32"), ("fp32", "fp16", "bf16")
    )
    kernel = check_int("kernel_size", hparams.get("kernel_size"), minimum=2)
    if kernel % 2:
        raise ConfigError(
            "kernel_size", f"must be even (stride is half of it), got {kernel}"
        )
    if "mixture" in hparams:
        check_choice("mixture", hparams["mixture"], ("clean", "both"))
    from hardmine.tasks.dynamic_mixing import check_dm_fields

    check_dm_fields(hparams)  # dynamic mixing and speed perturbation


def resolve_data_folder(hparams, embedded_default=True):
    """Return the data folder, building the embedded default if it is null.

    ``data_folder: null`` selects a small synthetic set generated once and
    cached: for the WSJ0Mix recipe the WSJ0-2mix-layout set of
    :func:`hardmine.synthetic.layouts.default_wsj0mix`, for the LibriMix
    recipe the Libri2Mix-layout set with noise of
    :func:`hardmine.synthetic.layouts.default_librimix`. Both only exist with
    two speakers at 8 kHz ("min" version); the LibriMix one only with the
    ``train-360`` training folder.

    Arguments
    ---------
    hparams : dict
        The loaded hyperparameters.
    embedded_default : bool or str
        Which set ``null`` selects: ``"wsj0mix"`` (or True), ``"librimix"``,
        or False when the recipe has none (``null`` is then an error).

    Returns
    -------
    str

    Example
    -------
    >>> resolve_data_folder({"data_folder": "/data/wsj0-mix/2speakers"})
    '/data/wsj0-mix/2speakers'
    >>> resolve_data_folder({"data_folder": None, "num_spks": 3})
    Traceback (most recent call last):
    ...
    hardmine.validation.ConfigError: data_folder: the embedded default is a 2-speaker set; give --data_folder for num_spks=3
    """
    folder = hparams.get("data_folder")
    if folder is not None:
        folder = str(folder)
        if not folder:
            raise ConfigError("data_folder", "is empty")
        return folder
    if embedded_default is False:
        raise ConfigError("data_folder", "this recipe has no embedded default; give it")
    kind = "wsj0mix" if embedded_default is True else embedded_default
    if kind not in ("wsj0mix", "librimix"):
        raise ValueError(
            f"embedded_default must be True, False, 'wsj0mix' or 'librimix', "
            f"got {embedded_default!r}"
        )
    if hparams.get("num_spks") != 2:
        raise ConfigError(
            "data_folder",
            "the embedded default is a 2-speaker set; give --data_folder for "
            f"num_spks={hparams.get('num_spks')}",
        )
    if hparams.get("sample_rate") != 8000 or hparams.get("version") != "min":
        raise ConfigError(
            "data_folder",
            "the embedded default is 8 kHz 'min'; give --data_folder for "
            f"sample_rate={hparams.get('sample_rate')} "
            f"version={hparams.get('version')}",
        )
    if kind == "librimix" and hparams.get("train_set", "train-360") != "train-360":
        raise ConfigError(
            "data_folder",
            "the embedded default has the train-360 training folder only; give "
            f"--data_folder for train_set={hparams.get('train_set')}",
        )
    from hardmine.synthetic import layouts

    # Generated once and cached; concurrent ranks wait on a file lock.
    if kind == "librimix":
        return str(layouts.default_librimix())
    return str(layouts.default_wsj0mix())


def load_example(paths, sample_rate, crop_len=None, generator=None):
    """Load a mixture and its sources, check them and crop them together.

    Arguments
    ---------
    paths : list of str
        Mixture path first, then one path per source.
    sample_rate : int
        Expected sampling rate of every file.
    crop_len : int, optional
        When given and the files are longer, one random window of this many
        samples is cut from all of them at the same offset.
    generator : torch.Generator, optional
        Random source for the crop offset.

    Returns
    -------
    signals : list of torch.Tensor
        One 1-D float tensor per path, all the same length.
    problem : str
        ``""`` when all files are usable, otherwise what went wrong (the
        signals are then silent placeholders of a plausible length).

    Example
    -------
    >>> import tempfile, numpy, soundfile
    >>> tmp = tempfile.TemporaryDirectory()
    >>> rng = numpy.random.default_rng(0)
    >>> names = [os.path.join(tmp.name, f"{n}.wav") for n in ("mix", "s1", "s2")]
    >>> for name in names:
    ...     soundfile.write(name, 0.1 * rng.standard_normal(800), 8000)
    >>> signals, problem = load_example(names, 8000, crop_len=400)
    >>> [s.shape[0] for s in signals], problem
    ([400, 400, 400], '')
    >>> signals, problem = load_example(names, 16000)
    >>> problem != "" and len(signals) == 3
    True
    >>> tmp.cleanup()
    """
    from hardmine.tasks.audio import load_checked

    signals, problems = [], []
    for path in paths:
        signal, problem = load_checked(path, expected_sr=sample_rate)
        if problem:
            problems.append(f"{path}: {problem}")
            signals.append(None)
            continue
        signal = torch.as_tensor(signal, dtype=torch.float32)
        if signal.dim() != 1:
            problems.append(
                f"{path}: expected one channel, got shape {tuple(signal.shape)}"
            )
            signals.append(None)
            continue
        signals.append(signal)
    lengths = {s.shape[0] for s in signals if s is not None}
    if not problems and len(lengths) > 1:
        problems.append(
            f"{paths[0]}: mixture and sources differ in length ({sorted(lengths)})"
        )
    if problems:
        length = crop_len or (min(lengths) if lengths else sample_rate)
        return [torch.zeros(length) for _ in paths], "; ".join(problems)
    length = lengths.pop()
    if crop_len is not None and length > crop_len:
        start = int(torch.randint(0, length - crop_len + 1, (1,), generator=generator))
        signals = [s[start : start + crop_len] for s in signals]
    return signals, ""


def _load_item(*paths, sample_rate, crop_len):
    signals, problem = load_example(list(paths), sample_rate, crop_len)
    return (*signals, problem)


def build_datasets(hparams, csv_files):
    """Create the train, valid and test datasets from the prepared CSV files.

    Every item provides ``mix_sig``, ``s1_sig`` ... ``s<num_spks>_sig`` and
    ``audio_problem`` (``""`` when the audio is fine).  Training items are
    cropped to ``training_signal_len`` samples when longer (``null`` keeps
    them whole); valid and test items are never cropped. With
    ``dynamic_mixing: True`` the training set is a
    :class:`~hardmine.tasks.dynamic_mixing.DynamicMixingDataset` of new
    mixtures every epoch, made from the training sources (the fields are
    checked here whether it is on or off).

    Arguments
    ---------
    hparams : dict
        The loaded hyperparameters (``num_spks``, ``sample_rate``,
        ``training_signal_len``).
    csv_files : dict
        ``{"train": path, "valid": path, "test": path}``.

    Returns
    -------
    dict of speechbrain.dataio.dataset.DynamicItemDataset
    """
    from hardmine.tasks.dynamic_mixing import build_dm_train_set, check_dm_fields

    dynamic_mixing = check_dm_fields(hparams)["dynamic_mixing"]
    num_spks = hparams["num_spks"]
    sample_rate = hparams["sample_rate"]
    path_keys = ["mix_wav"] + [f"s{i}_wav" for i in range(1, num_spks + 1)]
    signal_keys = ["mix_sig"] + [f"s{i}_sig" for i in range(1, num_spks + 1)]

    datasets = {}
    for split in ("train", "valid", "test"):
        csv_path = csv_files.get(split)
        if csv_path is None or not os.path.isfile(csv_path):
            raise ConfigError(
                "data_folder", f"prepared {split} list {csv_path} is missing"
            )
        dataset = sb.dataio.dataset.DynamicItemDataset.from_csv(csv_path)
        if len(dataset) == 0:
            raise ConfigError("data_folder", f"the {split} list {csv_path} is empty")
        first = dataset.data[dataset.data_ids[0]]
        missing = [key for key in path_keys if key not in first]
        if missing:
            raise ConfigError(
                "num_spks",
                f"{csv_path} has no column {', '.join(missing)} (num_spks={num_spks})",
            )
        crop_len = hparams.get("training_signal_len") if split == "train" else None
        pipeline = functools.partial(
            _load_item, sample_rate=sample_rate, crop_len=crop_len
        )
        dataset.add_dynamic_item(
            pipeline, takes=path_keys, provides=signal_keys + ["audio_problem"]
        )
        keys = ["id"] + signal_keys + ["audio_problem"]
        if split == "test" and _attach_subgroups(dataset):
            keys.append("subgroup")
        dataset.set_output_keys(keys)
        datasets[split] = dataset
    if dynamic_mixing:
        datasets["train"] = build_dm_train_set(hparams, csv_files["train"])
    return datasets


def _attach_subgroups(dataset):
    """Give every test mixture its ``subgroup`` from a generated set's sidecar.

    Sets generated by :mod:`hardmine.synthetic.layouts` list each mixture's
    difficulty factors in ``mixture_info.csv``, two levels above the mixture
    files (``<root>/wav8k/min/mixture_info.csv`` for ``.../min/tt/mix/*.wav``).
    Real corpora have none: then nothing is attached.
    """
    first = dataset.data[dataset.data_ids[0]]["mix_wav"]
    info = os.path.join(
        os.path.dirname(os.path.dirname(os.path.dirname(first))), "mixture_info.csv"
    )
    if not os.path.isfile(info):
        return False
    from hardmine.tasks.sep_metrics import read_subgroups

    dataset.add_dynamic_item(
        functools.partial(_subgroup_of, groups=read_subgroups(info)),
        takes=["mix_wav"],
        provides=["subgroup"],
    )
    return True


def _subgroup_of(mix_wav, groups):
    return groups.get(os.path.splitext(os.path.basename(mix_wav))[0], "")


def pit_source_losses(targets, estimates):
    """Negative SI-SNR of each source under the best permutation, [B, S].

    The permutation of each example is the one SpeechBrain's
    ``get_si_snr_with_pitwrapper`` picks (``PitWrapper`` with ``cal_si_snr``,
    found without a graph); each source's estimate is then scored against
    it with ``cal_si_snr``, so the mean over sources is
    ``get_si_snr_with_pitwrapper(targets, estimates)``.

    Arguments
    ---------
    targets, estimates : torch.Tensor
        Shape [B, T, S].

    Returns
    -------
    torch.Tensor
        Shape [B, S]; entry ``[b, s]`` is the loss of target source ``s``.

    Example
    -------
    >>> from speechbrain.nnet.losses import get_si_snr_with_pitwrapper
    >>> targets = torch.randn(2, 400, 3)
    >>> estimates = targets[..., [2, 0, 1]] + 0.1 * torch.randn(2, 400, 3)
    >>> losses = pit_source_losses(targets, estimates)
    >>> losses.shape, bool((losses < -15).all())
    (torch.Size([2, 3]), True)
    >>> reference = get_si_snr_with_pitwrapper(targets, estimates)
    >>> torch.allclose(losses.mean(dim=1), reference, atol=1e-5)
    True
    """
    from speechbrain.nnet.losses import PitWrapper, cal_si_snr

    with torch.no_grad():
        # PitWrapper pairs estimate a with target source perm[a].
        _, perms = PitWrapper(cal_si_snr)(targets.detach(), estimates.detach())
    order = torch.empty(
        (len(perms), estimates.shape[-1]), dtype=torch.long, device=estimates.device
    )
    for b, perm in enumerate(perms):
        for a, s in enumerate(perm):
            order[b, s] = a  # the estimate matched to source s
    index = order.unsqueeze(1).expand(-1, estimates.shape[1], -1)
    matched = torch.gather(estimates, -1, index)
    # cal_si_snr takes [T, B, S] (and masks its estimate in place).
    losses = cal_si_snr(targets.transpose(0, 1), matched.transpose(0, 1).clone())
    return losses.squeeze(0)


def _is_pit_si_snr(loss):
    from speechbrain.nnet.losses import get_si_snr_with_pitwrapper

    return getattr(loss, "func", loss) is get_si_snr_with_pitwrapper


class SeparationBrain(HardMiningBrain):
    """Mask-based separation (SepFormer, Conv-TasNet) with hard-example mining.

    Expects the modules ``encoder``, ``masknet`` and ``decoder`` and the
    hparams ``num_spks``, ``loss`` (called as ``loss(targets, estimates)``,
    one value per example: SpeechBrain's ``get_si_snr_with_pitwrapper`` in
    the recipes), ``lr_scheduler``, ``train_logger``, ``epoch_counter``,
    ``test_results`` and ``test_summary``. With a ``reweighting`` whose
    ``over`` is ``sources``, :meth:`compute_objectives` returns one loss per
    example and source (:func:`pit_source_losses`, whose mean over sources is
    that ``loss``), which only ``get_si_snr_with_pitwrapper`` as ``loss``
    allows.

    Arguments
    ---------
    *args, **kwargs
        Passed to :class:`hardmine.brain.HardMiningBrain`.

    Example
    -------
    >>> from types import SimpleNamespace
    >>> from speechbrain.lobes.models.conv_tasnet import MaskNet
    >>> from speechbrain.lobes.models.dual_path import Decoder, Encoder
    >>> from speechbrain.nnet.losses import get_si_snr_with_pitwrapper
    >>> modules = {
    ...     "encoder": Encoder(kernel_size=16, out_channels=8),
    ...     "masknet": MaskNet(8, 8, 8, 3, 1, 1, 2),
    ...     "decoder": Decoder(
    ...         in_channels=8, out_channels=1, kernel_size=16, stride=8, bias=False
    ...     ),
    ... }
    >>> hparams = {"num_spks": 2, "loss": get_si_snr_with_pitwrapper}
    >>> brain = SeparationBrain(modules, hparams=hparams)
    >>> mix = torch.randn(3, 805)
    >>> sources = [torch.randn(3, 805), torch.randn(3, 805)]
    >>> batch = SimpleNamespace(
    ...     mix_sig=(mix, torch.ones(3)),
    ...     s1_sig=(sources[0], torch.ones(3)),
    ...     s2_sig=(sources[1], torch.ones(3)),
    ... )
    >>> estimates, targets = brain.compute_forward(batch, sb.Stage.VALID)
    >>> estimates.shape, targets.shape
    (torch.Size([3, 805, 2]), torch.Size([3, 805, 2]))
    >>> swapped = targets.flip(-1)  # right sources, wrong order: PIT undoes it
    >>> float(brain.compute_objectives((swapped, targets), batch, sb.Stage.VALID)) < -60
    True
    >>> from hardmine.reweighting import SoftmaxReweighting
    >>> hparams["reweighting"] = SoftmaxReweighting("robust", over="sources")
    >>> brain = SeparationBrain(modules, hparams=hparams)
    >>> brain._recipe_objectives((estimates, targets), batch, sb.Stage.TRAIN).shape
    torch.Size([3, 2])
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        loss = getattr(self.hparams, "loss", None)
        if self.reweighting.over == "sources" and not _is_pit_si_snr(loss):
            raise ConfigError(
                "over",
                "sources scores each source by its negative SI-SNR under the best "
                "permutation, the per-source form of the loss "
                "speechbrain.nnet.losses.get_si_snr_with_pitwrapper; the recipe's "
                f"loss is {getattr(loss, '__name__', loss)!r}",
            )

    def separate(self, mix):
        """Estimate the sources of a batch of mixtures.

        Arguments
        ---------
        mix : torch.Tensor
            Mixtures, shape [B, T].

        Returns
        -------
        torch.Tensor
            Estimated sources, shape [B, T, num_spks].
        """
        features = self.modules.encoder(mix)  # [B, N, L]
        masks = self.modules.masknet(features)  # [num_spks, B, N, L]
        estimates = torch.stack(
            [self.modules.decoder(features * mask) for mask in masks], dim=-1
        )
        if estimates.dim() == 2:  # the decoder squeezes a batch of one
            estimates = estimates.unsqueeze(0)
        # The transposed convolution returns a few samples less or more.
        length = mix.shape[1]
        if estimates.shape[1] < length:
            estimates = torch.nn.functional.pad(
                estimates, (0, 0, 0, length - estimates.shape[1])
            )
        return estimates[:, :length, :]

    def compute_forward(self, batch, stage):
        """Separate the batch's mixtures.

        Arguments
        ---------
        batch : PaddedBatch
            Has ``mix_sig`` and ``s<i>_sig`` for each source.
        stage : speechbrain.Stage
            Unused; the model is the same in all stages.

        Returns
        -------
        estimates, targets : torch.Tensor
            Both of shape [B, T, num_spks].
        """
        mix = batch.mix_sig[0].to(self.device)
        targets = torch.stack(
            [
                getattr(batch, f"s{i}_sig")[0]
                for i in range(1, self.hparams.num_spks + 1)
            ],
            dim=-1,
        ).to(self.device)
        return self.separate(mix), targets

    def compute_objectives(self, predictions, batch, stage):
        """Return the per-example loss of the ``loss`` hparam, shape [B].

        The recipes' loss is the negative SI-SNR with the best permutation.
        With the reweighting over sources, the loss of each source under
        that permutation instead, shape [B, S] (:func:`pit_source_losses`).
        In the test stage the per-utterance metrics are also recorded.

        Arguments
        ---------
        predictions : tuple
            ``(estimates, targets)`` from :meth:`compute_forward`.
        batch : PaddedBatch
            The batch.
        stage : speechbrain.Stage
            The stage.

        Returns
        -------
        torch.Tensor
        """
        estimates, targets = predictions
        if self.reweighting.over == "sources":
            loss = pit_source_losses(targets, estimates)
        else:
            loss = self.hparams.loss(targets, estimates)
        if stage == sb.Stage.TEST:
            self._record_test_metrics(estimates, targets, batch)
        return loss

    def _record_test_metrics(self, estimates, targets, batch):
        from hardmine.tasks.sep_metrics import utterance_metrics

        mix, rel_lengths = batch.mix_sig
        problems = getattr(batch, "audio_problem", None) or [""] * mix.shape[0]
        for i, snt_id in enumerate(batch.id):
            if problems[i]:
                continue
            length = int(round(float(rel_lengths[i]) * mix.shape[1]))
            metrics = utterance_metrics(
                mix[i, :length].detach().cpu().float(),
                estimates[i, :length].detach().cpu().float(),
                targets[i, :length].detach().cpu().float(),
            )
            row = {"snt_id": snt_id, **metrics}
            subgroups = getattr(batch, "subgroup", None)
            if subgroups is not None:
                row["subgroup"] = subgroups[i]
            self.test_rows.append(row)

    def make_dataloader(
        self, dataset, stage, ckpt_prefix="dataloader-", **loader_kwargs
    ):
        """Build a loader; a dynamic-mixing training set is batched by PaddedBatch.

        The dynamic-mixing set is kept so that :meth:`on_stage_start` can
        hand it each epoch before the loader's workers are started. Its
        mixtures exist once, so a mining sampler must be one over sources
        (``--sampler isbl``, which the recipes' choice turns into
        :class:`~hardmine.source_sampler.SourceSampler`).
        """
        if stage == sb.Stage.TRAIN and getattr(dataset, "dynamic_mixing", False):
            from speechbrain.dataio.batch import PaddedBatch

            factory = self.sampler_factory
            if factory is not None and not getattr(factory, "dynamic_mixing", False):
                raise ConfigError(
                    "sampler",
                    "with dynamic_mixing: True the training mixtures are new every "
                    "epoch; the mining sampler must draw sources (the recipes' "
                    "--sampler isbl passes dynamic_mixing to choose_sampler)",
                )
            loader_kwargs.setdefault("collate_fn", PaddedBatch)
            self.dm_train_set = dataset
        return super().make_dataloader(dataset, stage, ckpt_prefix, **loader_kwargs)

    def on_stage_start(self, stage, epoch=None):
        """Reset the test rows; give a dynamic-mixing training set its epoch."""
        super().on_stage_start(stage, epoch)
        dm_set = getattr(self, "dm_train_set", None)
        if stage == sb.Stage.TRAIN and dm_set is not None and epoch is not None:
            dm_set.set_epoch(epoch)
        if stage == sb.Stage.TEST:
            self.test_rows = []

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Log the epoch, step the scheduler, checkpoint, write test results."""
        super().on_stage_end(stage, stage_loss, epoch)
        stats = {"si-snr": stage_loss}
        if stage == sb.Stage.TRAIN:
            self.train_stats = {**stats, **dict(getattr(self, "mining_stats", {}))}
        elif stage == sb.Stage.VALID:
            current_lr, next_lr = self.hparams.lr_scheduler(
                [self.optimizer], epoch, stage_loss
            )
            sb.nnet.schedulers.update_learning_rate(self.optimizer, next_lr)
            self.hparams.train_logger.log_stats(
                stats_meta={"epoch": epoch, "lr": current_lr},
                train_stats=getattr(self, "train_stats", None),
                valid_stats=stats,
            )
            if self.checkpointer is not None:
                self.checkpointer.save_and_keep_only(
                    meta={"si-snr": stage_loss}, min_keys=["si-snr"]
                )
        elif stage == sb.Stage.TEST:
            self.hparams.train_logger.log_stats(
                stats_meta={"epoch loaded": self.hparams.epoch_counter.current},
                test_stats=stats,
            )
            if sb.utils.distributed.if_main_process():
                from hardmine.tasks.sep_metrics import write_test_results

                write_test_results(
                    self.test_rows,
                    self.hparams.test_results,
                    self.hparams.test_summary,
                )
                logger.info(
                    "Per-utterance test metrics written to %s",
                    self.hparams.test_results,
                )
