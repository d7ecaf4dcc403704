"""Audio loading that reports broken files instead of crashing training.

A single unreadable, empty, NaN-filled, silent or clipped file should not stop
a 200-epoch run, nor silently poison it: :func:`load_checked` always returns a
finite signal that the data pipeline can batch, together with a short problem
label (or ``None``). The data pipeline passes the label on as
``audio_problem`` and :class:`hardmine.brain.HardMiningBrain` drops the example
from the loss and reports it.

Example
-------
>>> import os, tempfile
>>> import numpy as np, soundfile as sf
>>> with tempfile.TemporaryDirectory() as tmp:
...     path = os.path.join(tmp, "ok.wav")
...     sf.write(path, 0.1 * np.sin(np.arange(800) / 5.0), 8000)
...     signal, problem = load_checked(path, expected_sr=8000)
...     missing, why = load_checked(os.path.join(tmp, "nope.wav"), length=100)
>>> signal.shape, problem
(torch.Size([800]), None)
>>> missing.shape, why
(torch.Size([100]), 'unreadable')
"""

import numpy as np
import soundfile as sf
import torch

__all__ = ["load_checked", "PROBLEMS", "CLIP_LEVEL", "CLIP_FRACTION"]

#: Every label :func:`load_checked` can return, most severe first.
PROBLEMS = (
    "unreadable",
    "zero-length",
    "non-finite",
    "wrong-sample-rate",
    "silent",
    "clipped",
)
#: Samples at or above this magnitude count as being at full scale.
CLIP_LEVEL = 0.999
#: A file is "clipped" when more than this fraction of its samples (and at
#: least ``CLIP_MIN_SAMPLES``) are at full scale.
CLIP_FRACTION = 0.001
CLIP_MIN_SAMPLES = 8
_FALLBACK_SR = 16000


def _zeros(length, expected_sr):
    n = length if length is not None else (expected_sr or _FALLBACK_SR)
    return torch.zeros(int(n), dtype=torch.float32)


def load_checked(path, expected_sr=None, min_rms=1e-5, length=None):
    """Read a mono signal with soundfile and say what, if anything, is wrong.

    Arguments
    ---------
    path : str
        Audio file.
    expected_sr : int, optional
        Required sample rate; another rate gives ``"wrong-sample-rate"`` (the
        signal is returned as read, not resampled).
    min_rms : float
        Below this RMS the file is ``"silent"``.
    length : int, optional
        Length of the all-zero signal returned when the file is unreadable or
        empty (default: one second at ``expected_sr``, or 16000 samples).

    Returns
    -------
    signal : torch.Tensor
        1-D float32, always finite. Multi-channel files are averaged to mono;
        non-finite samples are replaced by zeros.
    problem : str or None
        One of :data:`PROBLEMS`, or ``None`` when the audio looks fine. When
        several apply, the first in :data:`PROBLEMS` order is reported.
    """
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, OSError, ValueError, TypeError, sf.LibsndfileError):
        return _zeros(length, expected_sr), "unreadable"
    if data.shape[0] == 0:
        return _zeros(length, expected_sr), "zero-length"
    finite = np.isfinite(data)
    problem = None
    if not finite.all():
        data = np.where(finite, data, np.float32(0.0))
        problem = "non-finite"
    signal = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    signal = np.ascontiguousarray(signal, dtype=np.float32)
    if problem is None:
        problem = _quality_problem(signal, sr, expected_sr, min_rms)
    return torch.from_numpy(signal), problem


def _quality_problem(signal, sr, expected_sr, min_rms):
    if expected_sr is not None and sr != expected_sr:
        return "wrong-sample-rate"
    if np.sqrt(np.mean(np.square(signal, dtype=np.float64))) < min_rms:
        return "silent"
    at_full_scale = int(np.count_nonzero(np.abs(signal) >= CLIP_LEVEL))
    if at_full_scale >= max(CLIP_MIN_SAMPLES, CLIP_FRACTION * signal.shape[0]):
        return "clipped"
    return None
