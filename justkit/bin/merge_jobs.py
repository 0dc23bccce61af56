"""Merge the per-job outputs of a parallel stage into its output data dir, record and drop bad utterances."""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

from justkit import cli
from justkit.log import setup_logging

log = logging.getLogger("justkit.bin.merge_jobs")
PROG = "python -m justkit.bin.merge_jobs"


def build_parser() -> cli.Parser:
    p = cli.Parser(PROG, __doc__)
    p.add_argument("--nj", type=int, required=True, help="number of jobs whose outputs are merged")
    p.add_argument("--table", action="append", default=[], metavar="NAME=PATTERN",
                   help="a table the jobs produced, e.g. wav.scp=dump/raw/x/split/resample.JOB.scp (repeatable)")
    p.add_argument("--bad", required=True, metavar="PATTERN", help="the jobs' bad-utterance shards (with JOB)")
    p.add_argument("--cmvn_stats", default="", metavar="PATTERN=OUT",
                   help="sum the jobs' partial CMVN stats (e.g. dst/split/cmvn.JOB.ark=dst/cmvn.ark)")
    p.add_argument("src", type=Path, help="the data dir the jobs read")
    p.add_argument("dst", type=Path, help="the output data dir")
    return p


@cli.command
def main(argv: Optional[Sequence[str]] = None) -> int:
    p = build_parser()
    a, _ = p.parse(argv)
    from justkit.datadir.jobs import finish

    setup_logging()
    tables = []
    for t in a.table:
        name, eq, pattern = t.partition("=")
        if not eq or "JOB" not in pattern:
            p.error(f"--table {t!r}: expected NAME=PATTERN with JOB in the pattern")
        tables.append((name, pattern))
    stats = None
    if a.cmvn_stats:
        pattern, eq, out = a.cmvn_stats.partition("=")
        if not eq or "JOB" not in pattern or not out:
            p.error(f"--cmvn_stats {a.cmvn_stats!r}: expected PATTERN=OUT with JOB in the pattern")
        from justkit.frontend.cmvn import stats_to_mean_std, sum_stats, write_cmvn

        stats = sum_stats(pattern.replace("JOB", str(j)) for j in range(1, a.nj + 1))
    finish(a.src, a.dst, a.nj, tables, a.bad)
    if stats is not None:
        write_cmvn(out, stats)
        mean, std = stats_to_mean_std(stats)
        log.info("CMVN stats: %d frames, dim %d, mean in [%.2f, %.2f], std in [%.2f, %.2f] -> %s",
                 int(stats[0, -1]), len(mean), mean.min(), mean.max(), std.min(), std.max(), out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
