"""Stage 10: train a token LM (justkit.models.lm) on packed LM text, with the trainer the ASR models use.

Resolves the LM experiment (the YAML, the overrides, the packed text, the tokenizer's vocabulary
size) into <exp>/config.yaml (task: lm), then trains; re-running the same command resumes from
the newest checkpoint. Dev passes log the loss and dev_ppl, dev_ppl_<lang>.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

from justkit import cli
from justkit.config import load_yaml
from justkit.log import setup_logging

logger = logging.getLogger("justkit.bin.train_lm")
PROG = "python -m justkit.bin.train_lm"


def build_parser() -> cli.Parser:
    p = cli.Parser(PROG, __doc__, overrides=("model", "data", "train"),
                   epilog="Example: --train.max_epochs 20 --model.hidden_dim 512 --model.arch transformer")
    p.add_argument("--config", required=True, help="LM experiment YAML (conf/lm/*.yaml)")
    p.add_argument("--exp", required=True, help="LM experiment directory exp/lm_<tag>")
    p.add_argument("--train_data", required=True, help="packed LM text (dump/lm/train)")
    p.add_argument("--dev_data", default="", help="packed dev sentences (dump/lm/dev), for dev loss and perplexity")
    p.add_argument("--tokenizer", required=True, help="the ASR experiment's sentencepiece model (data/token/spm.model)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where to train")
    return p


@cli.command
def main(argv: Optional[Sequence[str]] = None) -> int:
    args, overrides = build_parser().parse(argv)
    from justkit.bin.train import _is_stderr, _warn_changed
    from justkit.train.distributed import barrier, cleanup_distributed, init_distributed
    from justkit.train.lm_task import LMTask

    dist = init_distributed(args.device)
    exp = Path(args.exp)
    if dist.is_main:
        log_file = exp / "log" / "train.log"
        setup_logging(None if _is_stderr(log_file) else log_file)
        from justkit.fileio import lock_dir

        lock = lock_dir(exp, "a training of this LM")  # noqa: F841 (held until exit)
    else:
        setup_logging(None, level=logging.WARNING)
    try:
        task = LMTask.resolve(args.config, overrides, {"train": args.train_data, "dev": args.dev_data,
                                                        "tokenizer": args.tokenizer})
        if dist.is_main:
            old = exp / "config.yaml"
            if old.exists():
                _warn_changed(load_yaml(old), task.config)
            task.save(exp)
            logger.info("%s", " ".join([sys.executable, "-m", "justkit.bin.train_lm", *(argv or sys.argv[1:])]))
        from justkit.train.trainer import Trainer

        Trainer(task, exp, dist).train()   # task: a justkit.train.unit.TrainTask
        barrier()
    finally:
        cleanup_distributed()
    return 0


if __name__ == "__main__":
    sys.exit(main())
