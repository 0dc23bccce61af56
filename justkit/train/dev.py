"""The dev pass: mean loss terms over the dev set (every rank's shard), then the task's own dev
figures on rank 0 (greedy WER per language for a recogniser), without touching the training RNG."""
from __future__ import annotations

import contextlib
import logging
import random
from typing import Callable, ContextManager, Optional

import numpy as np
import torch
from torch import nn

from justkit.train.distributed import DistInfo, all_reduce_
from justkit.train.unit import Loader, TrainTask

logger = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


class DevPass:
    """``run(model, step)`` -> the dev row's values (dev loss terms + the task's metrics), {} without a dev set."""

    def __init__(self, task: TrainTask, loader: Optional[Loader], dist: DistInfo, device: torch.device,
                 seed: int, autocast: Callable[[], ContextManager] = contextlib.nullcontext) -> None:
        self.task, self.loader, self.dist, self.device = task, loader, dist, device
        self.seed, self.autocast = seed, autocast

    @torch.no_grad()
    def loss(self, model: nn.Module, step: int) -> dict[str, float]:
        """Mean loss terms over the dev set (all ranks' shards), with the same masks at every pass."""
        if self.loader is None:
            return {}
        was_training = model.training
        model.eval()
        sums: dict[str, float] = {}
        n_utts = 0
        devices = [self.device.index] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            seed_everything(self.seed + 7919)  # the same masks at every evaluation
            self.loader.set_epoch(0)
            for batch in self.loader:
                b = len(batch["utts"])
                with self.autocast():
                    out = model(self.task.to_device(batch, self.device), step=step)
                for k, v in out.logged().items():
                    sums[k] = sums.get(k, 0.0) + float(v.float()) * b
                n_utts += b
        model.train(was_training)
        keys = sorted(sums)
        vals = torch.tensor([sums[k] for k in keys] + [n_utts], dtype=torch.float64)
        if self.dist.enabled:
            # Ranks hold the same keys (same model, same mode); sum their shards.
            vals = all_reduce_(vals.to(self.device), "sum").cpu()
        total = max(vals[-1].item(), 1.0)
        return {k: vals[i].item() / total for i, k in enumerate(keys)}

    def run(self, model: nn.Module, step: int) -> dict[str, float]:
        """Dev loss terms and, on rank 0, the task's dev metrics."""
        res = self.loss(model, step)
        if self.dist.is_main and res:
            with self.autocast():
                res.update(self.task.dev_metrics(model, self.device))
        return res
