"""A Checkpointer whose checkpoints exist only once they are complete.

SpeechBrain's Checkpointer writes a checkpoint's meta file first and the
saved objects after it, so a crash while saving leaves a newest checkpoint
that looks valid but holds missing or truncated files, and resuming from it
fails. :class:`AtomicCheckpointer` writes a completion marker (flushed to
disk) after the last object and lists only marked checkpoints; an unmarked
directory from an interrupted save is ignored, so the previous checkpoint is
the one recovered. Old checkpoints are deleted only after the new one is
complete, as SpeechBrain already does.
"""

import logging
import os

from speechbrain.utils.checkpoints import Checkpointer
from speechbrain.utils.distributed import if_main_process

__all__ = ["AtomicCheckpointer", "COMPLETE_MARKER"]

logger = logging.getLogger(__name__)

COMPLETE_MARKER = "COMPLETE"


class AtomicCheckpointer(Checkpointer):
    """Drop-in replacement for ``speechbrain.utils.checkpoints.Checkpointer``.

    Example
    -------
    >>> import tempfile, torch
    >>> folder = tempfile.mkdtemp()
    >>> ckpt = AtomicCheckpointer(folder, recoverables={"layer": torch.nn.Linear(2, 2)})
    >>> saved = ckpt.save_checkpoint()
    >>> (saved.path / COMPLETE_MARKER).exists()
    True
    >>> (saved.path / COMPLETE_MARKER).unlink()  # as if the save had crashed
    >>> ckpt.list_checkpoints()
    []
    """

    def save_checkpoint(self, *args, **kwargs):
        """Save as SpeechBrain does, then mark the checkpoint complete."""
        checkpoint = super().save_checkpoint(*args, **kwargs)
        if checkpoint is not None and if_main_process():
            marker = checkpoint.path / COMPLETE_MARKER
            with open(marker, "w", encoding="utf-8") as f:
                f.write("ok\n")
                f.flush()
                os.fsync(f.fileno())
        return checkpoint

    def _list_checkpoint_dirs(self):
        dirs = super()._list_checkpoint_dirs()
        complete = [d for d in dirs if (d / COMPLETE_MARKER).exists()]
        reported = self.__dict__.setdefault("_reported_incomplete", set())
        for d in sorted(set(dirs) - set(complete) - reported):
            reported.add(d)
            logger.warning("Ignoring incomplete checkpoint %s (interrupted save)", d)
        return complete
