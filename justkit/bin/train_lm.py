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


def _check_against_exp(exp: Path, new: dict) -> list[str]:
    """The changes of ``new`` against ``<exp>/config.yaml``; a changed ``model:`` key in an LM
    experiment that holds checkpoints is refused (ConfigError) before anything is written."""
    from justkit.config import ConfigError
    from justkit.experiment import compare_configs, has_trained

    old = exp / "config.yaml"
    if not old.is_file():
        return []
    diff = compare_configs(load_yaml(old), new)
    if diff.conflicts and has_trained(exp):
        raise ConfigError(f"{exp} holds a trained LM of another config; this run would make another "
                          f"model ({'; '.join(diff.conflicts)}). Nothing was written. Train it under "
                          f"another --exp (run.sh: another --lm_tag), or remove {exp}")
    return diff.changes


@cli.command
def main(argv: Optional[Sequence[str]] = None) -> int:
    args, overrides = build_parser().parse(argv)
    from justkit.bin.train import _is_stderr
    from justkit.train.distributed import barrier, cleanup_distributed, init_distributed
    from justkit.train.lm_task import LMTask

    dist = init_distributed(args.device)
    exp = Path(args.exp)
    # Nothing is written (no exp dir, no log) before the config is resolved and checked.
    setup_logging(None, level=logging.INFO if dist.is_main else logging.WARNING)
    try:
        task = LMTask.resolve(args.config, overrides, {"train": args.train_data, "dev": args.dev_data,
                                                        "tokenizer": args.tokenizer})
        if dist.is_main:
            _check_against_exp(exp, task.config)
            log_file = exp / "log" / "train.log"
            setup_logging(None if _is_stderr(log_file) else log_file)
            from justkit.fileio import lock_dir

            lock = lock_dir(exp, "a training of this LM")  # noqa: F841 (held until exit)
            for c in _check_against_exp(exp, task.config):  # under the lock
                logger.warning("config changed since the last run of %s: %s", exp, c)
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
