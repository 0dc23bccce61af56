"""Stage 6: train a JUST / RNN-T / w2v-BERT model (one process, or one per GPU under torchrun).

Resolves the experiment (the YAML, the overrides, the stage outputs) into <exp>/config.yaml,
then trains; re-running the same command resumes from the newest checkpoint. A run whose
resolved config would make another model than the one <exp> already holds (a model: key, or
the parameter set, differs) is refused before anything is written; other changes (train:,
data:, loss weights, paths) are listed and applied.
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

from justkit import cli
from justkit.config import dump_yaml_str, load_yaml
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
    p.add_argument("--print_config", action="store_true",
                   help="print the fully resolved experiment config (YAML) and exit; writes nothing")
    p.add_argument("--check", action="store_true",
                   help="resolve the config and check it against <exp>'s (changes listed, another model "
                        "refused), then exit; writes nothing (run.sh does this before stage 6's job)")
    return p


def _check_against_exp(exp: Path, experiment, notes: bool = True) -> None:
    """Refuse (ConfigError naming every differing key) a config that makes another model than the
    one ``exp`` holds; log the other changes (``notes``)."""
    from justkit.config import ConfigError
    from justkit.experiment import compare_to_stored, has_trained

    diff = compare_to_stored(exp, experiment)
    if diff is None:
        return
    if diff.conflicts and has_trained(exp):
        raise ConfigError(
            f"{exp} holds a trained model of another config; this run would make another model "
            f"({'; '.join(diff.conflicts)}). Nothing was written. Train it under another --exp "
            f"(run.sh: another --tag; without --tag, run.sh names the experiment after the config "
            f"and --train_args), or remove {exp}")
    if not notes:
        return
    for c in diff.changes:
        logger.warning("config changed since the last run of %s: %s", exp, c)
    if diff.conflicts:
        logger.warning("%s has no checkpoint yet: its config.yaml is replaced", exp)


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
    # Nothing is written (no exp dir, no log) before the config is resolved and checked.
    setup_logging(None, level=logging.INFO if dist.is_main else logging.WARNING)
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
        if args.print_config:
            if dist.is_main:
                sys.stdout.write(dump_yaml_str(experiment.to_dict()))
            return 0
        if dist.is_main:
            _check_against_exp(exp, experiment, notes=args.check)
        if args.check:
            return 0
        if dist.is_main:
            log_file = exp / "log" / "train.log"
            # run.sh's $train_cmd already sends our stderr into this very file: log it once.
            setup_logging(None if _is_stderr(log_file) else log_file)
            from justkit.fileio import lock_dir

            lock = lock_dir(exp, "a training of this experiment")  # noqa: F841 (held until exit)
            _check_against_exp(exp, experiment)  # under the lock (another run may have written it); notes logged
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
