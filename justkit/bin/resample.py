"""Stage 2 job: resample the audio of one wav.scp shard to FLAC (utils/resample_data_dir.sh runs it)."""
from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from justkit import cli
from justkit.log import setup_logging

log = logging.getLogger("justkit.bin.resample")
PROG = "python -m justkit.bin.resample"


def build_parser() -> cli.Parser:
    p = cli.Parser(PROG, __doc__)
    p.add_argument("--fs", type=int, default=16000, help="output sample rate (Hz)")
    p.add_argument("--audio_dir", required=True, help="where the FLAC files go (<dst>/data)")
    p.add_argument("--progress_every", type=float, default=10.0, help="seconds between progress lines")
    p.add_argument("wav_scp", type=Path, help="input shard: <utt> <audio path>")
    p.add_argument("out_prefix", help="writes <out_prefix>.utt2dur, .bad, .counts, then .scp (each atomic)")
    return p


@cli.command
def main(argv: Optional[Sequence[str]] = None) -> int:
    a, _ = build_parser().parse(argv)
    from justkit.datadir.badutts import write_bad_shard
    from justkit.datadir.tables import write_table
    from justkit.frontend.shards import resample_shard

    setup_logging()
    t0 = time.monotonic()
    counts: dict = {}
    wav, dur, bad = resample_shard(a.wav_scp, a.audio_dir.rstrip("/"), a.fs, a.progress_every, counts=counts)
    # The .scp is what the merge step checks for; write it last.
    write_table(f"{a.out_prefix}.utt2dur", dur)
    write_bad_shard(f"{a.out_prefix}.bad", bad)
    write_table(f"{a.out_prefix}.counts", {k: str(v) for k, v in counts.items()})  # for the wrapper's summary
    write_table(f"{a.out_prefix}.scp", wav)
    log.info("done in %.1f s", time.monotonic() - t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
