#!/usr/bin/env python3
"""Keep only the utterances of a data dir that are in every table and valid; old tables go to DIR/.backup/."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # justkit from this checkout

from justkit import cli  # noqa: E402

log = logging.getLogger("fix_data_dir.py")


@cli.command
def main(argv: list[str] | None = None) -> int:
    p = cli.Parser("utils/fix_data_dir.py", __doc__)
    p.add_argument("dir", help="the data dir, fixed in place")
    p.add_argument("--drop_list", default="", help="file of '<utt> [reason...]' lines: utterances to drop too")
    p.add_argument("--known_langs", default="",
                   help="language codes utt2lang may use (space or comma separated; empty: any ISO 639 code)")
    a, _ = p.parse(argv)
    from justkit.datadir.tables import iter_table
    from justkit.datadir.validate import fix_data_dir

    logging.basicConfig(format="fix_data_dir.py: %(message)s", level=logging.INFO)
    drop = {t.key: t.value or "listed in " + a.drop_list for t in iter_table(a.drop_list)} if a.drop_list else {}
    res = fix_data_dir(a.dir, drop_utts=drop, known_langs=a.known_langs.replace(",", " ").split())
    for utt, why in list(res["dropped"].items())[:20]:
        log.warning("dropped %s: %s", utt, why)
    if len(res["dropped"]) > 20:
        log.warning("... and %d more dropped", len(res["dropped"]) - 20)
    log.info("%s: kept %d, dropped %d", a.dir, res["kept"], len(res["dropped"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
