#!/usr/bin/env python3
"""Check a Kaldi data dir; print every problem (file, line or id, what) and exit 1 if any."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # justkit from this checkout

from justkit.data.datadir import DataDir  # noqa: E402
from justkit.data.validate import DEFAULT_REQUIRE, validate_data_dir  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("dir")
    p.add_argument("--require", default=" ".join(DEFAULT_REQUIRE),
                   help="files that must exist (space or comma separated; '' for none)")
    p.add_argument("--check-audio", action="store_true", help="also check that each wav.scp path exists")
    p.add_argument("--known-langs", default="", help="language codes accepted beside the MLS ones")
    a = p.parse_args(argv)
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
        return 1
    print(f"validate_data_dir.py: {a.dir}: OK ({len(DataDir(a.dir).utt_ids())} utterances)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
