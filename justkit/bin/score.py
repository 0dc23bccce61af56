"""Stage 8: score every decode_<method>_<set> dir of an experiment and write RESULTS.md."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

from justkit.log import setup_logging
from justkit.score.results import score_experiment
from justkit.score.wer import ScoringError

log = logging.getLogger("justkit.score")


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--exp", required=True, help="experiment dir holding decode_<method>_<set>/")
    p.add_argument("--top", type=int, default=10, help="most frequent errors listed in RESULTS.md")
    args = p.parse_args(argv)
    if not Path(args.exp).is_dir():  # do not create it by opening the log file
        setup_logging()
        log.error("%s: experiment dir not found", args.exp)
        return 1
    setup_logging(f"{args.exp}/log/score.log")
    try:
        res = score_experiment(args.exp, top=args.top)
    except ScoringError as e:
        log.error("%s", e)
        return 1
    for m, cols in sorted(res["methods"].items()):
        avg = res["average"].get(m, {}).get("wer")
        per = " ".join(f"{c}={v['wer']:.2f}" for c, v in cols.items())
        log.info("%s: %s%s", m, per, f" avg={avg:.2f}" if avg is not None else "")
    log.info("wrote %s/RESULTS.md", args.exp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
