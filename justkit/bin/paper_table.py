"""Stage 8: print the JUST paper's MLS table (Markdown) with the given experiments' rows."""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from justkit.score.paper import PAPER_YAML, PaperTableError, experiment_row, format_paper_table, load_paper


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("exps", nargs="*", help="experiment dirs scored by justkit.bin.score (results.json)")
    p.add_argument("--method", help="decode method to take (default: beam, else the best average)")
    p.add_argument("--paper", default=str(PAPER_YAML), help="paper results YAML")
    args = p.parse_args(argv)
    try:
        paper = load_paper(args.paper)
        rows = [experiment_row(e, args.method) for e in args.exps]
    except PaperTableError as e:
        print(f"paper_table: {e}", file=sys.stderr)
        return 1
    sys.stdout.write(format_paper_table(paper, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
