#!/usr/bin/env python3
"""Train a separation model on Libri2Mix / Libri3Mix with hard-example mining.

SpeechBrain's recipe flow; the model code (SeparationBrain), the data
pipeline and the checks are shared with the WSJ0Mix recipe in
:mod:`hardmine.tasks.separation`, the mining policies come from the YAML file.

Usage
-----
    python train.py hparams/sepformer.yaml --data_folder /data/Libri2Mix
    python train.py hparams/sepformer_isbl.yaml --data_folder /data/Libri2Mix \\
        --isbl_alpha 0.5 --mixture clean
    python train.py hparams/convtasnet.yaml --data_folder /data/Libri2Mix \\
        --sampler isbl --reweight_mode robust
    python train.py hparams/convtasnet.yaml --num_spks 3 --data_folder /data/Libri3Mix
    torchrun --nproc_per_node 2 train.py hparams/sepformer.yaml \\
        --data_folder /data/Libri2Mix --device cpu --distributed_backend gloo

Without ``--data_folder`` the embedded default set is used: a small
synthetic Libri2Mix-layout set with noise, generated once and cached (see
``data_folder`` in the YAML files).
"""

import sys

# Before SpeechBrain: hardmine.cli quiets SpeechBrain's torchvision notice.
from hardmine.cli import exit_on_config_error
from hardmine.distributed import shutdown

# isort: split
import speechbrain as sb
from hyperpyyaml import load_hyperpyyaml
from prepare_librimix import prepare_librimix

from hardmine.tasks.separation import (
    SeparationBrain,
    build_datasets,
    check_hparams,
    resolve_data_folder,
)


def main(argv):
    # Arguments, hyperparameters, distributed set-up, experiment folder.
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    sb.utils.distributed.ddp_init_group(run_opts)
    with open(hparams_file, encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    check_hparams(hparams)
    sb.create_experiment_directory(
        experiment_directory=hparams["output_folder"],
        hyperparams_to_save=hparams_file,
        overrides=overrides,
    )

    # Data preparation on the main process; every rank then reads its lists.
    # data_folder: null is the embedded default set (generated once, cached).
    prep_kwargs = {
        "datapath": resolve_data_folder(hparams, embedded_default="librimix"),
        "savepath": hparams["save_folder"],
        "n_spks": hparams["num_spks"],
        "fs": hparams["sample_rate"],
        "version": hparams["version"],
        "mixture": hparams["mixture"],
        "train_set": hparams["train_set"],
        # Bad files leave their mixtures out (prep_report.csv); strict: stop.
        "strict_prep": hparams["strict_prep"],
    }
    sb.utils.distributed.run_on_main(
        prepare_librimix, kwargs={**prep_kwargs, "skip_prep": hparams["skip_prep"]}
    )
    csv_files = prepare_librimix(**prep_kwargs, skip_prep=True)
    datasets = build_datasets(hparams, csv_files)

    # Training and test; the mining policies are hparams read by the Brain.
    separator = SeparationBrain(
        modules=hparams["modules"],
        opt_class=hparams["optimizer"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
    )
    separator.fit(
        separator.hparams.epoch_counter,
        datasets["train"],
        datasets["valid"],
        train_loader_kwargs=hparams["dataloader_opts"],
        valid_loader_kwargs=dict(hparams["eval_dataloader_opts"]),
    )
    separator.evaluate(
        datasets["test"],
        min_key="si-snr",
        test_loader_kwargs=dict(hparams["eval_dataloader_opts"]),
    )


if __name__ == "__main__":
    # A bad setting ends the run with one line naming the option, exit status 2.
    with exit_on_config_error(sys.argv[1:]):
        main(sys.argv[1:])
    shutdown()  # under torchrun: free the Brain, then the process group
