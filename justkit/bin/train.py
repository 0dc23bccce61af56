"""Stage 6: train a JUST / RNN-T / w2v-BERT model (one process, or one per GPU under torchrun).

Resolves the experiment (the YAML, the overrides, the stage outputs) into <exp>/config.yaml,
then trains; re-running the same command resumes from the newest checkpoint.
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

from justkit import cli
from justkit.config import load_yaml
from justkit.log import setup_logging

logger = logging.getLogger("justkit.bin.train")
PROG = "python -m justkit.bin.train"


def build_parser() -> cli.Parser:
    p = cli.Parser(PROG, __doc__, overrides=("model", "loss", "data", "train"),
                   epilog="Example: --train.max_steps 100 --model.d_model 128")
    p.add_argument("--config", required=True, help="experiment YAML (conf/train_*.yaml)")
    p.add_argument("--exp", required=True, help="experiment directory exp/<tag>")
    p.add_argument("--train_data", required=True, help="packed training examples (dump/packed/train.jsonl)")
    p.add_argument("--dev_data", default="", help="packed dev examples, for dev loss and WER")
    p.add_argument("--tokenizer", required=True, help="sentencepiece model (data/token/spm.model)")
    p.add_argument("--cmvn", default="", help="global CMVN stats (dump/fbank/train/cmvn.ark)")
    p.add_argument("--feats_dir", default="",
                   help="stage 3's dir of the training set (dump/fbank/train): feat_dim and the fbank options")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where to train")
    p.add_argument("--init", default="", help="checkpoint whose encoder initialises the model (fine-tuning)")
    return p


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


@cli.command
def main(argv: Optional[Sequence[str]] = None) -> int:
    args, overrides = build_parser().parse(argv)
    from justkit.experiment import Experiment
    from justkit.train.distributed import barrier, cleanup_distributed, init_distributed

    dist = init_distributed(args.device)
    exp = Path(args.exp)
    if dist.is_main:
        log_file = exp / "log" / "train.log"
        # run.sh's $train_cmd already sends our stderr into this very file: log it once.
        setup_logging(None if _is_stderr(log_file) else log_file)
        from justkit.fileio import lock_dir

        lock = lock_dir(exp, "a training of this experiment")  # noqa: F841 (held until exit)
    else:
        setup_logging(None, level=logging.WARNING)
    try:
        cfg = load_yaml(args.config)
        if not isinstance(cfg, dict) or not cfg:
            from justkit.config import ConfigError

            raise ConfigError(f"{args.config}: empty, or not a mapping of sections (model:, data:, train:)")
        if args.init:
            overrides = [*overrides, "--train.init", args.init]
        experiment = Experiment.resolve(args.config, overrides, {
            "train": args.train_data, "dev": args.dev_data, "tokenizer": args.tokenizer,
            "cmvn": args.cmvn, "features": args.feats_dir})
        if dist.is_main:
            old = exp / "config.yaml"
            if old.exists():
                _warn_changed(load_yaml(old), experiment.to_dict())
            experiment.save(exp)
            experiment.save_frontend(exp)  # <exp>/fbank.yaml: the features it is trained on
            logger.info("%s", " ".join([sys.executable, "-m", "justkit.bin.train", *(argv or sys.argv[1:])]))
        from justkit.train.asr import ASRTask
        from justkit.train.trainer import Trainer

        Trainer(ASRTask(experiment), exp, dist).train()
        # Every rank reaches this point before any leaves the group: a rank that tore gloo down
        # while its peer was still in the last collective aborted ("terminate called ...").
        barrier()
    finally:
        cleanup_distributed()
    return 0


if __name__ == "__main__":
    sys.exit(main())
