#!/usr/bin/env python3
"""Keep only the utterances of a data dir that are in every table and valid; old tables go to DIR/.backup/."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # justkit from this checkout

from justkit.data.datadir import DataDirError, iter_table  # noqa: E402
from justkit.data.validate import fix_data_dir  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("dir")
    p.add_argument("--drop-list", help="file of '<utt> [reason...]' lines: utterances to drop too")
    p.add_argument("--known-langs", default="", help="language codes accepted beside the MLS ones")
    a = p.parse_args(argv)
    try:
        drop = {t.key: t.value or "listed in " + a.drop_list for t in iter_table(a.drop_list)} if a.drop_list else {}
        res = fix_data_dir(a.dir, drop_utts=drop, known_langs=a.known_langs.replace(",", " ").split())
    except DataDirError as e:
        print(f"fix_data_dir.py: {e}", file=sys.stderr)
        return 1
    for utt, why in list(res["dropped"].items())[:20]:
        print(f"fix_data_dir.py: dropped {utt}: {why}", file=sys.stderr)
    if len(res["dropped"]) > 20:
        print(f"fix_data_dir.py: ... and {len(res['dropped']) - 20} more dropped", file=sys.stderr)
    print(f"fix_data_dir.py: {a.dir}: kept {res['kept']}, dropped {len(res['dropped'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
