"""Gradient alignment: does each loss term push the shared encoder where the dev set's recognition
loss wants it to go? (``train.grad_alignment_interval``, ``python -m justkit.bin.grad_alignment``.)

For one training batch, each weighted term's gradient g_k on the model's ``shared_parameters()``;
for a fixed small dev subset, the gradient g_dev of the recognition term (``rnnt``) there. Logged
per term (docs/training.md, "Gradient alignment"):

- ``galign_<term>`` = cos(g_k, g_dev): +1 the term pulls exactly where the dev loss needs, 0 it
  is orthogonal to that need (its updates neither help nor hurt recognition to first order), < 0
  it works against it;
- ``gdev_<term>`` = -lr * <g_dev, P g_k>: the first-order change of the dev recognition loss that
  the term's own Adam-scaled update would cause (P = 1 / (sqrt(v_hat) + eps), the optimizer's
  current second-moment preconditioner, momentum left out); negative = the term's update lowers
  the dev loss. Sums over terms to the whole update's first-order effect.

Both are measured outside the training step (RNG forked, buffers restored): training is unchanged.
"""
from __future__ import annotations

import contextlib
import logging
from typing import Callable, ContextManager, Iterable, Mapping, Optional, Sequence

import torch
from torch import nn

from justkit.train.balance import measure_balance, term_gradients

logger = logging.getLogger(__name__)
PREFIXES = ("galign_", "gdev_")


def pick_batches(batches: Iterable[dict], k: int) -> list[dict]:
    """``k`` batches spread evenly over ``batches`` (a dev loader's, in length order), kept on the host."""
    all_ = list(batches)
    if k <= 0 or not all_:
        return []
    if k >= len(all_):
        return all_
    return [all_[round(i * (len(all_) - 1) / max(k - 1, 1))] for i in range(k)]


def adam_preconditioner(optimizer: torch.optim.Optimizer, params: Sequence[nn.Parameter]) -> list[torch.Tensor]:
    """1 / (sqrt(v / (1 - beta2^t)) + eps) per parameter from an Adam/AdamW optimizer's state; ones
    (plain gradient direction) for a parameter without state yet."""
    group_of = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    out = []
    for p in params:
        st = optimizer.state.get(p, {})
        g = group_of.get(id(p), {})
        if "exp_avg_sq" not in st or "betas" not in g:
            out.append(torch.ones_like(p))
            continue
        step = float(st["step"])
        v_hat = st["exp_avg_sq"] / (1.0 - g["betas"][1] ** max(step, 1.0))
        out.append(1.0 / (v_hat.sqrt() + g["eps"]))
    return out


def dev_gradient(model: nn.Module, batches: Sequence[Mapping], step: int, params: list[nn.Parameter],
                 target: str, prepare: Callable[[Mapping], Mapping] = dict,
                 autocast: Callable[[], ContextManager] = contextlib.nullcontext) -> Optional[list[torch.Tensor]]:
    """The gradient of the ``target`` term, averaged over ``batches`` (weighted by utterances), in
    eval mode (no dropout); None when the model has no such term."""
    was_training = model.training
    model.eval()
    total: Optional[list[torch.Tensor]] = None
    n = 0
    try:
        for batch in batches:
            grads = term_gradients(model, batch, step, params, prepare, autocast).get(target)
            if grads is None:
                return None
            b = len(batch["utts"])
            g = [(x if x is not None else torch.zeros_like(p)) * b for x, p in zip(grads, params)]
            total = g if total is None else [a + c for a, c in zip(total, g)]
            n += b
    finally:
        model.train(was_training)
    return None if total is None else [t / max(n, 1) for t in total]


def _dot(a: Sequence[Optional[torch.Tensor]], b: Sequence[Optional[torch.Tensor]]) -> torch.Tensor:
    parts = [(x.double() * y.double()).sum() for x, y in zip(a, b) if x is not None and y is not None]
    return torch.stack(parts).sum() if parts else torch.zeros((), dtype=torch.float64)


def measure_alignment(model: nn.Module, train_batch: Mapping, dev_batches: Sequence[Mapping], step: int,
                      optimizer: torch.optim.Optimizer, lr: float, target: str = "rnnt",
                      prepare: Callable[[Mapping], Mapping] = dict,
                      autocast: Callable[[], ContextManager] = contextlib.nullcontext) -> dict[str, float]:
    """``galign_<term>`` and ``gdev_<term>`` for every weighted term of ``train_batch`` (see the
    module docstring); {} when there is nothing to measure (no dev batch, no ``target`` term)."""
    params = [p for p in model.shared_parameters() if p.requires_grad]
    if not params or not dev_batches:
        return {}
    g_dev = dev_gradient(model, dev_batches, step, params, target, prepare, autocast)
    if g_dev is None:
        return {}
    grads = term_gradients(model, train_batch, step, params, prepare, autocast)
    pre = adam_preconditioner(optimizer, params)
    dev_norm = _dot(g_dev, g_dev).sqrt()
    out: dict[str, float] = {}
    for name, g in grads.items():
        norm = _dot(g, g).sqrt()
        cos = _dot(g, g_dev) / (norm * dev_norm) if float(norm) > 0 and float(dev_norm) > 0 else torch.zeros(())
        scaled = [x * q if x is not None else None for x, q in zip(g, pre)]
        out[f"galign_{name}"] = float(cos)
        out[f"gdev_{name}"] = float(-lr * _dot(g_dev, scaled))
    return out


class GradientMonitors:
    """The trainer's gradient monitors (rank 0, outside the update): the balance of the terms on the
    shared encoder every ``train.grad_balance_interval`` steps (justkit.train.balance) and their
    alignment with the dev recognition loss every ``train.grad_alignment_interval`` steps, on the
    first batch of the update; :meth:`pop` hands the latest figures to the next log row."""

    def __init__(self, cfg, model: nn.Module, dev_loader, prepare: Callable[[Mapping], Mapping],
                 autocast: Callable[[], ContextManager] = contextlib.nullcontext) -> None:
        self.cfg, self.model, self.dev_loader = cfg, model, dev_loader
        self.prepare, self.autocast = prepare, autocast
        self._dev: Optional[list[dict]] = None  # the fixed dev subset, chosen at the first measurement
        self._latest: dict[str, float] = {}

    def measure(self, batch: Mapping, step: int, optimizer: torch.optim.Optimizer, lr: float) -> bool:
        """Measure what is due at ``step``; True when anything was measured."""
        bi, ai = self.cfg.grad_balance_interval, self.cfg.grad_alignment_interval
        done = False
        if bi > 0 and step % bi == 0:
            self._latest.update(measure_balance(self.model, batch, step, self.prepare, self.autocast))
            done = True
        if ai > 0 and step % ai == 0 and self._dev_batches():
            self._latest.update(measure_alignment(self.model, batch, self._dev, step, optimizer, lr,
                                                  self.cfg.grad_alignment_target, self.prepare, self.autocast))
            done = True
        return done

    def _dev_batches(self) -> list[dict]:
        if self._dev is None:
            if self.dev_loader is None:
                logger.warning("train.grad_alignment_interval: no dev set to align with; not measured")
                self._dev = []
            else:
                self.dev_loader.set_epoch(0)
                self._dev = pick_batches(self.dev_loader, self.cfg.grad_alignment_batches)
        return self._dev

    def pop(self) -> dict[str, float]:
        out, self._latest = self._latest, {}
        return out

    @staticmethod
    def summary(measured: Mapping[str, float]) -> str:
        """The log line's tail: each term's share of the encoder gradient and its cosine with the dev need."""
        shares = {k[len("gshare_"):]: v for k, v in measured.items() if k.startswith("gshare_")}
        cos = {k[len("galign_"):]: v for k, v in measured.items() if k.startswith("galign_")}
        out = " | encoder grad share " + " ".join(f"{k} {v:.2f}" for k, v in shares.items()) if shares else ""
        return out + (" | cos with dev need " + " ".join(f"{k} {v:+.3f}" for k, v in cos.items()) if cos else "")
