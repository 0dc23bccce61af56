"""Stage 1: MLS release tree (downloaded if asked) -> Kaldi data dirs per language and split, combined sets, subsets."""
from __future__ import annotations

import logging
import sys
from typing import Optional, Sequence

from justkit import cli
from justkit.log import setup_logging

log = logging.getLogger("justkit.bin.prepare_mls")
PROG = "python -m justkit.bin.prepare_mls"


def build_parser() -> cli.Parser:
    from justkit.corpora.mls import MLS_BASE_URL, MLS_LANGUAGES

    p = cli.Parser(PROG, __doc__)
    p.add_argument("--mls_root", required=True, help="dir holding mls_<language>_opus/ (or mls_<language>/)")
    p.add_argument("--langs", default=" ".join(MLS_LANGUAGES), help="space-separated ISO codes")
    cli.add_bool(p, "download", False, "download missing languages into --mls_root")
    p.add_argument("--flavour", default="opus", choices=("opus", "flac"), help="release --download fetches")
    p.add_argument("--base_url", default=MLS_BASE_URL, help="where the release tarballs are")
    cli.add_bool(p, "keep_archive", False, "keep the .tar.gz after extraction")
    cli.add_bool(p, "verify_md5", True, "refuse a download whose md5 is not published in md5sum.txt")
    p.add_argument("--nj", type=int, default=1, help="processes reading audio headers")
    cli.add_bool(p, "audio_checks", True,
                 "check every audio file (exists, header readable, >= 2 samples) and take utt2dur from it; "
                 "false: touch no audio file and take utt2dur from <split>/segments.txt (full MLS: "
                 "probing 11M headers takes hours; bad audio then surfaces in stage 2)")
    p.add_argument("--splits", default="train dev test", help="which splits to prepare (space-separated)")
    p.add_argument("--log_file", default=None, help="also log to this file")
    p.add_argument("out", help="output dir (data/)")
    return p


@cli.command
def main(argv: Optional[Sequence[str]] = None) -> int:
    a, _ = build_parser().parse(argv)
    from justkit.config import from_dict
    from justkit.corpora.prepare_mls import PrepareConfig, prepare

    setup_logging(a.log_file)
    cfg = from_dict(PrepareConfig, {
        "mls_root": a.mls_root, "out": a.out, "langs": a.langs.split(), "download": a.download,
        "flavour": a.flavour, "base_url": a.base_url, "keep_archive": a.keep_archive, "nj": max(1, a.nj),
        "splits": a.splits.split(), "verify_md5": a.verify_md5,
        "audio_checks": a.audio_checks},
        "prepare_mls")
    prepare(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
