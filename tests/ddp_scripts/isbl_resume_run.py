"""Training stand-in for the kill-and-resume test in tests/test_isbl.py.

Usage: ``python isbl_resume_run.py <checkpoint dir> <log file> <seconds per batch>``

Runs 3 epochs of 10 batches over an ISBLSampler + SaveableDataLoader, feeds
deterministic losses, saves a checkpoint after every batch and appends
``epoch position index index ...`` per batch to the log. Started again on
the same checkpoint directory, it recovers and continues.
"""

import sys
import time

from speechbrain.dataio.batch import PaddedBatch
from speechbrain.dataio.dataloader import SaveableDataLoader
from speechbrain.dataio.dataset import DynamicItemDataset
from speechbrain.utils.checkpoints import Checkpointer
from speechbrain.utils.epoch_loop import EpochCounter

from hardmine.isbl import ISBLSampler


def main(ckpt_dir, log_path, pause):
    data = {f"utt{i:04d}": {"lab": "ab"[i % 2]} for i in range(40)}
    dataset = DynamicItemDataset(data)
    dataset.set_output_keys(["id"])
    sampler = ISBLSampler(dataset, batch_size=4, pool_field="lab", alpha=1.0, seed=5)
    loader = SaveableDataLoader(
        dataset, batch_sampler=sampler, collate_fn=PaddedBatch, num_workers=0
    )
    counter = EpochCounter(3)
    checkpointer = Checkpointer(
        ckpt_dir,
        recoverables={
            "mining_sampler": sampler,
            "dataloader-TRAIN": loader,
            "counter": counter,
        },
    )
    checkpointer.recover_if_possible()
    with open(log_path, "a", encoding="utf-8") as log:
        for epoch in counter:
            sampler.set_epoch(epoch)
            start = loader._speechbrain_recovery_skip_to or 0
            for step, batch in enumerate(loader, start=start + 1):
                indices = [sampler._index_of[name] for name in batch.id]
                log.write(f"{epoch} {step} {' '.join(map(str, indices))}\n")
                log.flush()
                losses = [((i * 37 + epoch * 11) % 17) / 4.0 for i in indices]
                sampler.observe(batch.id, losses)
                time.sleep(pause)
                end = step == len(sampler)
                checkpointer.save_and_keep_only(end_of_epoch=end, num_to_keep=1)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], float(sys.argv[3]))
