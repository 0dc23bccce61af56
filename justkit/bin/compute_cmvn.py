"""Stage 3: global CMVN statistics of a data dir's feats.scp, in Kaldi's layout."""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

from justkit import cli
from justkit.log import setup_logging

log = logging.getLogger("justkit.bin.compute_cmvn")
PROG = "python -m justkit.bin.compute_cmvn"


def build_parser() -> cli.Parser:
    p = cli.Parser(PROG, __doc__)
    p.add_argument("data_dir", type=Path, help="dir with feats.scp (dump/fbank/train)")
    p.add_argument("--nj", type=int, default=1,
                   help="processes: feats.scp is cut into nj contiguous parts whose stats are summed")
    p.add_argument("out", type=Path, help="stats file (dump/fbank/train/cmvn.ark): 2 x (D+1) float64 matrix")
    return p


@cli.command
def main(argv: Optional[Sequence[str]] = None) -> int:
    a, _ = build_parser().parse(argv)
    from justkit import stamp
    from justkit.frontend.cmvn import CmvnError, compute_cmvn_stats, stats_to_mean_std, write_cmvn

    setup_logging()
    scp = a.data_dir / "feats.scp"
    if a.nj < 1:
        raise CmvnError(f"--nj must be >= 1, got {a.nj}")
    # Skipped when feats.scp and the ark shards it points into are those the existing stats were made from.
    st = stamp.stamp_path(a.out, directory=False)
    fp = stamp.fingerprint({}, [str(scp)], [str(scp)])
    if stamp.up_to_date(st, fp, PROG, a.out, log):
        return 0
    stats = compute_cmvn_stats(scp, nj=a.nj)
    write_cmvn(a.out, stats)
    stamp.write(st, PROG, fp, [str(a.out)], counts={"frames": int(stats[0, -1])})
    mean, std = stats_to_mean_std(stats)
    log.info("%s: %d frames, dim %d, mean in [%.2f, %.2f], std in [%.2f, %.2f] -> %s",
             scp, int(stats[0, -1]), len(mean), mean.min(), mean.max(), std.min(), std.max(), a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
