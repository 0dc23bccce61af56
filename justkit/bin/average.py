"""Stage 7 (first step): average the model weights of an experiment's last N checkpoints, or of
the N best on the dev set (by greedy dev WER or dev loss, from train.csv; train.keep_best
keeps those checkpoints)."""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

from justkit import cli
from justkit.log import setup_logging

logger = logging.getLogger("justkit.bin.average")
PROG = "python -m justkit.bin.average"


def build_parser() -> cli.Parser:
    p = cli.Parser(PROG, __doc__)
    p.add_argument("--exp", required=True, help="experiment directory exp/<tag>")
    p.add_argument("--out", required=True, help="output file, e.g. exp/<tag>/model_avg.pt")
    p.add_argument("--num", type=int, default=None,
                   help="number of checkpoints to average (default: train.average_last of <exp>/config.yaml)")
    p.add_argument("--by", default="last", choices=("last", "dev_wer", "loss"),
                   help="which: the newest, or the best by dev WER / dev loss among the checkpoints kept")
    return p


def _average_last(exp: Path) -> int:
    """train.average_last of the experiment's config.yaml, an ASR or an LM one (``task: lm``)."""
    from justkit.config import load_yaml

    raw = load_yaml(exp / "config.yaml")
    if raw.get("task") == "lm":
        from justkit.train.lm_task import LMTask

        return LMTask.from_dict(raw, str(exp / "config.yaml")).train.average_last
    from justkit.experiment import Experiment

    return Experiment.load(exp).train.average_last


@cli.command
def main(argv: Optional[Sequence[str]] = None) -> int:
    a, _ = build_parser().parse(argv)
    from justkit.config import ConfigError
    from justkit.train.checkpoint import (CheckpointError, average_checkpoints, best_steps, checkpoint_step,
                                          list_checkpoints)

    exp = Path(a.exp)
    setup_logging(exp / "log" / "average.log")
    from justkit.fileio import lock_dir

    # the training's lock: a running training still writes and prunes the checkpoints averaged here
    lock = lock_dir(exp, "checkpoint averaging", busy="a training (or averaging) of this experiment is running; "  # noqa: F841
                    "stage 7 averages the checkpoints of a finished training")
    num = a.num if a.num is not None else (
        _average_last(exp) if (exp / "config.yaml").is_file() else 5)
    if num < 1:
        raise ConfigError(f"--num must be >= 1, got {num}")
    ckpts = list_checkpoints(exp / "checkpoints")
    if not ckpts:
        raise CheckpointError(f"{exp / 'checkpoints'}: no ckpt-<step>.pt files (run stage 6 first)")
    if a.by == "last":
        chosen = ckpts[-num:]
    else:
        have = {checkpoint_step(c): c for c in ckpts}
        ranked = [s for s in best_steps(exp / "train.csv", a.by, len(have) + 1000) if s in have]
        if not ranked:
            raise CheckpointError(f"{exp}/train.csv: no dev {a.by} for any checkpoint in {exp / 'checkpoints'}")
        chosen = sorted((have[s] for s in ranked[:num]), key=checkpoint_step)
        logger.info("best %d by dev %s: steps %s", len(chosen), a.by, " ".join(str(checkpoint_step(c)) for c in chosen))
    if len(chosen) < num:
        logger.warning("only %d checkpoint(s) in %s; averaging those", len(chosen), exp / "checkpoints")
    out = average_checkpoints(chosen, a.out)
    logger.info("averaged %s (step %s) -> %s", " ".join(p.name for p in chosen), out["step"], a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
