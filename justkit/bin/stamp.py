"""Stage stamps for the shell stages (utils/resample_data_dir.sh, utils/make_fbank.sh): is a step up to date?

  check: exit 0 and print "<what>: <out>: up to date ... skipped" when the outputs were made from the
         same inputs and config and are all there as written; else print the reason to redo, remove
         the stamp (before the step changes anything) and keep the inputs' fingerprint as taken now
         (<out>/.stamp.pending.json), and exit 1
  write: record the step as finished (after it succeeded) with the fingerprint check took (so an input
         changed while the step ran is found by the next check); --count NAME=N for the skip message;
         only --what, --tree and --count matter here
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional, Sequence

from justkit import cli

PROG = "python -m justkit.bin.stamp"


def build_parser() -> cli.Parser:
    p = cli.Parser(PROG, __doc__)
    p.add_argument("action", choices=["check", "write"])
    p.add_argument("out", type=Path, help="the step's output dir (its stamp: <out>/.stamp.json)")
    p.add_argument("--what", default="", help="the step's name, for the messages (e.g. the script)")
    p.add_argument("--input_dir", action="append", default=[], help="a data dir whose top-level files are inputs")
    p.add_argument("--input", action="append", default=[], help="an input file (repeatable)")
    p.add_argument("--listed", action="append", default=[],
                   help="an scp whose named files (audio, ark shards) are inputs by size and mtime (repeatable)")
    p.add_argument("--config_file", action="append", default=[], help="a YAML config whose values are the config")
    p.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE", help="an option of the step")
    p.add_argument("--tree", action="append", default=[],
                   help="an output subdir of <out> whose files are outputs (e.g. data)")
    p.add_argument("--count", action="append", default=[], metavar="NAME=N", help="write: a count to record")
    return p


def _pairs(words: Sequence[str], opt: str, p: cli.Parser) -> dict:
    out = {}
    for w in words:
        k, eq, v = w.partition("=")
        if not eq or not k:
            p.error(f"--{opt} {w!r}: expected KEY=VALUE")
        out[k] = v
    return out


@cli.command
def main(argv: Optional[Sequence[str]] = None) -> int:
    p = build_parser()
    a, _ = p.parse(argv)
    from justkit import stamp
    from justkit.config import load_yaml
    from justkit.fileio import atomic_write_text

    where, pending = stamp.stamp_path(a.out), a.out / ".stamp.pending.json"
    if a.action == "check":
        config = {"opt": _pairs(a.opt, "opt", p)}
        for f in a.config_file:
            config.update(load_yaml(f))
        inputs = [f for d in a.input_dir for f in stamp.dir_inputs(d)] + a.input
        fp = stamp.fingerprint(config, inputs, a.listed)
        why = stamp.check(where, fp)
        if why is None:
            print(f"{a.what}: {a.out}: up to date (same inputs and config; {stamp.summary(where)}): skipped")
            return 0
        print(f"{a.what}: {a.out}: making it: {why}")
        stamp.clear(where)
        a.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(pending, json.dumps(fp) + "\n")
        return 1
    try:
        fp = json.loads(pending.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise stamp.StampError(f"{pending}: no fingerprint of the inputs to record (write follows a check "
                               f"that found {a.out} out of date): {e}") from None
    stamp.write(where, a.what, fp, stamp.dir_inputs(a.out), [str(a.out / t) for t in a.tree],
                _pairs(a.count, "count", p))
    stamp.clear(pending)
    return 0


if __name__ == "__main__":
    sys.exit(main())
