#!/usr/bin/env python3
"""Copy a subset of a data dir: --utt_list FILE, --first N or --random N [--seed S]; spk2utt regenerated."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # justkit from this checkout

from justkit import cli  # noqa: E402

log = logging.getLogger("subset_data_dir.py")


@cli.command
def main(argv: list[str] | None = None) -> int:
    p = cli.Parser("utils/subset_data_dir.py", __doc__)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--utt_list", help="file whose first field per line is an utterance id")
    g.add_argument("--first", type=int, help="the first N utterances (sorted by id)")
    g.add_argument("--random", type=int, help="N utterances drawn at random (see --seed)")
    p.add_argument("--seed", type=int, default=0, help="seed of --random")
    p.add_argument("srcdir", help="input data dir")
    p.add_argument("destdir", help="output data dir")
    a, _ = p.parse(argv)
    from justkit.config import from_dict
    from justkit.datadir.subset import SubsetConfig, select_utts, subset_data_dir

    logging.basicConfig(format="subset_data_dir.py: %(message)s", level=logging.INFO)
    cfg = from_dict(SubsetConfig, {"utt_list": a.utt_list, "first": a.first, "random": a.random, "seed": a.seed},
                    "subset_data_dir")
    try:
        n = subset_data_dir(a.srcdir, a.destdir, select_utts(a.srcdir, cfg))
    except OSError as e:
        log.error("%s", e)
        return cli.EXIT_USER_ERROR
    log.info("%s -> %s: %d utterances", a.srcdir, a.destdir, n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
