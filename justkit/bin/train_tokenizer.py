"""Stage 4 CLI: train the multilingual sentencepiece model on normalised transcripts."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from justkit.config import apply_overrides, dump_yaml, from_dict, load_yaml, to_dict
from justkit.data.datadir import DataDirError, read_table
from justkit.log import setup_logging
from justkit.text.normalize import normalize
from justkit.text.tokenizer import TokenizerConfig, TokenizerError, train_tokenizer

logger = logging.getLogger("justkit.bin.train_tokenizer")


def read_texts_by_lang(text: Path, utt2lang: Path) -> Dict[str, List[Tuple[str, str]]]:
    """``{lang: [(utt, normalised text)]}``; an utterance without a language is an error."""
    texts = read_table(text, allow_empty_value=True)
    langs = read_table(utt2lang)
    out: Dict[str, List[Tuple[str, str]]] = {}
    for utt, raw in texts.items():
        if utt not in langs:
            raise DataDirError(f"{utt2lang}: utt {utt} (in {text}) has no language")
        norm = normalize(raw, langs[utt])
        if not norm:
            raise DataDirError(f"{text}: utt {utt}: empty transcript after normalisation ({raw!r})")
        out.setdefault(langs[utt], []).append((utt, norm))
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--config", required=True, help="tokenizer YAML (TokenizerConfig keys)")
    p.add_argument("--text", required=True, type=Path, help="Kaldi text of the training set")
    p.add_argument("--utt2lang", required=True, type=Path, help="utt2lang of the training set")
    p.add_argument("--out", required=True, type=Path, help="output dir: spm.model, spm.vocab, tokens.txt")
    args, rest = p.parse_known_args(argv)
    setup_logging(args.out / "log" / "train_tokenizer.log")
    try:
        cfg_dict = apply_overrides(load_yaml(args.config), rest)
        cfg = from_dict(TokenizerConfig, cfg_dict, f"{args.config}")
        texts = read_texts_by_lang(args.text, args.utt2lang)
        tok = train_tokenizer(texts, args.out, cfg)
        dump_yaml(to_dict(cfg), args.out / "config.yaml")
    except (ValueError, TokenizerError, DataDirError) as e:
        logger.error("%s", e)
        return 1
    logger.info("vocab size %d -> %s", tok.vocab_size, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
