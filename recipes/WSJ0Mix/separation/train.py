#!/usr/bin/env python3
"""Train a separation model on WSJ0-2mix / WSJ0-3mix with hard-example mining.

SpeechBrain's recipe flow; the model code (SeparationBrain), the data
pipeline and the checks are shared with the LibriMix recipe in
:mod:`hardmine.tasks.separation`, the mining policies come from the YAML file.

Usage
-----
    python train.py hparams/sepformer.yaml --data_folder /data/wsj0-mix/2speakers
    python train.py hparams/sepformer_isbl.yaml --isbl_alpha 0.5
    python train.py hparams/convtasnet.yaml --sampler isbl --reweight_mode robust
    python train.py hparams/convtasnet.yaml --num_spks 3 \\
        --data_folder /data/wsj0-mix/3speakers
    python train.py hparams/sepformer.yaml --N_encoder_out 64 --intra_layers 1 \\
        --inter_layers 1 --dual_layers 2 --nhead 4 --d_ffn 256 --chunk_size 100
    torchrun --nproc_per_node 2 train.py hparams/sepformer.yaml \\
        --device cpu --distributed_backend gloo

Without ``--data_folder`` the embedded default set is used (generated once
and cached; see ``data_folder`` in the YAML files).
"""

import sys

# Before SpeechBrain: hardmine.cli quiets SpeechBrain's torchvision notice.
from hardmine.cli import exit_on_config_error
from hardmine.distributed import shutdown

# isort: split
import speechbrain as sb
from hyperpyyaml import load_hyperpyyaml
from prepare_wsj0mix import prepare_wsjmix

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
        "datapath": resolve_data_folder(hparams),
        "savepath": hparams["save_folder"],
        "n_spks": hparams["num_spks"],
        "fs": hparams["sample_rate"],
        "version": hparams["version"],
        # Bad files leave their mixtures out (prep_report.csv); strict: stop.
        "strict_prep": hparams["strict_prep"],
    }
    sb.utils.distributed.run_on_main(
        prepare_wsjmix, kwargs={**prep_kwargs, "skip_prep": hparams["skip_prep"]}
    )
    csv_files = prepare_wsjmix(**prep_kwargs, skip_prep=True)
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
