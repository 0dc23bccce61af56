#!/usr/bin/env python3
"""Copy a subset of a data dir: --utt-list FILE, --first N or --random N [--seed S]; spk2utt regenerated."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # justkit from this checkout

from justkit.config import from_dict  # noqa: E402
from justkit.data.datadir import DataDirError  # noqa: E402
from justkit.data.subset import SubsetConfig, select_utts, subset_data_dir  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--utt-list", help="file whose first field per line is an utterance id")
    g.add_argument("--first", type=int, help="the first N utterances (sorted by id)")
    g.add_argument("--random", type=int, help="N utterances drawn at random (see --seed)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("srcdir")
    p.add_argument("destdir")
    a = p.parse_args(argv)
    logging.basicConfig(format="subset_data_dir.py: %(message)s")
    cfg = from_dict(SubsetConfig, {"utt_list": a.utt_list, "first": a.first, "random": a.random, "seed": a.seed})
    try:
        n = subset_data_dir(a.srcdir, a.destdir, select_utts(a.srcdir, cfg))
    except (DataDirError, OSError) as e:
        print(f"subset_data_dir.py: {e}", file=sys.stderr)
        return 1
    print(f"subset_data_dir.py: {a.srcdir} -> {a.destdir}: {n} utterances")
    return 0


if __name__ == "__main__":
    sys.exit(main())
