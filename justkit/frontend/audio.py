"""Audio file I/O (soundfile: Ogg/Opus, FLAC, WAV) with errors that name the file and utterance."""
from __future__ import annotations

import logging
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
log = logging.getLogger(__name__)

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


def _check_file(path: Path, utt: Optional[str]) -> os.stat_result:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise AudioError(path, utt, "file not found") from None
    except OSError as e:
        raise AudioError(path, utt, f"cannot stat file ({e.strerror})") from None
    if stat.S_ISDIR(st.st_mode):
        raise AudioError(path, utt, "is a directory, not an audio file")
    if stat.S_ISFIFO(st.st_mode) and os.environ.get("JUSTKIT_ALLOW_PIPES") == "1":
        return st  # a named pipe, allowed with pipes (docs/trust.md)
    if not stat.S_ISREG(st.st_mode):  # a FIFO blocks forever, /dev/zero never ends
        raise AudioError(path, utt, "not a regular file (a FIFO or device); justkit reads regular files only "
                                    "(JUSTKIT_ALLOW_PIPES=1 allows FIFOs)")
    if st.st_size == 0:
        raise AudioError(path, utt, "empty file (0 bytes)")
    return st


# What a header may claim before anything is decoded (docs/trust.md): a FLAC header saying
# 2^36 samples would make soundfile allocate 256 GiB. MAX_SAMPLES (frames x channels) is 2 GiB
# of float32: 9.3 hours of 16 kHz mono, 3.1 hours at 48 kHz. No codec stores more than
# MAX_SAMPLES_PER_BYTE samples per byte of file (FLAC constant blocks, Opus DTX: a few hundred).
MAX_SAMPLES = 1 << 29
MAX_SAMPLES_PER_BYTE = 8192
MIN_RATE, MAX_RATE = 1000, 768000


def _check_header(path: Path, utt: Optional[str], info, size: int) -> None:
    rate, frames, channels = int(info.samplerate), int(info.frames), int(info.channels)
    if not MIN_RATE <= rate <= MAX_RATE:
        raise AudioError(path, utt, f"sample rate {rate} Hz is outside [{MIN_RATE}, {MAX_RATE}]")
    if channels < 1 or channels > 64:
        raise AudioError(path, utt, f"{channels} channels (at most 64)")
    total = frames * channels
    if total > MAX_SAMPLES:
        raise AudioError(path, utt, f"its header claims {frames} frames x {channels} channels, more than the "
                                    f"{MAX_SAMPLES} samples justkit reads from one file (split it first)")
    if size and total > size * MAX_SAMPLES_PER_BYTE:
        raise AudioError(path, utt, f"its header claims {frames} frames x {channels} channels, impossible in "
                                    f"{size} bytes (corrupt header)")


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


def _wav_declared_frames(path: Path) -> Optional[int]:
    """Frames a RIFF/WAVE file's ``data`` chunk announces, or None (another format, or a streaming
    header with no size). libsndfile counts what the file holds instead."""
    import struct

    try:
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            align = None
            for _ in range(64):  # chunks before "data": fmt, LIST, fact, ...
                hdr = f.read(8)
                if len(hdr) < 8:
                    return None
                cid, size = hdr[:4], struct.unpack("<I", hdr[4:])[0]
                if cid == b"fmt ":
                    fmt = f.read(size + (size & 1))
                    if len(fmt) < 14:
                        return None
                    align = struct.unpack("<H", fmt[12:14])[0]
                elif cid == b"data":
                    if not align or size in (0, 0xFFFFFFFF):
                        return None
                    return size // align
                else:
                    f.seek(size + (size & 1), os.SEEK_CUR)
    except OSError:
        return None
    return None


def audio_info(path: PathLike, utt: Optional[str] = None) -> Tuple[int, int, int]:
    """``(num_frames, sample_rate, channels)`` from the header; raises AudioError like load_audio."""
    path = Path(path)
    st = _check_file(path, utt)
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, OSError) as e:
        raise AudioError(path, utt, f"unreadable or corrupt audio ({e})") from None
    _check_header(path, utt, info, st.st_size)
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
    st = _check_file(path, utt)
    try:
        with sf.SoundFile(str(path)) as f:
            _check_header(path, utt, f, st.st_size)  # before anything is allocated for the samples
            data = f.read(dtype="float32", always_2d=True)
            sr = f.samplerate
    except (sf.LibsndfileError, RuntimeError, OSError) as e:
        raise AudioError(path, utt, f"unreadable or corrupt audio ({e})") from None
    except MemoryError:
        raise AudioError(path, utt, "too large to read into memory") from None
    num, channels = data.shape
    declared = _wav_declared_frames(path) if stat.S_ISREG(st.st_mode) else None
    if declared is not None and num < declared:  # libsndfile reads a cut WAV as shorter audio, silently
        log.warning("%s: %sread %d of the %d frames its header announces (the file is cut short?)",
                    path, f"utterance {utt}: " if utt else "", num, declared)
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
