#!/usr/bin/env python3
"""Keyword spotting on Google Speech Commands with hard-example mining.

Runs on the real corpus (``--data_folder /path/to/speech_commands_v0.02``) or,
with ``data_folder: null``, on a small synthetic corpus in the same layout
that is generated once and cached.

Usage::

    python train.py hparams/kws.yaml                       # baseline
    python train.py hparams/kws_isbl.yaml --isbl_alpha 0.5  # ISBL sampler
    python train.py hparams/kws.yaml --sampler catpow --reweight_mode robust
    python train.py hparams/kws.yaml --data_folder /data/speech_commands_v0.02 \\
        --task 35 --n_classes 35
    python train.py hparams/kws.yaml --augment False        # no augmentation
    python train.py hparams/kws.yaml --rir_folder /data/RIRs  # add reverberation
    torchrun --nproc_per_node 2 train.py hparams/kws_isbl.yaml \\
        --device cpu --distributed_backend gloo
"""

import os
import sys

# Before SpeechBrain: hardmine.cli quiets SpeechBrain's torchvision notice.
from hardmine.cli import exit_on_config_error
from hardmine.distributed import shutdown

# isort: split
import speechbrain as sb
from hyperpyyaml import load_hyperpyyaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from prepare_gsc import prepare_gsc  # noqa: E402

from hardmine.synthetic.gsc import default_gsc  # noqa: E402
from hardmine.tasks.kws import KWSBrain, dataio_prep, set_norm  # noqa: E402
from hardmine.tasks.kws_reference import write_reference_losses  # noqa: E402
from hardmine.validation import ConfigError  # noqa: E402


def main(argv):
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    sb.utils.distributed.ddp_init_group(run_opts)
    with open(hparams_file, encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    set_norm(hparams["modules"], hparams["norm"])  # batch | layer
    sb.create_experiment_directory(
        experiment_directory=hparams["output_folder"],
        hyperparams_to_save=hparams_file,
        overrides=overrides,
    )

    data_folder = hparams["data_folder"]
    if data_folder is None:
        sb.utils.distributed.run_on_main(default_gsc)
        data_folder = default_gsc()  # generated above: only finds it
    sb.utils.distributed.run_on_main(
        prepare_gsc,
        kwargs={
            "data_folder": data_folder,
            "save_folder": hparams["save_folder"],
            "task": hparams["task"],
            "validation_list": hparams["validation_list"],
            "testing_list": hparams["testing_list"],
            "silence_per_split": hparams["silence_per_split"],
            "seed": hparams["seed"],
            "skip_prep": hparams["skip_prep"],
            "strict_prep": hparams["strict_prep"],
            "sample_rate": hparams["sample_rate"],
            "rir_folder": hparams["rir_folder"],
        },
    )
    datasets, label_encoder, keywords = dataio_prep(hparams, data_folder)

    # Reference losses for the ISBL sampler (isbl_reference_epochs > 0):
    # holdout copies of the model trained before the run, on the main process.
    if hparams.get("isbl_reference_epochs", 0):
        if str(hparams["sampler"]).lower() != "isbl":
            raise ConfigError(
                "isbl_reference_epochs",
                f"reference losses feed the ISBL sampler; sampler is {hparams['sampler']!r}",
            )
        sb.utils.distributed.run_on_main(
            write_reference_losses,
            kwargs={
                "path": hparams["isbl_reference_csv"],
                "modules": hparams["modules"],
                "opt_class": hparams["opt_class"],
                "train_data": datasets["train"],
                "epochs": hparams["isbl_reference_epochs"],
                "folds": hparams["isbl_reference_folds"],
                "seed": hparams["seed"],
                "batch_size": hparams["batch_size"],
                "device": run_opts.get("device", "cpu"),
            },
        )

    brain = KWSBrain(
        modules=hparams["modules"],
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
    )
    brain.label_encoder = label_encoder
    brain.keywords = keywords
    brain.fit(
        brain.hparams.epoch_counter,
        datasets["train"],
        datasets["valid"],
        train_loader_kwargs=hparams["dataloader_options"],
        valid_loader_kwargs=hparams["test_dataloader_options"],
    )
    brain.evaluate(
        datasets["test"],
        min_key="error",
        test_loader_kwargs=hparams["test_dataloader_options"],
    )


def run(argv, stream=None):
    """Run ``main(argv)`` as the command line does.

    A bad setting, or bad audio files under ``strict_prep``, end the run with
    exit status 2 and a plain message on ``stream`` (default stderr), no
    traceback: one line naming the option, or one line per bad file.

    Arguments
    ---------
    argv : list of str
        The hparams file, then the options.
    stream : file, optional
        Where the message goes.
    """
    with exit_on_config_error(argv, stream=stream):
        main(argv)
    shutdown()  # under torchrun: free the Brain, then the process group


if __name__ == "__main__":
    run(sys.argv[1:])
