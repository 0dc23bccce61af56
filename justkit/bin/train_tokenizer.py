"""Stage 4: train the multilingual sentencepiece model on the normalised transcripts of a data dir."""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

from justkit import cli
from justkit.log import setup_logging

logger = logging.getLogger("justkit.bin.train_tokenizer")
PROG = "python -m justkit.bin.train_tokenizer"


def build_parser() -> cli.Parser:
    p = cli.Parser(PROG, __doc__, overrides=("tokenizer",), epilog="Example: --tokenizer.vocab_size 500")
    p.add_argument("--config", default="", help="YAML with a tokenizer: section (conf/tokenizer_*.yaml)")
    p.add_argument("--text", required=True, type=Path, help="Kaldi text of the training set")
    p.add_argument("--utt2lang", required=True, type=Path, help="utt2lang of the training set")
    p.add_argument("--out", required=True, type=Path, help="output dir: spm.model, spm.vocab, tokens.txt, config.yaml")
    return p


@cli.command
def main(argv: Optional[Sequence[str]] = None) -> int:
    a, overrides = build_parser().parse(argv)
    from justkit import stamp
    from justkit.config import dump_yaml, from_dict, load_section, to_dict
    from justkit.text.tokenizer import TokenizerConfig, train_tokenizer_on_data_dir

    setup_logging(a.out / "log" / "train_tokenizer.log")
    cfg = from_dict(TokenizerConfig, load_section(a.config or None, "tokenizer", overrides),
                    f"{a.config}: tokenizer" if a.config else "tokenizer")
    # Skipped when the transcripts, their languages and the resolved config are those of the finished model.
    st = stamp.stamp_path(a.out)
    fp = stamp.fingerprint({"tokenizer": to_dict(cfg)}, [str(a.text), str(a.utt2lang)])
    if stamp.up_to_date(st, fp, PROG, a.out, logger):
        return 0
    tok = train_tokenizer_on_data_dir(a.text, a.utt2lang, a.out, cfg)
    dump_yaml({"tokenizer": to_dict(cfg)}, a.out / "config.yaml")
    stamp.write(st, PROG, fp, stamp.dir_inputs(a.out), counts={"vocab_size": tok.vocab_size})
    logger.info("vocab size %d -> %s", tok.vocab_size, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
