"""Stage 6: train a JUST / RNN-T / w2v-BERT model (single process or under torchrun)."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from justkit.config import ConfigError, apply_overrides, dump_yaml, load_yaml
from justkit.log import setup_logging
from justkit.train.checkpoint import CheckpointError

logger = logging.getLogger("justkit.bin.train")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m justkit.bin.train",
        description="Train (or resume training) the experiment in --exp. Extra arguments "
        "override config keys: --train.max_steps 100 or model.d_model=128.",
        allow_abbrev=False,
    )
    p.add_argument("--config", required=True, help="experiment YAML (conf/train_*.yaml)")
    p.add_argument("--exp", required=True, help="experiment directory exp/<tag>")
    p.add_argument("--train", required=True, help="packed training set (dump/packed/train.jsonl)")
    p.add_argument("--dev", default="", help="packed dev set for the per-epoch dev loss")
    p.add_argument("--tokenizer", required=True, help="sentencepiece model (data/token/spm.model)")
    p.add_argument("--cmvn", default="", help="global CMVN stats (dump/fbank/train/cmvn.ark)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--init", default="", help="checkpoint whose encoder initialises the model (fine-tuning)")
    return p


def resolve_config(args: argparse.Namespace, overrides: list[str]) -> dict:
    """YAML + includes + command-line overrides + vocab size from the tokenizer + --init + paths."""
    from justkit.text.tokenizer import Tokenizer

    cfg = apply_overrides(load_yaml(args.config), overrides)
    cfg.setdefault("model", {})
    cfg.setdefault("train", {})
    cfg["model"]["vocab_size"] = int(Tokenizer(args.tokenizer).vocab_size)
    if args.init:
        cfg["train"]["init"] = args.init
    cfg["paths"] = {
        "config": str(args.config), "train": str(args.train), "dev": str(args.dev or ""),
        "tokenizer": str(args.tokenizer), "cmvn": str(args.cmvn or ""),
    }
    return cfg


def _warn_changed(old: dict, new: dict, prefix: str = "") -> None:
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            _warn_changed(a, b, f"{prefix}{k}.")
        elif a != b:
            logger.warning("config changed since the last run of this experiment: %s%s: %r -> %r", prefix, k, a, b)


def _is_stderr(path: Path) -> bool:
    """True when stderr is the file ``path`` (so a FileHandler on it would duplicate lines)."""
    try:
        a, b = os.fstat(sys.stderr.fileno()), os.stat(path)
    except (OSError, ValueError, AttributeError):
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def main(argv: list[str] | None = None) -> int:
    args, rest = build_parser().parse_known_args(argv)
    from justkit.train.distributed import cleanup_distributed, init_distributed

    dist = init_distributed(args.device)
    exp = Path(args.exp)
    if dist.is_main:
        log_file = exp / "log" / "train.log"
        # run.sh's $train_cmd already sends our stderr into this very file: log it once.
        setup_logging(None if _is_stderr(log_file) else log_file)
    else:
        setup_logging(None, level=logging.WARNING)
    try:
        cfg = resolve_config(args, rest)
        from justkit.train.trainer import Trainer, check_top_level

        check_top_level(cfg, str(args.config))
        if dist.is_main:
            old = exp / "config.yaml"
            if old.exists():
                _warn_changed(load_yaml(old), cfg)
            dump_yaml(cfg, exp / "config.yaml")
            logger.info("%s", " ".join([sys.executable, "-m", "justkit.bin.train"] + list(argv or sys.argv[1:])))
        trainer = Trainer(cfg, exp, args.train, args.dev or None, args.cmvn or None, dist)
        trainer.train()
    except (ConfigError, CheckpointError) as e:
        logger.error("%s", e)
        return 2
    finally:
        cleanup_distributed()
    return 0


if __name__ == "__main__":
    sys.exit(main())
