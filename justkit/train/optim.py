"""Optimizer (Adam), the warm-up + inverse-square-root learning-rate schedule, gradient clipping."""
from __future__ import annotations

import dataclasses
import math
from typing import Iterable

import torch

from justkit.config import ConfigError


@dataclasses.dataclass
class OptimConfig:
    """Adam with the Transformer schedule (Vaswani et al. 2017, §5.3), as Conformer and w2v-BERT use.

    ``schedule``: ``noam`` = linear warm-up to ``peak_lr`` over ``warmup_steps``, then
    ``peak_lr * sqrt(warmup_steps / step)``; ``constant`` = warm-up then flat;
    ``linear`` = warm-up then linear decay to ``min_lr`` at ``decay_steps``.
    The learning rate never falls below ``min_lr``.
    """

    name: str = "adam"                 # adam | adamw
    peak_lr: float = 2e-3
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-9
    weight_decay: float = 0.0
    schedule: str = "noam"             # noam | constant | linear
    warmup_steps: int = 25000
    decay_steps: int = 0               # only for schedule=linear
    min_lr: float = 0.0

    def __post_init__(self) -> None:
        if len(self.betas) != 2:
            raise ConfigError(f"train.optim.betas must be two numbers, got {self.betas!r}")
        self.betas = (float(self.betas[0]), float(self.betas[1]))
        if not all(0.0 <= b < 1.0 for b in self.betas):  # also refuses NaN
            raise ConfigError(f"train.optim.betas must be in [0, 1), got {list(self.betas)}")
        for name in ("peak_lr", "eps"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ConfigError(f"train.optim.{name} must be a finite number > 0, got {v}")
        for name in ("weight_decay", "min_lr"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ConfigError(f"train.optim.{name} must be a finite number >= 0, got {v}")
        if self.min_lr > self.peak_lr:
            raise ConfigError(f"train.optim.min_lr {self.min_lr} is above peak_lr {self.peak_lr}")
        if self.warmup_steps < 0 or self.decay_steps < 0:
            raise ConfigError("train.optim.warmup_steps and decay_steps must be >= 0")


class WarmupSchedule:
    """Multiplier on ``peak_lr`` at optimizer step ``step`` (LambdaLR calls it with 0, 1, ...).

    A class, not a closure, so that ``LambdaLR.state_dict()`` saves its fields.
    """

    def __init__(self, cfg: OptimConfig):
        self.schedule = cfg.schedule
        self.warmup = max(int(cfg.warmup_steps), 0)
        self.decay = int(cfg.decay_steps)
        self.floor = cfg.min_lr / cfg.peak_lr if cfg.peak_lr > 0 else 0.0

    def __call__(self, step: int) -> float:
        s = step + 1  # the lr used for the (step+1)-th update; never 0 at the first update
        if self.warmup > 0 and s < self.warmup:
            f = s / self.warmup
        elif self.schedule == "noam":
            f = math.sqrt(max(self.warmup, 1) / s)
        elif self.schedule == "constant":
            f = 1.0
        elif self.schedule == "linear":
            span = max(self.decay - self.warmup, 1)
            f = 1.0 - (1.0 - self.floor) * min(max(s - self.warmup, 0) / span, 1.0)
        else:  # checked in build_scheduler; here for safety
            raise ValueError(f"unknown schedule {self.schedule!r}")
        return max(f, self.floor)


def build_optimizer(params: Iterable[torch.nn.Parameter], cfg: OptimConfig) -> torch.optim.Optimizer:
    """Adam/AdamW over ``params`` with ``cfg``'s betas, eps, weight decay and peak lr."""
    kw = dict(lr=cfg.peak_lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay)
    if cfg.name == "adam":
        return torch.optim.Adam(params, **kw)
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, **kw)
    raise ConfigError(f"train.optim.name: unknown optimizer {cfg.name!r}; choose adam or adamw")


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """LambdaLR over :class:`WarmupSchedule`; call ``.step()`` once per optimizer update."""
    if cfg.schedule not in ("noam", "constant", "linear"):
        raise ConfigError(f"train.optim.schedule: unknown schedule {cfg.schedule!r}; choose noam, constant or linear")
    if cfg.schedule == "linear" and cfg.decay_steps <= cfg.warmup_steps:
        raise ConfigError("train.optim.decay_steps must exceed warmup_steps for schedule=linear")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupSchedule(cfg))


def clip_gradients(params: Iterable[torch.nn.Parameter], max_norm: float) -> torch.Tensor:
    """Clip the global L2 norm to ``max_norm`` (<= 0: measure only); returns the norm before clipping.

    The returned norm is non-finite when any gradient is; the trainer then skips the update.
    """
    params = [p for p in params if p.grad is not None]
    if not params:
        return torch.tensor(0.0)
    if max_norm and max_norm > 0:
        return torch.nn.utils.clip_grad_norm_(params, max_norm, error_if_nonfinite=False)
    return torch.nn.utils.get_total_norm([p.grad for p in params])
