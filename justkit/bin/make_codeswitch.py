"""Stage 2 (after resampling): build the code-switching test set from per-language test dirs."""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Optional, Sequence

from justkit.config import from_dict
from justkit.data.codeswitch import CodeSwitchConfig, make_codeswitch
from justkit.data.datadir import DataDirError
from justkit.log import setup_logging

log = logging.getLogger("justkit.make_codeswitch")


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__,
        usage="python -m justkit.bin.make_codeswitch [--seed 0] [--num 20] IN_DIR IN_DIR [IN_DIR ...] OUT_DIR",
    )
    defaults = CodeSwitchConfig()
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--num", type=int, default=defaults.num, help="utterances to make")
    p.add_argument("--silence_sec", type=float, default=defaults.silence_sec)
    p.add_argument("--sample_rate", type=int, default=defaults.sample_rate)
    p.add_argument("dirs", nargs="+", help="16 kHz data dirs, one language each, then the output dir")
    args = p.parse_args(argv)
    if len(args.dirs) < 3:
        p.error("need at least two input dirs and one output dir")
    *in_dirs, out_dir = args.dirs
    setup_logging()
    cfg = from_dict(
        CodeSwitchConfig,
        {"seed": args.seed, "num": args.num, "silence_sec": args.silence_sec, "sample_rate": args.sample_rate},
    )
    try:
        make_codeswitch(in_dirs, out_dir, cfg)
    except (DataDirError, ValueError) as e:
        log.error("%s", e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
