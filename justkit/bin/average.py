"""Stage 7 (first step): average the model weights of an experiment's last N checkpoints."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from justkit.config import ConfigError, load_yaml
from justkit.log import setup_logging
from justkit.train.checkpoint import CheckpointError, average_checkpoints, list_checkpoints

logger = logging.getLogger("justkit.bin.average")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m justkit.bin.average",
        description="Average the last --num checkpoints of exp/<tag>/checkpoints into --out "
        "(default N: train.average_last of exp/<tag>/config.yaml, else 5).",
        allow_abbrev=False,
    )
    p.add_argument("--exp", required=True, help="experiment directory exp/<tag>")
    p.add_argument("--out", required=True, help="output file, e.g. exp/<tag>/model_avg.pt")
    p.add_argument("--num", type=int, default=0, help="number of newest checkpoints to average")
    return p


def default_num(exp: Path) -> int:
    cfg_path = exp / "config.yaml"
    if cfg_path.exists():
        n = (load_yaml(cfg_path).get("train") or {}).get("average_last")
        if n:
            return int(n)
    return 5


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    exp = Path(args.exp)
    setup_logging(exp / "log" / "average.log")
    try:
        num = args.num or default_num(exp)
        if num < 1:
            raise ConfigError(f"--num must be >= 1, got {num}")
        ckpts = list_checkpoints(exp / "checkpoints")
        if not ckpts:
            raise CheckpointError(f"{exp / 'checkpoints'}: no ckpt-<step>.pt files (run stage 6 first)")
        chosen = ckpts[-num:]
        if len(chosen) < num:
            logger.warning("only %d checkpoint(s) in %s; averaging those", len(chosen), exp / "checkpoints")
        out = average_checkpoints(chosen, args.out)
        logger.info("averaged %s (step %s) -> %s", " ".join(p.name for p in chosen), out["step"], args.out)
    except (ConfigError, CheckpointError, ValueError) as e:
        logger.error("%s", e)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
