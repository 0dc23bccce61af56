"""Audio file I/O (soundfile: Ogg/Opus, FLAC, WAV) with errors that name the file and utterance."""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Optional, Tuple, Union

import numpy as np
import soundfile as sf

from justkit.fileio import atomic_open
from justkit.errors import JustkitError

PathLike = Union[str, os.PathLike]

# Fewer samples than this is never speech and breaks resampling/framing downstream.
MIN_SAMPLES = 2
MULTICHANNEL_POLICIES = ("average", "error")


class AudioError(JustkitError, ValueError):
    """An audio file is missing, unreadable or unusable; the message names the file and utterance."""

    def __init__(self, path: PathLike, utt: Optional[str], reason: str) -> None:
        self.path = str(path)
        self.utt = utt
        self.reason = reason
        who = f"utterance {utt}: " if utt is not None else ""
        super().__init__(f"{path}: {who}{reason}")


def _check_file(path: Path, utt: Optional[str]) -> None:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise AudioError(path, utt, "file not found") from None
    except OSError as e:
        raise AudioError(path, utt, f"cannot stat file ({e.strerror})") from None
    # Only regular files can be checked for size; FIFOs and devices are left to soundfile.
    if stat.S_ISDIR(st.st_mode):
        raise AudioError(path, utt, "is a directory, not an audio file")
    if stat.S_ISREG(st.st_mode) and st.st_size == 0:
        raise AudioError(path, utt, "empty file (0 bytes)")


def audio_info(path: PathLike, utt: Optional[str] = None) -> Tuple[int, int, int]:
    """``(num_frames, sample_rate, channels)`` from the header; raises AudioError like load_audio."""
    path = Path(path)
    _check_file(path, utt)
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, OSError) as e:
        raise AudioError(path, utt, f"unreadable or corrupt audio ({e})") from None
    return int(info.frames), int(info.samplerate), int(info.channels)


def load_audio(
    path: PathLike,
    utt: Optional[str] = None,
    multichannel: str = "average",
    min_samples: int = MIN_SAMPLES,
) -> Tuple[np.ndarray, int]:
    """Read ``path`` as float32 mono samples in [-1, 1] and return ``(samples, sample_rate)``.

    Multi-channel audio is averaged to mono by default (``multichannel="average"``; MLS
    is mono, so this only matters for other corpora); ``multichannel="error"`` refuses it.
    Raises AudioError naming the file and ``utt`` for a missing, empty, unreadable or
    truncated file, fewer than ``min_samples`` samples, or non-finite sample values.
    """
    if multichannel not in MULTICHANNEL_POLICIES:
        raise ValueError(f"multichannel must be one of {MULTICHANNEL_POLICIES}, got {multichannel!r}")
    path = Path(path)
    _check_file(path, utt)
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as e:
        raise AudioError(path, utt, f"unreadable or corrupt audio ({e})") from None
    num, channels = data.shape
    if channels > 1:
        if multichannel == "error":
            raise AudioError(path, utt, f"has {channels} channels; expected mono")
        samples = data.mean(axis=1, dtype=np.float32)
    else:
        samples = data[:, 0]
    if num == 0:
        raise AudioError(path, utt, "no audio samples (0-length stream)")
    if num < min_samples:
        raise AudioError(path, utt, f"only {num} sample(s); need at least {min_samples}")
    if not np.isfinite(samples).all():
        raise AudioError(path, utt, "contains NaN or infinite sample values")
    return np.ascontiguousarray(samples, dtype=np.float32), int(sr)


def save_flac(path: PathLike, samples: np.ndarray, sample_rate: int, subtype: str = "PCM_16") -> int:
    """Write mono ``samples`` (float in [-1, 1]) as FLAC atomically; return the clipped-sample count.

    Values outside [-1, 1] are clipped first: libsndfile's float->int conversion would
    otherwise wrap them around.
    """
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim != 1:
        raise ValueError(f"{path}: save_flac expects mono 1-D samples, got shape {samples.shape}")
    clipped = int(np.count_nonzero(np.abs(samples) > 1.0))
    if clipped:
        samples = np.clip(samples, -1.0, 1.0)
    with atomic_open(path, "wb", encoding=None) as f:
        sf.write(f, samples, int(sample_rate), format="FLAC", subtype=subtype)
    return clipped
