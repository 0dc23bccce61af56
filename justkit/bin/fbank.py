"""Stage 3 job: fbank features of one wav.scp shard into a kaldiio ark+scp shard (utils/make_fbank.sh runs it)."""
from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from justkit import cli
from justkit.log import setup_logging

log = logging.getLogger("justkit.bin.fbank")
PROG = "python -m justkit.bin.fbank"


def build_parser() -> cli.Parser:
    p = cli.Parser(PROG, __doc__, overrides=("fbank",), epilog="Example: --fbank.num_mel_bins 40")
    p.add_argument("--config", default="", help="YAML with an fbank: section (conf/fbank.yaml); defaults if empty")
    p.add_argument("--ark", required=True, help="output ark (<dst>/data/feats.JOB.ark); its .scp goes beside it")
    p.add_argument("--progress_every", type=float, default=10.0, help="seconds between progress lines")
    p.add_argument("wav_scp", type=Path, help="input shard: <utt> <16 kHz audio path>")
    p.add_argument("out_prefix", help="writes <out_prefix>.utt2num_frames and .bad")
    return p


@cli.command
def main(argv: Optional[Sequence[str]] = None) -> int:
    a, overrides = build_parser().parse(argv)
    import torchaudio.compliance.kaldi  # noqa: F401  (loaded before timing; justkit.frontend.fbank imports it lazily)

    from justkit.config import load_section
    from justkit.datadir.badutts import write_bad_shard
    from justkit.datadir.tables import write_table
    from justkit.frontend.fbank import FbankConfig
    from justkit.frontend.shards import fbank_shard

    setup_logging()
    t0 = time.monotonic()
    cfg = FbankConfig.from_dict(load_section(a.config or None, "fbank", overrides))
    log.info("config: %s", cfg)
    scp, frames, bad = fbank_shard(a.wav_scp, a.ark, cfg, a.progress_every)
    write_table(f"{a.out_prefix}.utt2num_frames", frames)
    write_bad_shard(f"{a.out_prefix}.bad", bad)
    # The shard's scp is written last: it exists only when the ark is complete.
    write_table(str(Path(a.ark).with_suffix(".scp")), scp)
    log.info("done in %.1f s", time.monotonic() - t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
