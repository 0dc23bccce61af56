#!/usr/bin/env python3
"""Combine data dirs into DEST (an utterance id in two sources is an error)."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # justkit from this checkout

from justkit import cli  # noqa: E402

log = logging.getLogger("combine_data.py")


@cli.command
def main(argv: list[str] | None = None) -> int:
    p = cli.Parser("utils/combine_data.py", __doc__)
    p.add_argument("dest", help="output data dir")
    p.add_argument("srcs", nargs="+", help="input data dirs")
    a, _ = p.parse(argv)
    from justkit.datadir.combine import combine_data_dirs

    logging.basicConfig(format="combine_data.py: %(message)s", level=logging.INFO)
    n = combine_data_dirs(a.dest, a.srcs)
    log.info("%d dirs -> %s: %d utterances", len(a.srcs), a.dest, n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
