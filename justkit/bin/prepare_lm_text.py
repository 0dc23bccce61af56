"""LM data: MLS's LM text per language (mls_lm_<language>/data.txt), normalised, without any dev/test sentence.

Writes the data dir <out> (text, utt2lang, stats.json) and, with --tokenizer, its packed token
ids under --packed (justkit.data.text). --download fetches missing mls_lm_<language>.tar.gz
archives into --mls_root as stage 1 fetches the audio (resumable, md5-checked). --source lang=file
takes any other text instead (one sentence a line).
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

from justkit import cli
from justkit.log import setup_logging

log = logging.getLogger("justkit.bin.prepare_lm_text")
PROG = "python -m justkit.bin.prepare_lm_text"


def build_parser() -> cli.Parser:
    p = cli.Parser(PROG, __doc__, usage=f"{PROG} (--mls_root DIR --langs 'en pl' | --source en=FILE ...) "
                   "[--exclude data/dev ...] [--tokenizer spm.model --packed DIR] OUT_DIR")
    p.add_argument("out", type=Path, help="the LM data dir to write (text, utt2lang, stats.json)")
    p.add_argument("--mls_root", default="", help="where mls_lm_<language>/data.txt are (or go, with --download)")
    p.add_argument("--langs", default="", help="language codes, e.g. 'en pl' (with --mls_root)")
    p.add_argument("--source", action="append", default=[], help="lang=FILE: LM text of a language (repeatable)")
    p.add_argument("--download", action="store_true", help="download missing LM archives into --mls_root")
    p.add_argument("--no_verify_md5", action="store_true", help="download without the published md5")
    p.add_argument("--exclude", action="append", default=[], help="a data dir whose sentences are removed (dev, test; repeatable)")
    p.add_argument("--max_sentences", type=int, default=0, help="per language at most (0: all)")
    p.add_argument("--tokenizer", default="", help="sentencepiece model: also pack the text with it")
    p.add_argument("--packed", default="", help="packed output dir (with --tokenizer)")
    return p


@cli.command
def main(argv: Optional[Sequence[str]] = None) -> int:
    p = build_parser()
    a, _ = p.parse(argv)
    from justkit.text.lm_text import prepare_lm_text

    setup_logging(a.out / "log" / "prepare_lm_text.log")
    sources = {}
    for s in a.source:
        if "=" not in s:
            p.error(f"--source {s!r}: expected lang=FILE")
        lang, path = s.split("=", 1)
        sources[lang] = path
    if a.langs:
        if not a.mls_root:
            p.error("--langs needs --mls_root")
        from justkit.corpora.mls import download_lm, find_lm_text

        for lang in a.langs.split():
            sources[lang] = str(download_lm(lang, a.mls_root, verify_md5=not a.no_verify_md5) if a.download
                                else find_lm_text(a.mls_root, lang))
    if not sources:
        p.error("give --mls_root with --langs, or --source lang=FILE")
    if bool(a.tokenizer) != bool(a.packed):
        p.error("--tokenizer and --packed go together")
    prepare_lm_text(sources, a.exclude, a.out, a.max_sentences)
    if a.tokenizer:
        from justkit.data.text import pack_text
        from justkit.text.tokenizer import Tokenizer

        pack_text(a.out / "text", a.out / "utt2lang", Tokenizer(a.tokenizer), a.packed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
