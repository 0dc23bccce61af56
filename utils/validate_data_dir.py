#!/usr/bin/env python3
"""Check a Kaldi data dir; print every problem (file, line or id, what) and exit 2 if there is any."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # justkit from this checkout

from justkit import cli  # noqa: E402


@cli.command
def main(argv: list[str] | None = None) -> int:
    from justkit.datadir.validate import DEFAULT_REQUIRE

    p = cli.Parser("utils/validate_data_dir.py", __doc__)
    p.add_argument("dir", help="the data dir")
    p.add_argument("--require", default=" ".join(DEFAULT_REQUIRE),
                   help="files that must exist (space or comma separated; '' for none)")
    cli.add_bool(p, "check_audio", False, "also check that each wav.scp path exists")
    p.add_argument("--known_langs", default="",
                   help="language codes utt2lang may use (space or comma separated; empty: any ISO 639 code)")
    a, _ = p.parse(argv)
    from justkit.datadir.tables import DataDir
    from justkit.datadir.validate import validate_data_dir

    problems = validate_data_dir(
        a.dir,
        require=a.require.replace(",", " ").split(),
        check_audio=a.check_audio,
        known_langs=a.known_langs.replace(",", " ").split(),
    )
    if problems:
        for m in problems:
            print(m, file=sys.stderr)
        print(f"validate_data_dir.py: {a.dir}: {len(problems)} problem(s); "
              f"utils/fix_data_dir.py {a.dir} keeps the consistent utterances", file=sys.stderr)
        return cli.EXIT_USER_ERROR
    print(f"validate_data_dir.py: {a.dir}: OK ({DataDir(a.dir).num_utts()} utterances)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
