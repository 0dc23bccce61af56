"""Pack an experiment's model into one self-contained directory: weights, tokenizer, CMVN, front end,
resolved config and a model card (README.md); optionally its ONNX export."""
from __future__ import annotations

import logging
import sys
from typing import Optional, Sequence

from justkit import cli

log = logging.getLogger("justkit.bin.pack_model")
PROG = "python -m justkit.bin.pack_model"


def build_parser() -> cli.Parser:
    p = cli.Parser(PROG, __doc__, usage=f"{PROG} [options] EXP_DIR OUT_DIR")
    p.add_argument("exp", help="experiment directory exp/<tag> (config.yaml, model_avg.pt)")
    p.add_argument("out", help="output directory, e.g. exp/<tag>/model")
    p.add_argument("--weights", default="", help="model file to pack (default: <exp>/model_avg.pt)")
    cli.add_bool(p, "onnx", False, "also export encoder/decoder/joiner to <out>/onnx/ (ONNX Runtime)")
    p.add_argument("--lm_dir", default="", help="also pack this LM (exp/lm_<tag>) into <out>/lm/ for beam search")
    p.add_argument("--lm_weight", type=float, default=0.0, help="its shallow-fusion weight (the dev-tuned one)")
    p.add_argument("--ilm_weight", type=float, default=0.0, help="its internal-LM subtraction weight")
    return p


@cli.command
def main(argv: Optional[Sequence[str]] = None) -> int:
    a, _ = build_parser().parse(argv)
    from justkit.log import setup_logging
    from justkit.models.package import pack_model

    setup_logging()
    pack_model(a.exp, a.out, a.weights or None, onnx=a.onnx, lm_dir=a.lm_dir or None,
               lm_weight=a.lm_weight, ilm_weight=a.ilm_weight)
    return 0


if __name__ == "__main__":
    sys.exit(main())
