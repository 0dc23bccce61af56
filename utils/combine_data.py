#!/usr/bin/env python3
"""Combine data dirs: utils/combine_data.py DEST SRC1 SRC2 ... (an utterance id in two sources is an error)."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # justkit from this checkout

from justkit.data.combine import combine_data_dirs  # noqa: E402
from justkit.data.datadir import DataDirError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("dest")
    p.add_argument("srcs", nargs="+")
    a = p.parse_args(argv)
    logging.basicConfig(format="combine_data.py: %(message)s")
    try:
        n = combine_data_dirs(a.dest, a.srcs)
    except DataDirError as e:
        print(f"combine_data.py: {e}", file=sys.stderr)
        return 1
    print(f"combine_data.py: {len(a.srcs)} dirs -> {a.dest}: {n} utterances")
    return 0


if __name__ == "__main__":
    sys.exit(main())
