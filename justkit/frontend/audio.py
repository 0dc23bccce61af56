"""Audio file I/O (soundfile: Ogg/Opus, FLAC, WAV) with errors that name the file and utterance."""
from __future__ import annotations

import os
import stat
import struct
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


OGG_TAIL_BYTES = 1 << 16  # the last page of an Ogg stream is at most ~64 KB
OPUS_RATE = 48000


def _ogg_end(path: Path) -> Tuple[bool, int, Optional[int]]:
    """(end-of-stream flag on the last page, its granule position, Opus pre-skip or None)."""
    with open(path, "rb") as f:
        head = f.read(4096)
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - OGG_TAIL_BYTES))
        tail = f.read()
    i = tail.rfind(b"OggS")
    if i < 0 or len(tail) < i + 27:
        return False, -1, None
    nseg = tail[i + 26]
    body = sum(tail[i + 27 : i + 27 + nseg])
    if len(tail) - i != 27 + nseg + body or len(tail) < i + 27 + nseg:
        return False, -1, None  # the last page is cut short (or garbage follows it)
    flags = tail[i + 5]
    granule = struct.unpack("<q", tail[i + 6 : i + 14])[0]
    j = head.find(b"OpusHead")
    preskip = struct.unpack("<H", head[j + 10 : j + 12])[0] if j >= 0 and len(head) >= j + 12 else None
    return bool(flags & 0x04), granule, preskip


def check_ogg_complete(path: PathLike, utt: Optional[str] = None, samples: Optional[int] = None,
                       sample_rate: Optional[int] = None) -> None:
    """Refuse a truncated Ogg stream: one whose last page lacks the end-of-stream flag, or (Opus)
    whose decoded length falls short of the length the last page's granule position promises.

    libsndfile decodes a cut Ogg/Opus file without complaint, as shorter audio, which would then
    be trained against the full transcript (a truncated FLAC, by contrast, fails to decode).
    """
    path = Path(path)
    eos, granule, preskip = _ogg_end(path)
    if not eos:
        raise AudioError(path, utt, "truncated Ogg stream (no complete last page marked end-of-stream)")
    if samples is not None and preskip is not None and granule >= 0:
        expected = granule - preskip  # samples at 48 kHz
        got = samples * OPUS_RATE / (sample_rate or OPUS_RATE)
        if got < expected - OPUS_RATE * 0.02:
            raise AudioError(path, utt, f"truncated Opus stream: {got / OPUS_RATE:.3f} s decoded, "
                                        f"{expected / OPUS_RATE:.3f} s announced by its last page")


def _is_ogg(path: Path) -> bool:
    return path.suffix.lower() in (".opus", ".ogg", ".oga")


def audio_info(path: PathLike, utt: Optional[str] = None) -> Tuple[int, int, int]:
    """``(num_frames, sample_rate, channels)`` from the header; raises AudioError like load_audio."""
    path = Path(path)
    _check_file(path, utt)
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, OSError) as e:
        raise AudioError(path, utt, f"unreadable or corrupt audio ({e})") from None
    if _is_ogg(path):
        check_ogg_complete(path, utt)
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
    if _is_ogg(path):
        check_ogg_complete(path, utt, num, int(sr))
    return np.ascontiguousarray(samples, dtype=np.float32), int(sr)


def save_flac(path: PathLike, samples: np.ndarray, sample_rate: int, subtype: str = "PCM_16",
              fsync: bool = True) -> int:
    """Write mono ``samples`` (float in [-1, 1]) as FLAC atomically; return the clipped-sample count.

    Values outside [-1, 1] are clipped first: libsndfile's float->int conversion would
    otherwise wrap them around. ``fsync=False``: renamed into place without waiting for the
    disk (see ``atomic_open``); many files are better written through ``write_flac`` into
    ``justkit.fileio.StagedFiles``.
    """
    with atomic_open(path, "wb", encoding=None, fsync=fsync) as f:
        return write_flac(f, samples, sample_rate, subtype, path)


def write_flac(f, samples: np.ndarray, sample_rate: int, subtype: str = "PCM_16", name: PathLike = "FLAC") -> int:
    """Write mono ``samples`` as FLAC to the open binary file ``f``; return the clipped-sample count."""
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim != 1:
        raise ValueError(f"{name}: save_flac expects mono 1-D samples, got shape {samples.shape}")
    clipped = int(np.count_nonzero(np.abs(samples) > 1.0))
    if clipped:
        samples = np.clip(samples, -1.0, 1.0)
    sf.write(f, samples, int(sample_rate), format="FLAC", subtype=subtype)
    return clipped
