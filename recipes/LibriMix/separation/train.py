#!/usr/bin/env python3
"""Train a separation model on Libri2Mix / Libri3Mix with hard-example mining.

The model, data pipeline and mining hooks live in :mod:`hardmine.tasks.separation`;
this script only wires them to the LibriMix preparation.

Usage
-----
    python train.py hparams/sepformer.yaml --data_folder /data/Libri2Mix
    python train.py hparams/sepformer_isbl.yaml --data_folder /data/Libri2Mix \\
        --isbl_alpha 0.5 --mixture clean
    python train.py hparams/convtasnet.yaml --num_spks 3 --data_folder /data/Libri3Mix
    torchrun --nproc_per_node 2 train.py hparams/sepformer.yaml \\
        --data_folder /data/Libri2Mix --device cpu --distributed_backend gloo
"""

import sys

# Before SpeechBrain: hardmine.cli quiets SpeechBrain's torchvision notice.
from hardmine.cli import exit_on_config_error

# isort: split
from prepare_librimix import prepare_librimix

from hardmine.tasks import separation


def main(argv):
    """Prepare the data, train, then test (see hardmine.tasks.separation.run_recipe)."""
    separation.run_recipe(
        argv,
        prepare_librimix,
        prep_fields=("mixture", "train_set"),
        embedded_default=False,
    )


if __name__ == "__main__":
    # A bad setting ends the run with one line naming the option, exit status 2.
    with exit_on_config_error(sys.argv[1:]):
        main(sys.argv[1:])
