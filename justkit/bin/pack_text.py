"""Pack a data dir's sentences (text + utt2lang) as token ids for LM training or evaluation (justkit.data.text)."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional, Sequence

from justkit import cli
from justkit.log import setup_logging

PROG = "python -m justkit.bin.pack_text"


def build_parser() -> cli.Parser:
    p = cli.Parser(PROG, __doc__, usage=f"{PROG} --tokenizer spm.model DATA_DIR OUT_DIR")
    p.add_argument("data_dir", type=Path, help="a data dir with text and utt2lang (e.g. data/dev)")
    p.add_argument("out", type=Path, help="the packed set to write")
    p.add_argument("--tokenizer", required=True, help="sentencepiece model (the ASR experiment's)")
    return p


@cli.command
def main(argv: Optional[Sequence[str]] = None) -> int:
    a, _ = build_parser().parse(argv)
    from justkit.data.text import pack_text
    from justkit.text.tokenizer import Tokenizer

    setup_logging()
    pack_text(a.data_dir / "text", a.data_dir / "utt2lang", Tokenizer(a.tokenizer), a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
