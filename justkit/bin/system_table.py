"""Compare systems trained with several seeds: per-language test WER, mean and spread over seeds,
the relative change against a baseline system, and the JUST paper's rows beside them."""
from __future__ import annotations

import logging
import sys
from typing import Optional, Sequence

from justkit import cli

log = logging.getLogger("justkit.bin.system_table")
PROG = "python -m justkit.bin.system_table"


def build_parser() -> cli.Parser:
    p = cli.Parser(PROG, __doc__, usage=f"{PROG} [options] NAME=EXP[,EXP...] [NAME=EXP[,EXP...] ...]")
    p.add_argument("groups", nargs="+", help="a system and its scored experiment dirs (one per seed)")
    p.add_argument("--method", default="beam", help="decode method whose results are compared")
    p.add_argument("--langs", default="", help="language columns in order (default: those of the first run)")
    p.add_argument("--baseline", default="", help="system the others are compared with (default: the first)")
    cli.add_bool(p, "paper", False, "also print the JUST paper's rows (justkit/score/paper_results.yaml)")
    p.add_argument("--title", default="", help="heading of the Markdown table")
    p.add_argument("--command", default="", help="the command that produced the runs (recorded in the table)")
    p.add_argument("--wall_s", type=float, default=None, help="their wall time in seconds (recorded)")
    p.add_argument("--out_md", default="", help="write the Markdown table here (default: stdout only)")
    p.add_argument("--out_json", default="", help="write the numbers here as JSON")
    return p


@cli.command
def main(argv: Optional[Sequence[str]] = None) -> int:
    a, _ = build_parser().parse(argv)
    from justkit.log import setup_logging
    from justkit.provenance import machine
    from justkit.score.systems import aggregate, format_table, load_paper_if, parse_groups, write

    setup_logging()
    groups = parse_groups(a.groups)
    agg = aggregate(groups, a.method, a.langs.split())
    md = format_table(agg, a.title, load_paper_if(a.paper), a.baseline or next(iter(groups)), a.command, a.wall_s)
    if a.out_md or a.out_json:
        extra = {"method": a.method, "command": a.command, "machine": machine(), "wall_s": a.wall_s}
        write(agg, md, a.out_md, a.out_json, extra)
    sys.stdout.write(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
