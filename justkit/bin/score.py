"""Stage 8: score every decode_<method>_<set> dir of an experiment and write RESULTS.md and results.json."""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

from justkit import cli
from justkit.log import setup_logging

log = logging.getLogger("justkit.bin.score")
PROG = "python -m justkit.bin.score"


def build_parser() -> cli.Parser:
    p = cli.Parser(PROG, __doc__)
    p.add_argument("--exp", required=True, help="experiment dir holding decode_<method>_<set>/")
    p.add_argument("--langs", default="",
                   help="column order of the languages, e.g. 'en de' (default: as found, sorted); "
                   "the average is over every language found")
    p.add_argument("--top", type=int, default=10, help="most frequent errors listed in RESULTS.md")
    p.add_argument("--command", default="", help="the command that made the experiment (recorded in RESULTS.md)")
    return p


@cli.command
def main(argv: Optional[Sequence[str]] = None) -> int:
    a, _ = build_parser().parse(argv)
    from justkit.score.results import score_experiment
    from justkit.score.wer import ScoringError

    if not Path(a.exp).is_dir():  # do not create it by opening the log file
        setup_logging()
        raise ScoringError(f"{a.exp}: experiment dir not found")
    setup_logging(f"{a.exp}/log/score.log")
    res = score_experiment(a.exp, top=a.top, langs=a.langs.split() or None, command=a.command)
    for m, cols in sorted(res["methods"].items()):
        avg = res["average"].get(m, {}).get("wer")
        per = " ".join(f"{c}={v['wer']:.2f}" for c, v in cols.items())
        log.info("%s: %s%s", m, per, f" avg={avg:.2f}" if avg is not None else "")
    log.info("wrote %s/RESULTS.md", a.exp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
