"""Stage 5 CLI: pack dump/fbank/<set> into dump/packed/<set>.jsonl (tokens, frames, language)."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

from justkit.data.datadir import DataDirError
from justkit.data.pack import PackError, pack_examples, summary, write_packed
from justkit.log import setup_logging
from justkit.text.tokenizer import Tokenizer, TokenizerError

logger = logging.getLogger("justkit.bin.pack")


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__,
        usage="%(prog)s --tokenizer spm.model [--labelled_subset DIR ...] FBANK_DIR OUT_JSONL",
    )
    p.add_argument("--tokenizer", required=True, type=Path, help="data/token/spm.model")
    p.add_argument("--labelled_subset", nargs="*", default=[],
                   help="data dirs whose text lists the utterances that keep their labels")
    p.add_argument("paths", nargs="*", help="FBANK_DIR OUT_JSONL")
    args = p.parse_args(argv)
    # argparse gives a trailing nargs='*' option every later word: the last two are the paths.
    words = list(args.labelled_subset) + list(args.paths)
    if len(words) < 2:
        p.error("FBANK_DIR and OUT_JSONL are required")
    subsets, fbank_dir, out = words[:-2], Path(words[-2]), Path(words[-1])
    setup_logging(out.parent / "log" / f"pack_{out.stem}.log")
    try:
        tok = Tokenizer(args.tokenizer)
        examples = pack_examples(fbank_dir, tok, subsets or None)
        write_packed(examples, out)
    except (PackError, DataDirError, TokenizerError) as e:
        logger.error("%s", e)
        return 1
    logger.info("%s -> %s: %s", fbank_dir, out, summary(examples))
    return 0


if __name__ == "__main__":
    sys.exit(main())
