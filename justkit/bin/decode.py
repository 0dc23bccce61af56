"""Stage 7: decode packed test sets with greedy and beam search into <exp>/decode_<method>_<set>/.

The tokenizer and CMVN are the experiment's (<exp>/config.yaml, paths section) unless given.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

from justkit import cli
from justkit.log import setup_logging

log = logging.getLogger("justkit.bin.decode")
PROG = "python -m justkit.bin.decode"


def build_parser() -> cli.Parser:
    p = cli.Parser(PROG, __doc__, overrides=("decode",),
                   epilog="Example: --decode.beam.beam_size 8 --decode.methods [beam]")
    p.add_argument("--exp", required=True, help="experiment dir; decode_<method>_<set>/ are written below it")
    p.add_argument("--config", default="", help="decode YAML with a decode: section (conf/decode.yaml); "
                   "built-in defaults if empty")
    p.add_argument("--model", default="", help="model file (default: <exp>/model_avg.pt)")
    p.add_argument("--tokenizer", default="", help="sentencepiece model (default: the experiment's)")
    p.add_argument("--cmvn", default="", help="global CMVN stats (default: the experiment's)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--lm_dir", default="", help="an LM (exp/lm_<tag> or its model_avg.pt) for beam search: "
                   "--decode.lm_weight W fuses it (decode_beamlm_<set>), --decode.lm_mode rescore rescores")
    p.add_argument("sets", nargs="+", help="packed test sets dump/packed/<set>.jsonl")
    return p


@cli.command
def main(argv: Optional[Sequence[str]] = None) -> int:
    args, overrides = build_parser().parse(argv)
    # imported after parsing, as every command does, so that --help does not load torch (~2 s)
    import torch

    from justkit.config import load_section
    from justkit.data.dataset import PackedDataset
    from justkit.decode.decoder import DecodeConfig, decode_dataset, write_decode_dir
    from justkit.experiment import Experiment
    from justkit.models.factory import load_model
    from justkit.text.tokenizer import Tokenizer, check_vocab

    exp = Path(args.exp)
    setup_logging(exp / "log" / "decode.log")
    cfg = DecodeConfig.from_dict(load_section(args.config or None, "decode", overrides))
    experiment = Experiment.load(exp) if (exp / "config.yaml").is_file() else None
    tok_path = args.tokenizer or (experiment.paths.tokenizer if experiment else "")
    cmvn = args.cmvn or (experiment.paths.cmvn if experiment else "")
    # stage 3's options as the experiment recorded them: examples packed with audio get the same fbank
    fbank = experiment.frontend_config() if experiment else None
    if not tok_path:
        from justkit.config import ConfigError

        raise ConfigError(f"{exp}/config.yaml not found and no --tokenizer given")
    device = torch.device(cli.check_device(args.device))
    model_path = args.model or str(exp / "model_avg.pt")
    model, _ = load_model(model_path, device)
    tok = Tokenizer(tok_path)
    check_vocab(tok, model.cfg.vocab_size, model_path)
    lm = None
    if args.lm_dir:
        from justkit.models.lm import load_lm

        lm, _, lm_path = load_lm(args.lm_dir, device, vocab_size=model.cfg.vocab_size)
        log.info("LM %s: weight %g, internal-LM weight %g, %s", lm_path, cfg.lm_weight, cfg.ilm_weight, cfg.lm_mode)
    cfg.fusion(lm)   # a weight without an LM: one line now, not after the greedy pass
    log.info("model %s on %s; tokenizer %s; cmvn %s; methods %s; greedy %s; beam %s",
             model_path, device, tok_path, cmvn or "none", cfg.methods, cfg.greedy, cfg.beam)
    for path in args.sets:
        name = Path(path).name
        set_name = name[: -len(".jsonl")] if name.endswith(".jsonl") else Path(path).stem
        ds = PackedDataset(path, cmvn=cmvn or None, fbank=fbank)
        outs = decode_dataset(model, ds, cfg, device, desc=set_name, lm=lm)
        for method, res in outs.items():
            out_dir = exp / f"decode_{cfg.method_name(method, lm is not None)}_{set_name}"
            write_decode_dir(out_dir, ds, res, tok.decode)
            log.info("%s: %d utterances, RTF %.4f -> %s", set_name, len(res.hyps), res.rtf, out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
