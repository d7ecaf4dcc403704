#!/usr/bin/env python3
"""Train a separation model on WSJ0-2mix / WSJ0-3mix with hard-example mining.

The model, data pipeline and mining hooks live in :mod:`hardmine.separation`;
this script only wires them to the WSJ0-mix preparation.

Usage
-----
    python train.py hparams/sepformer.yaml --data_folder /data/wsj0-mix/2speakers
    python train.py hparams/sepformer_isbl.yaml --isbl_alpha 0.5
    python train.py hparams/convtasnet.yaml --model_size tiny --num_spks 3 \\
        --data_folder /data/wsj0-mix/3speakers
    torchrun --nproc_per_node 2 train.py hparams/sepformer.yaml \\
        --device cpu --distributed_backend gloo

Without ``--data_folder`` the embedded default set is used (generated once
and cached; see ``data_folder`` in the YAML files).
"""

import sys

import speechbrain as sb
from hyperpyyaml import load_hyperpyyaml
from prepare_wsj0mix import prepare_wsjmix

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

    data_folder = separation.resolve_data_folder(hparams)
    prep_kwargs = {
        "datapath": data_folder,
        "savepath": hparams["save_folder"],
        "n_spks": hparams["num_spks"],
        "fs": hparams["sample_rate"],
        "version": hparams["version"],
    }
    sb.utils.distributed.run_on_main(
        prepare_wsjmix, kwargs={**prep_kwargs, "skip_prep": hparams["skip_prep"]}
    )
    # Every rank reads the lists the main process wrote.
    csv_files = prepare_wsjmix(**prep_kwargs, skip_prep=True)
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
