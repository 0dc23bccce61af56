#!/usr/bin/env python3
"""Keep (or with --exclude drop) the lines of a table whose id is in an id list: filter_scp.py [--exclude] idlist [in.scp] > out."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="utils/filter_scp.py", description=__doc__,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter, allow_abbrev=False)
    p.add_argument("--exclude", action="store_true", help="drop the listed ids instead of keeping them")
    p.add_argument("-f", "--field", type=int, default=1, help="1-based field of in.scp to match")
    p.add_argument("idlist", help="file whose first field per line is an id")
    p.add_argument("scp", nargs="?", default="-", help="input table (default: stdin)")
    a = p.parse_args(argv)
    if a.field < 1:
        p.error("--field must be >= 1")
    try:
        # Bytes throughout: lines pass through unchanged whatever their encoding.
        ids = {ln.split()[0] for ln in Path(a.idlist).read_bytes().split(b"\n") if ln.strip()}
        data = sys.stdin.buffer.read() if a.scp == "-" else Path(a.scp).read_bytes()
    except OSError as e:
        print(f"filter_scp.py: {e}", file=sys.stderr)
        return 2
    out = sys.stdout.buffer
    for i, ln in enumerate(data.split(b"\n"), 1):
        if not ln.strip():
            continue
        fields = ln.split()
        if len(fields) < a.field:
            print(f"filter_scp.py: {a.scp}:{i}: line has no field {a.field}", file=sys.stderr)
            return 2
        if (fields[a.field - 1] in ids) != a.exclude:
            out.write(ln + b"\n")
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
