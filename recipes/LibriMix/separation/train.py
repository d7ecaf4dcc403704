#!/usr/bin/env python3
"""Train a separation model on Libri2Mix / Libri3Mix with hard-example mining.

The model, data pipeline and mining hooks live in :mod:`hardmine.separation`;
this script only wires them to the LibriMix preparation.

Usage
-----
    python train.py hparams/sepformer.yaml --data_folder /data/Libri2Mix
    python train.py hparams/sepformer_isbl.yaml --data_folder /data/Libri2Mix \\
        --isbl_alpha 0.5 --mixture clean
    python train.py hparams/convtasnet.yaml --model_size tiny --num_spks 3 \\
        --data_folder /data/Libri3Mix
    torchrun --nproc_per_node 2 train.py hparams/sepformer.yaml \\
        --data_folder /data/Libri2Mix --device cpu --distributed_backend gloo
"""

import sys

import speechbrain as sb
from hyperpyyaml import load_hyperpyyaml
from prepare_librimix import prepare_librimix

from hardmine import separation


def main(argv):
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    overrides = separation.apply_model_size(hparams_file, overrides)
    sb.utils.distributed.ddp_init_group(run_opts)
    with open(hparams_file, encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    separation.check_hparams(hparams)

    sb.create_experiment_directory(
        experiment_directory=hparams["output_folder"],
        hyperparams_to_save=hparams_file,
        overrides=overrides,
    )

    data_folder = separation.resolve_data_folder(hparams, embedded_default=False)
    prep_kwargs = {
        "datapath": data_folder,
        "savepath": hparams["save_folder"],
        "n_spks": hparams["num_spks"],
        "fs": hparams["sample_rate"],
        "version": hparams["version"],
        "mixture": hparams["mixture"],
        "train_set": hparams["train_set"],
    }
    sb.utils.distributed.run_on_main(
        prepare_librimix, kwargs={**prep_kwargs, "skip_prep": hparams["skip_prep"]}
    )
    # Every rank reads the lists the main process wrote.
    csv_files = prepare_librimix(**prep_kwargs, skip_prep=True)
    datasets = separation.build_datasets(hparams, csv_files)

    brain = separation.SeparationBrain(
        modules=hparams["modules"],
        opt_class=hparams["optimizer"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
    )
    brain.fit(
        brain.hparams.epoch_counter,
        datasets["train"],
        datasets["valid"],
        train_loader_kwargs=hparams["dataloader_opts"],
        valid_loader_kwargs=dict(hparams["eval_dataloader_opts"]),
    )
    brain.evaluate(
        datasets["test"],
        min_key="si-snr",
        test_loader_kwargs=dict(hparams["eval_dataloader_opts"]),
    )


if __name__ == "__main__":
    main(sys.argv[1:])
