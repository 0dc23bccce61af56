"""Stage 2 job: resample the audio of one wav.scp shard to FLAC at --fs (utils/resample_data_dir.sh runs it)."""
from __future__ import annotations

import argparse
import logging
import sys
import time
import zlib
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from justkit.data.audio import AudioError, audio_info, load_audio, save_flac
from justkit.data.badutts import BadUtt, write_bad_shard
from justkit.data.datadir import DataDirError, read_table, write_table
from justkit.data.resample import output_length, resample
from justkit.log import setup_logging
from justkit.progress import ProgressLog

log = logging.getLogger("resample")

MAX_UTT_ID_LEN = 200


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
    (files appear only complete, by rename; this also catches a changed source or --fs).
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


def resample_shard(wav_scp: Path, audio_dir: str, fs: int, progress_every: float = 10.0
                   ) -> Tuple[Dict[str, str], Dict[str, str], List[BadUtt]]:
    """Resample every utterance of ``wav_scp``; returns (wav.scp, utt2dur, bad utterances).

    An output that already exists and has the expected length is kept (re-runs skip
    finished work); every new file is written atomically.
    """
    table = read_table(wav_scp)
    wav: Dict[str, str] = {}
    dur: Dict[str, str] = {}
    bad: List[BadUtt] = []
    skipped = clipped_utts = 0
    prog = ProgressLog(f"resample {wav_scp.name}", len(table), progress_every, log)
    for utt, src in table.items():
        problem = _id_problem(utt)
        if problem is None and src.endswith("|"):
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
            try:
                x, sr = load_audio(src, utt)
            except AudioError as e:
                log.warning("bad utterance: %s", e)
                bad.append(BadUtt(utt, src, e.reason))
                prog.update()
                continue
            try:
                y = resample(x, sr, fs)
                if save_flac(out, y, fs):
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
    return wav, dur, bad


def main(argv: Optional[list] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--fs", type=int, default=16000, help="output sample rate (Hz)")
    p.add_argument("--audio-dir", required=True, help="where the FLAC files go (<dst>/data)")
    p.add_argument("--progress-every", type=float, default=10.0, help="seconds between progress lines")
    p.add_argument("wav_scp", type=Path, help="input shard: <utt> <audio path>")
    p.add_argument("out_prefix", help="writes <out_prefix>.utt2dur, .bad, then .scp (each atomic)")
    a = p.parse_args(argv)
    setup_logging()
    t0 = time.monotonic()
    try:
        wav, dur, bad = resample_shard(a.wav_scp, a.audio_dir.rstrip("/"), a.fs, a.progress_every)
    except DataDirError as e:
        log.error("%s", e)
        return 1
    # The .scp is what the merge step checks for; write it last.
    write_table(f"{a.out_prefix}.utt2dur", dur)
    write_bad_shard(f"{a.out_prefix}.bad", bad)
    write_table(f"{a.out_prefix}.scp", wav)
    log.info("done in %.1f s", time.monotonic() - t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
