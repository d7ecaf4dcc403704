#!/usr/bin/env python3
"""Train a separation model on WSJ0-2mix / WSJ0-3mix with hard-example mining.

The model, data pipeline and mining hooks live in :mod:`hardmine.tasks.separation`;
this script only wires them to the WSJ0-mix preparation.

Usage
-----
    python train.py hparams/sepformer.yaml --data_folder /data/wsj0-mix/2speakers
    python train.py hparams/sepformer_isbl.yaml --isbl_alpha 0.5
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

# isort: split
from prepare_wsj0mix import prepare_wsjmix

from hardmine.tasks import separation


def main(argv):
    """Prepare the data, train, then test (see hardmine.tasks.separation.run_recipe)."""
    separation.run_recipe(argv, prepare_wsjmix)


if __name__ == "__main__":
    # A bad setting ends the run with one line naming the option, exit status 2.
    with exit_on_config_error(sys.argv[1:]):
        main(sys.argv[1:])
