"""Stage 3 job: fbank features of one wav.scp shard into a kaldiio ark+scp shard (utils/make_fbank.sh runs it)."""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import kaldiio
import torchaudio.compliance.kaldi  # noqa: F401  (justkit.data.fbank imports it lazily; load it before timing)

from justkit.config import ConfigError, apply_overrides
from justkit.data.audio import AudioError, load_audio
from justkit.data.badutts import BadUtt, write_bad_shard
from justkit.data.datadir import DataDirError, read_table, write_table
from justkit.data.fbank import FbankConfig, FbankError, compute_fbank, load_fbank_config
from justkit.fileio import atomic_open
from justkit.log import setup_logging
from justkit.progress import ProgressLog

log = logging.getLogger("fbank")


class SampleRateMismatch(RuntimeError):
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
            try:
                x, sr = load_audio(src, utt)
            except AudioError as e:
                log.warning("bad utterance: %s", e)
                bad.append(BadUtt(utt, src, e.reason))
                prog.update()
                continue
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
                kaldiio.save_ark(f, {utt: feats})
            except Exception as e:  # disk full etc.: stop, naming the utterance
                raise RuntimeError(f"{wav_scp}: utterance {utt}: writing features to {ark} failed: {e}") from e
            scp[utt] = f"{ark}:{offset}"
            frames[utt] = str(feats.shape[0])
            prog.update(1, len(x) / sr)
    prog.finish()
    log.info("%s: %d utterances -> %s, %d bad", wav_scp, len(scp), ark, len(bad))
    return scp, frames, bad


def main(argv: Optional[list] = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__,
        epilog="Extra arguments override the config: --num_mel_bins 40, dither=1.0, fbank.low_freq=40")
    p.add_argument("--config", help="YAML with an fbank: section (conf/fbank.yaml)")
    p.add_argument("--ark", required=True, help="output ark (<dst>/data/feats.JOB.ark); its .scp goes beside it")
    p.add_argument("--progress-every", type=float, default=10.0, help="seconds between progress lines")
    p.add_argument("wav_scp", type=Path, help="input shard: <utt> <16 kHz audio path>")
    p.add_argument("out_prefix", help="writes <out_prefix>.utt2num_frames and .bad")
    a, rest = p.parse_known_args(argv)
    setup_logging()
    t0 = time.monotonic()
    try:
        overrides = apply_overrides({}, rest)
        cfg = load_fbank_config(a.config, overrides.get("fbank", overrides))
    except (ConfigError, ValueError) as e:
        log.error("fbank config: %s", e)
        return 1
    log.info("config: %s", cfg)
    try:
        scp, frames, bad = fbank_shard(a.wav_scp, a.ark, cfg, a.progress_every)
    except (DataDirError, SampleRateMismatch) as e:
        log.error("%s", e)
        return 1
    write_table(f"{a.out_prefix}.utt2num_frames", frames)
    write_bad_shard(f"{a.out_prefix}.bad", bad)
    # The shard's scp is written last: it exists only when the ark is complete.
    write_table(str(Path(a.ark).with_suffix(".scp")), scp)
    log.info("done in %.1f s", time.monotonic() - t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
