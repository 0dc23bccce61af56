"""Stage 7: decode packed test sets with greedy and beam search into exp/<tag>/decode_<method>_<set>/."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

import torch

from justkit.config import ConfigError, apply_overrides, load_yaml
from justkit.data.cmvn import CmvnError
from justkit.data.dataset import PackedDataError, PackedDataset
from justkit.decode.decoder import DecodeConfig, decode_dataset, write_decode_dir
from justkit.log import setup_logging
from justkit.train.checkpoint import CheckpointError, load_model

log = logging.getLogger("justkit.decode")


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__,
        epilog="Extra key=value (or --key value) arguments override the decode config, e.g. beam.beam_size=8",
    )
    p.add_argument("--config", help="decode YAML (conf/decode.yaml); defaults if omitted")
    p.add_argument("--model", required=True, help="checkpoint: exp/<tag>/model_avg.pt or ckpt-<step>.pt")
    p.add_argument("--tokenizer", required=True, help="sentencepiece model (data/token/spm.model)")
    p.add_argument("--cmvn", required=True, help="global CMVN stats (dump/fbank/train/cmvn.ark)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--exp", required=True, help="experiment dir; writes decode_<method>_<set>/ below it")
    p.add_argument("sets", nargs="+", help="packed test sets dump/packed/<set>.jsonl")
    known, rest = _split_overrides(list(sys.argv[1:] if argv is None else argv), p)
    args = p.parse_args(known)
    sets = args.sets
    setup_logging(f"{args.exp}/log/decode.log")

    try:
        return _run(args, sets, rest)
    except (ConfigError, PackedDataError, CheckpointError, CmvnError, ValueError, FileNotFoundError) as e:
        log.error("%s", e)
        return 1


def _split_overrides(argv: list, p: argparse.ArgumentParser) -> tuple:
    """Separate config overrides (``key.sub=value``, ``--key.sub value``) from the CLI's own options."""
    own = {s for a in p._actions for s in a.option_strings}
    known, rest, i = [], [], 0
    while i < len(argv):
        tok = argv[i]
        if tok.startswith("--") and tok.split("=", 1)[0] not in own:
            rest.append(tok)
            if "=" not in tok and i + 1 < len(argv):
                rest.append(argv[i + 1])
                i += 1
        elif not tok.startswith("-") and "=" in tok and not tok.endswith(".jsonl"):
            rest.append(tok)
        else:
            known.append(tok)
        i += 1
    return known, rest


def _run(args: argparse.Namespace, sets: Sequence[str], rest: Sequence[str]) -> int:
    from justkit.text.tokenizer import Tokenizer

    raw = load_yaml(args.config) if args.config else {}
    raw = apply_overrides(raw.get("decode", raw), rest)
    cfg = DecodeConfig.from_dict(raw)
    device = torch.device(args.device)
    model, _ = load_model(args.model, device)
    tok = Tokenizer(args.tokenizer)
    log.info("model %s on %s; methods %s; greedy %s; beam %s", args.model, device, cfg.methods, cfg.greedy, cfg.beam)
    for path in sets:
        name = Path(path).name
        set_name = name[: -len(".jsonl")] if name.endswith(".jsonl") else Path(path).stem
        ds = PackedDataset(path, cmvn=args.cmvn)
        outs = decode_dataset(model, ds, cfg, device, desc=set_name)
        for method, res in outs.items():
            out_dir = Path(args.exp) / f"decode_{method}_{set_name}"
            write_decode_dir(out_dir, ds, res, tok.decode)
            log.info("%s: %d utterances, RTF %.4f -> %s", set_name, len(res.hyps), res.rtf, out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
