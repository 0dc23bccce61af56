"""Choose the LM fusion weight on dev: beam search with each weight of a small grid, WER of each, the best.

Writes <out>/w<lm>_ilm<ilm>/ (a decode dir each), <out>/wer.txt (one row a weight pair) and <out>/best.yaml ({tune: {lm_weight, ilm_weight, dev_wer}}),
which stage 11 of asr.sh decodes the test sets with.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

from justkit import cli
from justkit.log import setup_logging

log = logging.getLogger("justkit.bin.tune_lm_weight")
PROG = "python -m justkit.bin.tune_lm_weight"


def build_parser() -> cli.Parser:
    p = cli.Parser(PROG, __doc__, overrides=("decode",),
                   usage=f"{PROG} --exp exp/<tag> --lm_dir exp/lm_<tag> --lm_weights '0.1 0.2 0.3' DEV.jsonl")
    p.add_argument("dev", help="the packed dev set (dump/packed/dev.jsonl)")
    p.add_argument("--exp", required=True, help="the ASR experiment dir (config.yaml, model_avg.pt)")
    p.add_argument("--lm_dir", required=True, help="the LM (exp/lm_<tag>)")
    p.add_argument("--lm_weights", default="0.1 0.2 0.3", help="the LM weights to try")
    p.add_argument("--ilm_weights", default="0", help="the internal-LM weights to try with each")
    p.add_argument("--config", default="", help="decode YAML (conf/decode.yaml); its beam settings are used")
    p.add_argument("--model", default="", help="model file (default: <exp>/model_avg.pt)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--out", default="", help="output dir (default: <exp>/lm_tune_<basename of lm_dir>)")
    return p


@cli.command
def main(argv: Optional[Sequence[str]] = None) -> int:
    p = build_parser()
    a, overrides = p.parse(argv)
    import dataclasses

    import torch

    from justkit.config import dump_yaml, load_section
    from justkit.data.dataset import PackedDataset
    from justkit.decode.decoder import DecodeConfig, decode_dataset, write_decode_dir
    from justkit.decode.fusion import check_weight
    from justkit.experiment import Experiment
    from justkit.fileio import atomic_write_text
    from justkit.models.factory import load_model
    from justkit.models.lm import load_lm
    from justkit.score.wer import score_decode_dir
    from justkit.text.tokenizer import Tokenizer, check_vocab

    exp = Path(a.exp)
    out = Path(a.out) if a.out else exp / f"lm_tune_{Path(a.lm_dir).name}"
    setup_logging(out / "log" / "tune.log")
    try:
        grid = [(check_weight("--lm_weights", w), check_weight("--ilm_weights", i))
                for w in a.lm_weights.split() for i in a.ilm_weights.split()]
    except ValueError as e:
        p.error(str(e))
    if not grid:
        p.error("--lm_weights: no weight given")
    base = DecodeConfig.from_dict(load_section(a.config or None, "decode", overrides))
    experiment = Experiment.load(exp)
    device = torch.device(a.device)
    model, _ = load_model(a.model or exp / "model_avg.pt", device)
    tok = Tokenizer(experiment.paths.tokenizer)
    check_vocab(tok, model.cfg.vocab_size, str(a.model or exp / "model_avg.pt"))
    lm, _, lm_path = load_lm(a.lm_dir, device, vocab_size=model.cfg.vocab_size)
    ds = PackedDataset(a.dev, cmvn=experiment.paths.cmvn or None, fbank=experiment.frontend_config())
    rows = []
    for w, iw in grid:
        cfg = dataclasses.replace(base, methods=["beam"], lm_weight=w, ilm_weight=iw)
        res = decode_dataset(model, ds, cfg, device, desc=f"dev lm {w:g} ilm {iw:g}", lm=lm)["beam"]
        d = out / f"w{w:g}_ilm{iw:g}"
        write_decode_dir(d, ds, res, tok.decode)
        wer = score_decode_dir(d).wer
        rows.append((w, iw, wer, res.rtf))
        log.info("lm_weight %g ilm_weight %g: dev WER %.2f%% (RTF %.3f)", w, iw, wer, res.rtf)
    best = min(rows, key=lambda r: (r[2], r[0], r[1]))   # ties: the smaller weights
    atomic_write_text(out / "wer.txt", "# lm_weight ilm_weight dev_wer(%) rtf  (LM " + str(lm_path) + ")\n"
                      + "".join(f"{w:g} {iw:g} {wer:.2f} {rtf:.4f}\n" for w, iw, wer, rtf in rows))
    dump_yaml({"tune": {"lm_weight": best[0], "ilm_weight": best[1], "dev_wer": round(best[2], 2),
                        "lm": str(lm_path), "dev": str(a.dev)}}, out / "best.yaml")
    log.info("best on dev: lm_weight %g, ilm_weight %g (WER %.2f%%) -> %s/best.yaml", best[0], best[1], best[2], out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
