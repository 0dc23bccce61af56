"""The per-shard jobs of stages 2 and 3: resample one wav.scp shard to FLAC, fbank one shard to a kaldiio ark
(or, for features computed on the fly, frame counts and partial CMVN stats only).

``utils/resample_data_dir.sh`` and ``utils/make_fbank.sh`` run them through ``justkit.bin.resample``
and ``justkit.bin.fbank``, one job per shard; ``justkit.datadir.jobs`` merges the shards' tables.
"""
from __future__ import annotations

import logging
import zlib
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import kaldiio
import numpy as np

from justkit.datadir.badutts import BadUtt
from justkit.datadir.tables import read_table
from justkit.errors import JustkitError
from justkit.fileio import StagedFiles, atomic_open, is_pipe
from justkit.frontend.audio import AudioError, audio_info, load_audio, write_flac
from justkit.frontend.cmvn import add_to_stats
from justkit.frontend.fbank import STORAGE_FORMATS, FbankConfig, FbankError, compute_fbank, num_frames
from justkit.frontend.resample import output_length, resample
from justkit.progress import ProgressLog

log = logging.getLogger(__name__)

MAX_UTT_ID_LEN = 200


def _load_or_record(src: str, utt: str, bad: List[BadUtt], prog: ProgressLog):
    """(samples, rate) of ``src``, or None after recording it as a bad utterance."""
    try:
        return load_audio(src, utt)
    except AudioError as e:
        log.warning("bad utterance: %s", e)
        bad.append(BadUtt(utt, src, e.reason))
        prog.update()
        return None


def flac_path(audio_dir: str, utt: str) -> str:
    """``<audio_dir>/<2 hex digits of crc32(utt)>/<utt>.flac``: 256 buckets keep directories small
    whatever the corpus size, and the path depends only on the id (not on --nj)."""
    return f"{audio_dir}/{zlib.crc32(utt.encode('utf-8')) & 0xFF:02x}/{utt}.flac"


def _id_problem(utt: str) -> Optional[str]:
    if "/" in utt or "\\" in utt or utt.startswith(".") or "\0" in utt:
        return "utterance id cannot be used as a file name ('/', '\\', NUL or leading '.')"
    if len(utt.encode("utf-8")) > MAX_UTT_ID_LEN:
        return f"utterance id longer than {MAX_UTT_ID_LEN} bytes"
    return None


def is_complete(out: str, src: str, utt: str, fs: int) -> Optional[int]:
    """Number of samples of ``out`` if it is a finished resampling of ``src``, else None.

    Finished = newer than ``src``, mono, at ``fs``, with the length the length rule gives
    (this also catches a changed source or --fs). A file appears under its name only complete
    and with its data on disk (``resample_shard`` stages it and renames it after a filesystem
    sync), so one found there, even after a machine crash, can be trusted.
    """
    try:
        if Path(out).stat().st_mtime < Path(src).stat().st_mtime:
            return None
    except OSError:
        return None
    try:
        n_out, sr_out, ch_out = audio_info(out, utt)
        n_in, sr_in, _ = audio_info(src, utt)
    except AudioError:
        return None
    if sr_out == fs and ch_out == 1 and n_out == output_length(n_in, sr_in, fs):
        return n_out
    return None


def resample_shard(wav_scp: Path, audio_dir: str, fs: int, progress_every: float = 10.0,
                   commit_every: int = 1000, counts: Optional[Dict[str, int]] = None
                   ) -> Tuple[Dict[str, str], Dict[str, str], List[BadUtt]]:
    """Resample every utterance of ``wav_scp``; returns (wav.scp, utt2dur, bad utterances).

    An output that already exists and has the expected length is kept (re-runs skip
    finished work); ``counts``, when given, gets how many were ``resampled``, ``skipped``
    (already done) and ``bad``. New files are written under temporary names without an fsync each and
    renamed in groups of ``commit_every`` after one filesystem sync (``StagedFiles``): all
    are on disk under their names when this returns (before the job writes its completion
    record), and a killed job loses at most one group.
    """
    staged = StagedFiles(commit_every)
    try:
        out = _resample_all(wav_scp, audio_dir, fs, progress_every, staged, counts if counts is not None else {})
    except BaseException:
        staged.discard()
        raise
    staged.commit()
    return out


def _resample_all(wav_scp: Path, audio_dir: str, fs: int, progress_every: float, staged: StagedFiles,
                  counts: Dict[str, int]) -> Tuple[Dict[str, str], Dict[str, str], List[BadUtt]]:
    table = read_table(wav_scp)
    wav: Dict[str, str] = {}
    dur: Dict[str, str] = {}
    bad: List[BadUtt] = []
    skipped = clipped_utts = 0
    prog = ProgressLog(f"resample {wav_scp.name}", len(table), progress_every, log)
    for utt, src in table.items():
        problem = _id_problem(utt)
        if problem is None and is_pipe(src):
            problem = "piped commands in wav.scp are not supported; give a file path"
        if problem is not None:
            log.warning("%s: utterance %s: %s", wav_scp, utt, problem)
            bad.append(BadUtt(utt, src, problem))
            prog.update()
            continue
        out = flac_path(audio_dir, utt)
        n = is_complete(out, src, utt, fs)
        if n is not None:
            skipped += 1
        else:
            loaded = _load_or_record(src, utt, bad, prog)
            if loaded is None:
                continue
            x, sr = loaded
            try:
                y = resample(x, sr, fs)
                with staged.open(out) as f:
                    if write_flac(f, y, fs, name=out):
                        clipped_utts += 1
            except Exception as e:  # not the audio's fault (disk full, ...): stop, naming the utterance
                raise RuntimeError(f"{wav_scp}: utterance {utt}: resampling {src} -> {out} failed: {e}") from e
            n = len(y)
        wav[utt] = out
        dur[utt] = f"{n / fs:.4f}"
        prog.update(1, n / fs)
    prog.finish()
    log.info("%s: %d resampled, %d already done (skipped), %d bad, %d with clipped samples",
             wav_scp, len(wav) - skipped, skipped, len(bad), clipped_utts)
    counts.update(resampled=len(wav) - skipped, skipped=skipped, bad=len(bad))
    return wav, dur, bad


class SampleRateMismatch(JustkitError):
    """Audio at a rate the config does not expect: a pipeline error, not one bad utterance."""


def fbank_shard(wav_scp: Path, ark: str, cfg: FbankConfig, progress_every: float = 10.0
                ) -> Tuple[Dict[str, str], Dict[str, str], List[BadUtt]]:
    """Write features of every utterance of ``wav_scp`` to ``ark`` (under a temp name until done).

    Returns (feats.scp entries pointing into ``ark``, utt2num_frames, bad utterances).
    Missing/corrupt audio and audio shorter than one frame are bad utterances; audio at
    another sample rate stops the job (SampleRateMismatch).
    """
    table = read_table(wav_scp)
    scp: Dict[str, str] = {}
    frames: Dict[str, str] = {}
    bad: List[BadUtt] = []
    prog = ProgressLog(f"fbank {wav_scp.name}", len(table), progress_every, log)
    with atomic_open(ark, "wb", encoding=None) as f:
        for utt, src in table.items():
            loaded = _load_or_record(src, utt, bad, prog)
            if loaded is None:
                continue
            x, sr = loaded
            if sr != int(cfg.sample_frequency):
                raise SampleRateMismatch(
                    f"{src}: utterance {utt}: {sr} Hz audio, but the fbank config expects "
                    f"{cfg.sample_frequency:g} Hz (run stage 2, or set sample_frequency)")
            try:
                feats = compute_fbank(x, cfg, sr, utt)
            except FbankError as e:
                log.warning("bad utterance: %s: %s", src, e)
                bad.append(BadUtt(utt, src, e.reason))
                prog.update()
                continue
            try:
                # kaldiio's scp offset points just past "<utt> " in the ark.
                offset = f.tell() + len(utt.encode("utf-8")) + 1
                kaldiio.save_ark(f, {utt: feats}, compression_method=STORAGE_FORMATS[cfg.storage])
            except Exception as e:  # disk full etc.: stop, naming the utterance
                raise RuntimeError(f"{wav_scp}: utterance {utt}: writing features to {ark} failed: {e}") from e
            scp[utt] = f"{ark}:{offset}"
            frames[utt] = str(feats.shape[0])
            prog.update(1, len(x) / sr)
    prog.finish()
    log.info("%s: %d utterances -> %s, %d bad", wav_scp, len(scp), ark, len(bad))
    return scp, frames, bad


def in_cmvn_sample(utt: str, fraction: float, seed: int = 0) -> bool:
    """Whether ``utt`` is in the seeded CMVN sample of share ``fraction`` (1: every utterance).

    Decided by a hash of the seed and the id alone, so the sample does not depend on --nj."""
    if fraction >= 1.0:
        return True
    if fraction <= 0.0:
        return False
    return zlib.crc32(f"{seed} {utt}".encode("utf-8")) < fraction * 2**32


def fly_samples(src: str, utt: str, cfg: FbankConfig) -> np.ndarray:
    """Float32 samples of one audio file at the fbank config's rate: decoded, and resampled with
    stage 2's resampler when the file has another rate (48 kHz opus straight from stage 1).
    Raises AudioError naming the file and utterance."""
    x, sr = load_audio(src, utt)
    fs = int(cfg.sample_frequency)
    return resample(x, sr, fs) if sr != fs else x


def fly_features(src: str, utt: str, cfg: FbankConfig) -> np.ndarray:
    """fbank of one audio file as the on-the-fly loader computes it: :func:`fly_samples`, then Kaldi
    fbank (dither seeded by ``utt``). Raises AudioError naming the file and utterance."""
    x = fly_samples(src, utt, cfg)
    try:
        return compute_fbank(x, cfg, int(cfg.sample_frequency), utt)
    except FbankError as e:
        raise AudioError(src, utt, e.reason) from None


def raw_shard(wav_scp: Path, cfg: FbankConfig, cmvn_fraction: float = 0.0, cmvn_seed: int = 0,
              progress_every: float = 10.0) -> Tuple[Dict[str, str], List[BadUtt], Optional[np.ndarray]]:
    """Stage 3 for features computed on the fly: no features are stored.

    Returns (utt2num_frames, bad utterances, partial CMVN stats ``[2, D+1]`` or None when
    ``cmvn_fraction`` is 0). The frame count comes from the audio header (FLAC: exact sample
    count; Ogg is decoded, its header length is not exact) through the fbank framing
    (:func:`justkit.frontend.fbank.num_frames`, after the resampling length rule when the
    file's rate differs from the config's). Utterances in the CMVN sample
    (:func:`in_cmvn_sample`) are decoded and their fbank computed, exactly as the loader will.
    Missing/corrupt audio, piped entries and audio shorter than one frame are bad utterances.
    """
    table = read_table(wav_scp)
    frames: Dict[str, str] = {}
    bad: List[BadUtt] = []
    stats = np.zeros((2, cfg.dim + 1), dtype=np.float64) if cmvn_fraction > 0 else None
    fs = int(cfg.sample_frequency)
    prog = ProgressLog(f"frames {wav_scp.name}", len(table), progress_every, log)
    for utt, src in table.items():
        if is_pipe(src):
            problem = "piped commands in wav.scp are not supported; give a file path"
            log.warning("%s: utterance %s: %s", wav_scp, utt, problem)
            bad.append(BadUtt(utt, src, problem))
            prog.update()
            continue
        try:
            if stats is not None and in_cmvn_sample(utt, cmvn_fraction, cmvn_seed):
                feats = fly_features(src, utt, cfg)
                add_to_stats(stats, feats)
                n = feats.shape[0]
            else:
                if Path(src).suffix.lower() in (".opus", ".ogg", ".oga"):
                    x, sr = load_audio(src, utt)
                    samples = len(x)
                else:
                    samples, sr, _ = audio_info(src, utt)
                n = num_frames(output_length(samples, sr, fs) if sr != fs else samples, cfg)
                if n <= 0:
                    raise AudioError(src, utt, f"shorter than one {cfg.frame_length_ms:g} ms frame")
        except AudioError as e:
            log.warning("bad utterance: %s", e)
            bad.append(BadUtt(utt, src, e.reason))
            prog.update()
            continue
        frames[utt] = str(n)
        prog.update(1, n * cfg.frame_shift_ms / 1000)
    prog.finish()
    log.info("%s: %d utterances counted, %d bad%s", wav_scp, len(frames), len(bad),
             f", CMVN stats over {int(stats[0, -1])} frames" if stats is not None else "")
    return frames, bad, stats
