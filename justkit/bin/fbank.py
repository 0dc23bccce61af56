"""Stage 3 job: fbank features of one wav.scp shard into a kaldiio ark+scp shard (utils/make_fbank.sh runs it).

With --feats_type raw (features computed on the fly by the data loader) it stores no features:
it writes the shard's frame counts and, with --cmvn_fraction > 0, its partial CMVN stats.
"""
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
    p.add_argument("--feats_type", default="fbank", choices=["fbank", "raw"],
                   help="fbank: store features in --ark; raw: store none (frame counts and CMVN stats only)")
    p.add_argument("--ark", default="", help="output ark (<dst>/data/feats.JOB.ark); its .scp goes beside it")
    p.add_argument("--cmvn_fraction", type=float, default=0.0,
                   help="raw: share of the utterances (seeded sample) whose fbank feeds the CMVN stats; 0: no stats")
    p.add_argument("--cmvn_seed", type=int, default=0, help="raw: seed of the CMVN sample")
    p.add_argument("--cmvn_stats", default="", help="raw: where the shard's partial CMVN stats go")
    p.add_argument("--progress_every", type=float, default=10.0, help="seconds between progress lines")
    p.add_argument("wav_scp", type=Path, help="input shard: <utt> <16 kHz audio path>")
    p.add_argument("out_prefix", help="writes <out_prefix>.utt2num_frames and .bad")
    return p


@cli.command
def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    a, overrides = parser.parse(argv)
    if a.feats_type == "raw" and a.cmvn_fraction > 0 and not a.cmvn_stats:
        parser.error("--cmvn_fraction > 0 needs --cmvn_stats (where the partial stats go)")
    if a.feats_type == "fbank" and not a.ark:
        parser.error("--ark is required with --feats_type fbank")
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
    if a.feats_type == "raw":
        from justkit.frontend.cmvn import write_stats_shard
        from justkit.frontend.shards import raw_shard

        frames, bad, stats = raw_shard(a.wav_scp, cfg, a.cmvn_fraction, a.cmvn_seed, a.progress_every)
        if stats is not None:
            write_stats_shard(a.cmvn_stats, stats)
        write_bad_shard(f"{a.out_prefix}.bad", bad)
        write_table(f"{a.out_prefix}.utt2num_frames", frames)  # last: exists only when the job is done
        log.info("done in %.1f s", time.monotonic() - t0)
        return 0
    scp, frames, bad = fbank_shard(a.wav_scp, a.ark, cfg, a.progress_every)
    write_table(f"{a.out_prefix}.utt2num_frames", frames)
    write_bad_shard(f"{a.out_prefix}.bad", bad)
    # The shard's scp is written last: it exists only when the ark is complete.
    write_table(str(Path(a.ark).with_suffix(".scp")), scp)
    log.info("done in %.1f s", time.monotonic() - t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
