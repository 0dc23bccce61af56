"""Gradient alignment of an experiment's checkpoints: for each loss term, the cosine between its
shared-encoder gradient on training batches and the recognition (RNN-T) gradient on a fixed dev
subset, and the first-order dev-loss change of its Adam-scaled update (docs/training.md,
"Gradient alignment"). Prints a table per checkpoint and writes it as JSON."""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

from justkit import cli
from justkit.log import setup_logging

logger = logging.getLogger("justkit.bin.grad_alignment")
PROG = "python -m justkit.bin.grad_alignment"


def build_parser() -> cli.Parser:
    p = cli.Parser(PROG, __doc__, epilog="Example: --exp exp/train_just_mini --train_batches 8 --out align.json")
    p.add_argument("--exp", required=True, help="experiment directory exp/<tag> (its config.yaml and checkpoints)")
    p.add_argument("--checkpoints", nargs="*", default=None,
                   help="checkpoint files to measure (default: every ckpt-<step>.pt of <exp>/checkpoints)")
    p.add_argument("--train_batches", type=int, default=4, help="training batches averaged over (epoch 0's first)")
    p.add_argument("--dev_batches", type=int, default=4, help="dev batches of the fixed subset (spread over lengths)")
    p.add_argument("--target", default="rnnt", help="the dev term whose gradient is the need")
    p.add_argument("--seed", type=int, default=0, help="RNG seed of the measurement (masks, Gumbel noise, dropout)")
    p.add_argument("--out", default="", help="JSON output (default: <exp>/grad_alignment.json)")
    return p


def measure_checkpoint(task, path: Path, train_batches: list, dev_batches: list, target: str, seed: int) -> dict:
    """Mean galign_/gdev_ figures per term over ``train_batches`` for the model and optimizer of ``path``."""
    import torch

    from justkit.models.factory import load_checkpoint
    from justkit.train.alignment import measure_alignment
    from justkit.train.dev import seed_everything
    from justkit.train.optim import build_optimizer, build_scheduler

    state = load_checkpoint(path)
    model = task.build_model()
    model.load_state_dict(state["model"])
    model.train()
    optimizer = build_optimizer(model.parameters(), task.train.optim)
    scheduler = build_scheduler(optimizer, task.train.optim)
    if "optimizer" in state:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
    lr = scheduler.get_last_lr()[0]
    step = int(state.get("step", 0))
    sums: dict[str, float] = {}
    device = torch.device("cpu")
    prep = lambda b: task.to_device(b, device)  # noqa: E731
    for batch in train_batches:
        seed_everything(seed)
        res = measure_alignment(model, batch, dev_batches, step, optimizer, lr, target, prep)
        for k, v in res.items():
            sums[k] = sums.get(k, 0.0) + v
    return {"step": step, "lr": lr, **{k: v / max(len(train_batches), 1) for k, v in sorted(sums.items())}}


def format_table(rows: list[dict]) -> str:
    terms = sorted({k[len("galign_"):] for r in rows for k in r if k.startswith("galign_")})
    head = "| step | " + " | ".join(f"cos {t}" for t in terms) + " | " + " | ".join(f"dL_dev {t}" for t in terms) + " |"
    lines = [head, "|" + "---|" * (1 + 2 * len(terms))]
    for r in rows:
        cos = " | ".join(f"{r.get('galign_' + t, float('nan')):+.3f}" for t in terms)
        dl = " | ".join(f"{r.get('gdev_' + t, float('nan')):+.2e}" for t in terms)
        lines.append(f"| {r['step']} | {cos} | {dl} |")
    return "\n".join(lines)


@cli.command
def main(argv: Optional[Sequence[str]] = None) -> int:
    a, _ = build_parser().parse(argv)
    import torch

    from justkit.config import ConfigError
    from justkit.experiment import Experiment
    from justkit.fileio import atomic_write_text
    from justkit.train.alignment import pick_batches
    from justkit.train.asr import ASRTask
    from justkit.train.checkpoint import CheckpointError, list_checkpoints
    from justkit.train.distributed import DistInfo

    exp = Path(a.exp)
    setup_logging(exp / "log" / "grad_alignment.log")
    if a.train_batches < 1 or a.dev_batches < 1:
        raise ConfigError("--train_batches and --dev_batches must be >= 1")
    experiment = Experiment.load(exp)
    if not experiment.paths.dev:
        raise ConfigError(f"{exp}/config.yaml: paths.dev is empty: the dev subset is the need measured against")
    ckpts = [Path(c) for c in a.checkpoints] if a.checkpoints else list_checkpoints(exp / "checkpoints")
    if not ckpts:
        raise CheckpointError(f"{exp / 'checkpoints'}: no ckpt-<step>.pt files (run stage 6 first)")
    torch.set_num_threads(max(1, experiment.train.num_threads or torch.get_num_threads()))
    task = ASRTask(experiment)
    task.build_model()
    dist = DistInfo()
    train_loader = task.train_loader(dist, False)
    train_loader.set_epoch(0)
    train_batches = []
    for batch in train_loader:
        task.batch_frames(batch)
        train_batches.append(batch)
        if len(train_batches) == a.train_batches:
            break
    dev_loader = task.dev_loader(dist, False)
    dev_loader.set_epoch(0)
    dev_batches = pick_batches(dev_loader, a.dev_batches)
    rows = []
    for c in ckpts:
        row = measure_checkpoint(task, c, train_batches, dev_batches, a.target, a.seed)
        if len(row) <= 2:
            raise ConfigError(f"{c}: the model has no {a.target!r} term to measure against (a pre-training model?)")
        row["checkpoint"] = str(c)
        rows.append(row)
        logger.info("%s: %s", c, " ".join(f"{k} {v:+.3g}" for k, v in row.items() if k.startswith(("galign_", "gdev_"))))
    table = format_table(rows)
    print(table)
    out = Path(a.out) if a.out else exp / "grad_alignment.json"
    atomic_write_text(out, json.dumps({"exp": str(exp), "train_batches": a.train_batches, "dev_batches": a.dev_batches,
                                       "target": a.target, "seed": a.seed, "rows": rows}, indent=1) + "\n")
    logger.info("wrote %s", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
