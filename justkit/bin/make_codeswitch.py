"""Stage 2 (after resampling): build the code-switching test set from per-language test dirs."""
from __future__ import annotations

import logging
import sys
from typing import Optional, Sequence

from justkit import cli
from justkit.log import setup_logging

log = logging.getLogger("justkit.bin.make_codeswitch")
PROG = "python -m justkit.bin.make_codeswitch"


def build_parser() -> cli.Parser:
    from justkit.corpora.codeswitch import CodeSwitchConfig

    d = CodeSwitchConfig()
    p = cli.Parser(PROG, __doc__, usage=f"{PROG} [options] IN_DIR IN_DIR [IN_DIR ...] OUT_DIR")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the pairing")
    p.add_argument("--num", type=int, default=d.num, help="utterances to make")
    p.add_argument("--silence_sec", type=float, default=d.silence_sec, help="silence between the two parts")
    p.add_argument("--sample_rate", type=int, default=d.sample_rate, help="sample rate every input must have")
    p.add_argument("dirs", nargs="+", help="16 kHz data dirs, one language each, then the output dir")
    return p


@cli.command
def main(argv: Optional[Sequence[str]] = None) -> int:
    p = build_parser()
    a, _ = p.parse(argv)
    from justkit import stamp
    from justkit.config import from_dict, to_dict
    from justkit.corpora.codeswitch import CodeSwitchConfig, make_codeswitch

    if len(a.dirs) < 3:
        p.error("need at least two input dirs and one output dir")
    *in_dirs, out_dir = a.dirs
    setup_logging()
    cfg = from_dict(CodeSwitchConfig, {"seed": a.seed, "num": a.num, "silence_sec": a.silence_sec,
                                       "sample_rate": a.sample_rate}, "make_codeswitch")
    # Skipped when the per-language dirs (tables and audio) and the options are those of the finished set.
    st = stamp.stamp_path(out_dir)
    fp = stamp.fingerprint({"codeswitch": to_dict(cfg)}, [f for d in in_dirs for f in stamp.dir_inputs(d)],
                           [f"{d}/wav.scp" for d in in_dirs])
    if stamp.up_to_date(st, fp, PROG, out_dir, log):
        return 0
    utts = make_codeswitch(in_dirs, out_dir, cfg)
    stamp.write(st, PROG, fp, stamp.dir_inputs(out_dir), [f"{out_dir}/data"], counts={"utterances": len(utts)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
