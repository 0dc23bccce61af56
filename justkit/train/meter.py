"""What one log interval of training measured: summed terms, frames, updates, skips, and the time
outside the pauses (dev passes, checkpoints, plots); turned into a ``train.csv`` row."""
from __future__ import annotations

import math
import time
import torch

from justkit.train.distributed import DistInfo, all_reduce_


def fmt_eta(seconds: float) -> str:
    """h:mm:ss, or ? when unknown."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class IntervalMeter:
    """Accumulates one log interval; :meth:`row` reduces it over the ranks and starts the next."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.sums: dict[str, torch.Tensor | float] = {}
        self.count = 0       # batches of the applied updates
        self.frames = 0      # host-side input frames of every batch
        self.gnorm: torch.Tensor | float = 0.0
        self.updates = 0
        self.skipped = 0
        self.t0 = time.time()
        self.paused = 0.0    # dev evaluation, checkpoint and plot time inside the interval

    def add_update(self, group_terms: list[dict], gnorm: torch.Tensor) -> None:
        """An applied update: its batches' logged terms and the gradient norm (read at log time)."""
        for t in group_terms:
            for k, v in t.items():
                self.sums[k] = self.sums.get(k, 0.0) + v
        self.count += len(group_terms)
        self.gnorm += gnorm
        self.updates += 1

    def row(self, dist: DistInfo, device: torch.device) -> tuple[dict, list[str]]:
        """(the interval's means over batches and ranks with frames_per_s, grad_norm and skipped;
        the term names in the order logged) and a fresh interval."""
        keys = sorted(self.sums)
        vals = torch.tensor([float(self.sums[k]) for k in keys] + [self.count, self.frames, self.skipped],
                            dtype=torch.float64)
        if dist.enabled:
            vals = all_reduce_(vals.to(device), "sum").cpu()
        n = max(vals[len(keys)].item(), 1.0)
        frames = vals[len(keys) + 1].item()
        elapsed = max(time.time() - self.t0 - self.paused, 1e-9)
        row = {"grad_norm": float(self.gnorm) / max(self.updates, 1), "frames_per_s": frames / elapsed,
               "skipped": int(vals[len(keys) + 2].item())}
        row.update({k: vals[i].item() / n for i, k in enumerate(keys)})
        self.reset()
        return row, keys

    def pause(self, seconds: float) -> None:
        self.paused += seconds


class Stopwatch:
    """Training wall time summed over every run of one experiment (resumes) and ETA per step."""

    def __init__(self, elapsed_before: float = 0.0, step: int = 0) -> None:
        self.elapsed_before = elapsed_before
        self.start(step)

    def start(self, step: int) -> None:
        self.t_start = time.time()
        self.step_at_start = step

    def elapsed(self) -> float:
        return self.elapsed_before + time.time() - self.t_start

    def eta(self, step: int, total_steps: float) -> float:
        per_step = (time.time() - self.t_start) / max(step - self.step_at_start, 1)
        return (total_steps - step) * per_step
