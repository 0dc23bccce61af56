"""Stage 5: pack a feature dir into jsonl training examples (feats rxspecifier, frames, tokens, language)."""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

from justkit import cli
from justkit.log import setup_logging

log = logging.getLogger("justkit.bin.pack_examples")
PROG = "python -m justkit.bin.pack_examples"


def build_parser() -> cli.Parser:
    p = cli.Parser(PROG, __doc__)
    p.add_argument("--tokenizer", type=Path, default=None, help="data/token/spm.model (not needed with --unlabelled)")
    p.add_argument("--labelled_subset", action="append", default=[], metavar="DIR",
                   help="a data dir whose text lists utterances that keep their labels (repeatable); "
                   "without any, every utterance is labelled")
    cli.add_bool(p, "unlabelled", False, "audio only: every utterance unlabelled, no transcripts read")
    cli.add_bool(p, "index_only", False, "write the index of an existing jsonl (given as the only argument) "
                 "and nothing else")
    p.add_argument("--subsampling_kernel", type=int, default=3,
                   help="the model's conv subsampling kernel (model.subsampling.kernel): utterances too short for it, "
                   "or with more tokens than encoder frames, are dropped and listed in <out>.bad_utts.txt")
    p.add_argument("--max_tokens_per_second", type=float, default=0.0,
                   help="also drop transcripts with more tokens than this per second of audio (0: no limit)")
    p.add_argument("fbank_dir", type=Path, help="stage 3's dir (dump/fbank/<set>)")
    p.add_argument("out", type=Path, nargs="?", help="output jsonl (dump/packed/<set>.jsonl); it gets an "
                   "index beside it, <out>.idx.npy + <out>.idx.json")
    return p


@cli.command
def main(argv: Optional[Sequence[str]] = None) -> int:
    a, _ = build_parser().parse(argv)
    from justkit.data.manifest import PackedIndex, write_index
    from justkit.data.pack import Limits, PackError, iter_examples, summary, write_packed
    from justkit.datadir.badutts import write_bad_utts
    from justkit.text.tokenizer import Tokenizer

    if a.index_only:
        if a.out is not None:
            raise PackError("--index_only takes one argument, the jsonl")
        setup_logging()
        n = write_index(a.fbank_dir)
        log.info("%s: index of %d examples written", a.fbank_dir, n)
        return 0
    if a.out is None:
        raise PackError("give the feature dir and the output jsonl")
    setup_logging(a.out.parent / "log" / f"pack_{a.out.stem}.log")
    if a.tokenizer is None and not a.unlabelled:
        raise PackError("--tokenizer is required (unless --unlabelled)")
    tok = Tokenizer(a.tokenizer) if a.tokenizer is not None else None
    limits = Limits(a.subsampling_kernel, a.max_tokens_per_second)
    bad: list = []
    write_packed(iter_examples(a.fbank_dir, tok, a.labelled_subset or None, unlabelled=a.unlabelled,
                               limits=limits, bad=bad), a.out)
    bad_path = a.out.with_name(a.out.name[: -len(".jsonl")] if a.out.name.endswith(".jsonl") else a.out.name)
    write_bad_utts(bad_path.with_name(bad_path.name + ".bad_utts.txt"), a.fbank_dir.name, bad)
    log.info("%s -> %s: %s", a.fbank_dir, a.out, summary(PackedIndex.open(a.out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
