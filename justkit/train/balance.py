"""Each loss term's share of the shared encoder's gradient (``train.grad_balance_interval``).

A separate forward of the unwrapped model on one training batch (RNG forked, buffers restored),
then one backward per weighted term (LossOutput.weighted) with respect to the model's
``shared_parameters()``: the training step itself is unchanged by measuring.
"""
from __future__ import annotations

import contextlib
import math
from typing import Callable, ContextManager, Mapping

import torch
from torch import nn


def snapshot_buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the model's buffers (batch-norm running statistics, ...)."""
    return {k: b.detach().clone() for k, b in model.named_buffers()}


def restore_buffers(model: nn.Module, saved: Mapping[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for k, b in model.named_buffers():
            b.copy_(saved[k])


def term_gradients(model: nn.Module, batch: Mapping, step: int, params: list[nn.Parameter],
                   prepare: Callable[[Mapping], Mapping] = dict,
                   autocast: Callable[[], ContextManager] = contextlib.nullcontext,
                   ) -> dict[str, list[torch.Tensor | None]]:
    """Each weighted term's gradient on ``params`` for ``batch`` (``prepare`` puts it on the
    model's device, inside the forked RNG), computed without a trace: the RNG is forked and the
    buffers restored afterwards."""
    saved = snapshot_buffers(model)
    device = params[0].device if params else torch.device("cpu")
    devices = [device.index] if device.type == "cuda" else []
    grads: dict[str, list[torch.Tensor | None]] = {}
    with torch.random.fork_rng(devices=devices):
        with autocast():
            out = model(prepare(batch), step=step)
        for name, term in out.weighted.items():
            if term.requires_grad:
                grads[name] = list(torch.autograd.grad(term.float(), params, retain_graph=True, allow_unused=True))
    del out
    restore_buffers(model, saved)
    return grads


def grad_norm(grads: list[torch.Tensor | None], device: torch.device) -> torch.Tensor:
    sq = [g.float().pow(2).sum() for g in grads if g is not None]
    return torch.stack(sq).sum().sqrt() if sq else torch.zeros((), device=device)


def measure_balance(model: nn.Module, batch: Mapping, step: int, prepare: Callable[[Mapping], Mapping] = dict,
                    autocast: Callable[[], ContextManager] = contextlib.nullcontext) -> dict[str, float]:
    """``gnorm_<term>`` (its gradient norm on the shared parameters) and ``gshare_<term>`` (its
    share of the sum of those norms) for every weighted term; {} when there is nothing to measure."""
    params = [p for p in model.shared_parameters() if p.requires_grad]
    if not params:
        return {}
    grads = term_gradients(model, batch, step, params, prepare, autocast)
    if not grads:
        return {}
    vals = {k: float(grad_norm(g, params[0].device)) for k, g in grads.items()}  # one host sync per term
    total = sum(v for v in vals.values() if math.isfinite(v))
    out = {f"gnorm_{k}": v for k, v in vals.items()}
    out.update({f"gshare_{k}": (v / total if total > 0 else 0.0) for k, v in vals.items()})
    return out
