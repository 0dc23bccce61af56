"""Stage 8: print the JUST paper's MLS table (Markdown) with the given experiments' rows."""
from __future__ import annotations

import logging
import sys
from typing import Optional, Sequence

from justkit import cli

log = logging.getLogger("justkit.bin.paper_table")
PROG = "python -m justkit.bin.paper_table"


def build_parser() -> cli.Parser:
    from justkit.score.paper import PAPER_YAML

    p = cli.Parser(PROG, __doc__)
    p.add_argument("exps", nargs="*", help="experiment dirs scored by justkit.bin.score (results.json)")
    p.add_argument("--method", default=None, help="decode method to take (default: beam, else the best average)")
    p.add_argument("--paper", default=str(PAPER_YAML), help="paper results YAML")
    return p


@cli.command
def main(argv: Optional[Sequence[str]] = None) -> int:
    a, _ = build_parser().parse(argv)
    from justkit.score.paper import experiment_row, format_paper_table, load_paper

    paper = load_paper(a.paper)
    rows = [experiment_row(e, a.method, paper["langs"]) for e in a.exps]
    sys.stdout.write(format_paper_table(paper, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
