"""The training loop: AMP, DDP, gradient accumulation, non-finite skips, checkpoints, exact resume, curves.

The trainer knows a task and a model only through the contract of justkit.train.unit (a
TrainTask builds the model and its loaders; the model returns a LossOutput): it never asks a
model what it is.
"""
from __future__ import annotations

import contextlib
import logging
import math
import time

import torch

from justkit.config import ConfigError
from justkit.train import checkpoint as ckpt_lib
from justkit.train.alignment import GradientMonitors
from justkit.train.balance import restore_buffers, snapshot_buffers
from justkit.train.config import TrainConfig
from justkit.train.curves import TrainCurves
from justkit.train.dev import DevPass, seed_everything
from justkit.train.distributed import DistInfo, all_reduce_, gather_objects
from justkit.train.meter import IntervalMeter, Stopwatch, fmt_eta
from justkit.train.optim import build_optimizer, build_scheduler, clip_gradients
from justkit.train.unit import TrainTask

__all__ = ["Trainer", "TrainConfig", "seed_everything"]
logger = logging.getLogger(__name__)


class Trainer:
    """Runs ``task`` in ``exp_dir`` as DDP rank ``dist.rank`` (rank 0 writes the files).

    Re-running the same command resumes from the newest readable checkpoint in
    ``exp_dir/checkpoints``; a run that already reached its stop criterion returns at once.
    """

    def __init__(self, task: TrainTask, exp_dir, dist: DistInfo | None = None) -> None:
        from pathlib import Path

        self.task = task
        self.dist = dist or DistInfo()
        self.device = self.dist.device
        self.cfg: TrainConfig = task.train
        self.exp_dir = Path(exp_dir)
        self.ckpt_dir = self.exp_dir / "checkpoints"
        self.curves = TrainCurves(self.exp_dir / "train.csv", self.exp_dir / "plots",
                                  self.exp_dir / "tensorboard" if self.cfg.tensorboard and self.dist.is_main else None,
                                  references=task.plot_references())
        if self.cfg.num_threads > 0:
            torch.set_num_threads(self.cfg.num_threads)

        seed_everything(self.cfg.seed)  # identical initial weights on every rank
        self.model = task.build_model().to(self.device)
        seed_everything(self.cfg.seed + self.dist.rank)  # masking/dropout differ between ranks

        self.amp_dtype = self._amp_dtype()
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self.optimizer = build_optimizer(self.model.parameters(), self.cfg.optim)
        self.scheduler = build_scheduler(self.optimizer, self.cfg.optim)
        pin = self.device.type == "cuda"
        self.train_loader = task.train_loader(self.dist, pin)
        self.dev = DevPass(task, task.dev_loader(self.dist, pin), self.dist, self.device, self.cfg.seed,
                           self._autocast)
        self.step = 0
        self.skipped_total = 0
        self.consecutive_skips = 0
        self.last_saved_step = self.last_eval_step = self.last_plot_step = -1
        self.ddp_model: torch.nn.Module = self.model
        self._buffers_before: dict[str, torch.Tensor] | None = None  # restored if the update is skipped
        self.monitors = GradientMonitors(self.cfg, self.model, self.dev.loader,
                                         lambda b: self.task.to_device(b, self.device), self._autocast)
        self.meter = IntervalMeter()
        self.clock = Stopwatch()

    # ------------------------------------------------------------------ set-up
    def _amp_dtype(self) -> torch.dtype | None:
        amp = self.cfg.amp
        if amp == "auto":
            amp = "bf16" if self.device.type == "cuda" else "fp32"
        if amp == "fp16" and self.device.type != "cuda":
            raise ConfigError("train.amp=fp16 needs --device cuda (use bf16 or fp32 on CPU)")
        return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _resume_or_init(self) -> None:
        found = ckpt_lib.load_latest_checkpoint(self.ckpt_dir, map_location="cpu")
        if found is None:
            if self.cfg.init:
                self.task.init_from(self.model, self.cfg.init)
            self.curves.rows = []
            return
        state, path = found
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.train_loader.load_state_dict(state["sampler"])
        rngs = state["rng"]
        if len(rngs) != self.dist.world_size:
            logger.warning("checkpoint holds RNG states of %d ranks, this run has %d: resume is not exact",
                           len(rngs), self.dist.world_size)
        ckpt_lib.set_rng_state(rngs[self.dist.rank % len(rngs)])
        self.step = int(state["step"])
        self.skipped_total = int(state.get("skipped", 0))
        self.clock = Stopwatch(float(state.get("elapsed_s", 0.0)), self.step)
        self.last_saved_step = self.step
        if self.dist.is_main:
            self.curves.resume(self.step)
        logger.info("resumed from %s: step %d, epoch %d, batch %d of the epoch",
                    path, self.step, state["sampler"]["epoch"], state["sampler"]["position"])

    def _wrap_ddp(self) -> None:
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.ddp_model = DDP(
                self.model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=self.cfg.find_unused_parameters,
            )

    # ------------------------------------------------------------------ stop criterion
    def _updates_per_epoch(self) -> int:
        n = len(self.train_loader.batch_sampler.epoch_batches())
        return max(1, math.ceil(n / self.cfg.accum_grad))

    def _total_steps(self) -> float:
        totals = []
        if self.cfg.max_steps > 0:
            totals.append(self.cfg.max_steps)
        if self.cfg.max_epochs > 0:
            totals.append(self.cfg.max_epochs * self._updates_per_epoch())
        return float(min(totals))

    def _done(self) -> bool:
        if self.cfg.max_steps > 0 and self.step >= self.cfg.max_steps:
            return True
        return self.cfg.max_epochs > 0 and self.train_loader.epoch >= self.cfg.max_epochs

    # ------------------------------------------------------------------ one update
    def _micro_step(self, batch: dict, scale: float, sync: bool) -> tuple[dict, torch.Tensor, int]:
        """Forward + backward of one batch; returns (detached terms, finite flag, batch frames).

        The first batch of an update snapshots the model's buffers (batch-norm running
        statistics, ...), which a skipped update restores: a non-finite batch leaves no trace.
        """
        frames = self.task.batch_frames(batch)  # on the host: the step never waits for the device
        batch = self.task.to_device(batch, self.device)
        if self._buffers_before is None:
            self._buffers_before = snapshot_buffers(self.model)
        ctx = contextlib.nullcontext()
        if self.dist.enabled and not sync:
            ctx = self.ddp_model.no_sync()
        with ctx:
            with self._autocast():
                out = self.ddp_model(batch, step=self.step)
            loss = out.loss.float()
            finite = torch.isfinite(loss).all()
            # Backward even when non-finite: under DDP every rank must join the gradient
            # all-reduce; the NaN gradients are then dropped on all ranks together.
            self.scaler.scale(loss * scale).backward()
        terms = {k: v.detach().float() for k, v in out.logged().items()}
        return terms, finite, frames

    def _apply_update(self, finite_local: torch.Tensor) -> tuple[bool, torch.Tensor]:
        """Clip, agree across ranks on skipping, then step. Returns (applied, grad norm as a
        0-dim tensor: read at logging time). Deciding to skip is the one host sync per update
        (as torch's GradScaler's own step does)."""
        if self.scaler.is_enabled():
            self.scaler.unscale_(self.optimizer)
        gnorm = clip_gradients(self.model.parameters(), self.cfg.clip_grad_norm)
        gnorm = gnorm.to(self.device).float()
        bad = (~finite_local.to(self.device)).float().reshape(1) + (~torch.isfinite(gnorm)).float().reshape(1)
        all_reduce_(bad, "max")
        applied = bool(bad.item() == 0)
        if applied:
            if self.scaler.is_enabled():
                self.scaler.step(self.optimizer)
            else:
                self.optimizer.step()
            self.scheduler.step()
            self.step += 1
        elif self._buffers_before is not None:
            restore_buffers(self.model, self._buffers_before)
        self._buffers_before = None
        if self.scaler.is_enabled():
            self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return applied, gnorm.detach()

    # ------------------------------------------------------------------ main loop
    def train(self) -> dict:
        """Train until the stop criterion; returns the last logged train row."""
        self._resume_or_init()
        if self._done():
            logger.info("training already finished (step %d, epoch %d): nothing to do",
                        self.step, self.train_loader.epoch)
            return {}
        self._wrap_ddp()
        self.model.train()
        if self.dist.is_main:
            n_params = sum(p.numel() for p in self.model.parameters())
            logger.info("model: %.2fM parameters; device %s, world size %d, amp %s; %d updates/epoch",
                        n_params / 1e6, self.device, self.dist.world_size,
                        self.amp_dtype or "fp32", self._updates_per_epoch())
        self.clock.start(self.step)
        self.meter.reset()
        last_row: dict = {}
        while not self._done():
            stopped, row = self._run_epoch()
            last_row = row or last_row
            if stopped:
                break
        # End of training: a dev pass, a final checkpoint and the plots, each unless the epoch
        # end just did it (a periodic save at the last step must not skip the dev pass or plots).
        if self.last_eval_step != self.step:
            self._evaluate()
        self._save()
        if self.last_plot_step != self.step:
            self._plot()
        self._check_replicas()
        self.curves.close()
        logger.info("training done: step %d, epoch %d, %d batches skipped, %.1f s",
                    self.step, self.train_loader.epoch, self.skipped_total, time.time() - self.clock.t_start)
        return last_row

    def _run_epoch(self) -> tuple[bool, dict]:
        """Rest of the current epoch. Returns (stopped before the epoch end, last log row)."""
        accum = self.cfg.accum_grad
        remaining = len(self.train_loader.batch_sampler)
        epoch = self.train_loader.epoch
        group: list[tuple[dict, torch.Tensor, list]] = []
        group_start = 0
        last_row: dict = {}
        for i, batch in enumerate(self.train_loader):
            group_size = min(accum, remaining - group_start)
            is_last = len(group) + 1 == group_size
            if not group and self.dist.is_main:  # gradient balance / alignment, outside the update
                t0 = time.time()
                if self.monitors.measure(batch, self.step, self.optimizer, self.scheduler.get_last_lr()[0]):
                    self.meter.pause(time.time() - t0)
            terms, finite, frames = self._micro_step(batch, 1.0 / group_size, sync=is_last)
            self.meter.frames += frames
            group.append((terms, finite, batch["utts"]))
            if not is_last:
                continue
            finite_all = torch.stack([g[1] for g in group]).all()
            applied, gnorm = self._apply_update(finite_all)
            if applied:
                self.consecutive_skips = 0
                self.meter.add_update([g[0] for g in group], gnorm)
            else:
                self._on_skip(group, gnorm, epoch)
            group, group_start = [], i + 1
            if applied:
                row = self._after_update(epoch)
                last_row = row or last_row
                if self.cfg.max_steps > 0 and self.step >= self.cfg.max_steps:
                    return True, last_row
        # The epoch is exhausted (the loader moved the sampler to the next epoch).
        if (epoch + 1) % self.cfg.epoch_end_interval == 0:
            self._evaluate()
            self._save()
            self._plot()
        return False, last_row

    def _on_skip(self, group: list, gnorm: torch.Tensor, epoch: int) -> None:
        self.skipped_total += 1
        self.consecutive_skips += 1
        self.meter.skipped += 1
        utts = [u for g in group for u in g[2]]
        bad_terms = sorted({k for g in group for k, v in g[0].items() if not torch.isfinite(v)})
        logger.warning(
            "step %d (epoch %d): non-finite %s on some rank; update skipped, weights unchanged. "
            "this rank's utterances: %s%s",
            self.step, epoch, ", ".join(bad_terms) if bad_terms else f"gradient (norm {float(gnorm)})",
            " ".join(utts[:8]), " ..." if len(utts) > 8 else "",
        )
        if self.consecutive_skips >= self.cfg.max_consecutive_skips:
            raise RuntimeError(
                f"{self.consecutive_skips} consecutive updates skipped for non-finite loss/gradients "
                f"(last at step {self.step}, utterances {' '.join(utts[:8])}): training diverged; "
                f"lower train.optim.peak_lr or check the data"
            )

    def _after_update(self, epoch: int) -> dict:
        row: dict = {}
        if self.step % self.cfg.log_interval == 0:
            row = self._log(epoch)
        if self.cfg.save_interval > 0 and self.step % self.cfg.save_interval == 0:
            self._save()
        if self.cfg.dev_interval > 0 and self.step % self.cfg.dev_interval == 0:
            self._evaluate()
        return row

    def _log(self, epoch: int) -> dict:
        measured, keys = self.meter.row(self.dist, self.device)
        eta = self.clock.eta(self.step, self._total_steps())
        row = {"split": "train", "step": self.step, "epoch": epoch, "lr": self.scheduler.get_last_lr()[0],
               **measured, "elapsed_s": self.clock.elapsed()}
        measured_grads = self.monitors.pop()
        row.update(measured_grads)
        balance = GradientMonitors.summary(measured_grads)
        if self.dist.is_main:
            # The first fields are the heartbeat asr.sh shows on the console (cut at the 5th '|').
            skipped = row["skipped"]
            terms = " ".join(f"{k} {row[k]:.4g}" for k in keys if k not in ("num_frames", "loss"))
            logger.info("step %d epoch %d | loss %.4g | lr %.3e | %.0f frames/s | ETA %s%s | %s | gnorm %.3g%s",
                        self.step, epoch, row.get("loss", float("nan")), row["lr"], row["frames_per_s"],
                        fmt_eta(eta), f" | {skipped} skipped" if skipped else "", terms, row["grad_norm"], balance)
            self.curves.add(row)
            self.curves.write_csv()
        return row

    # ------------------------------------------------------------------ dev, checkpoints
    def _evaluate(self) -> None:
        self.last_eval_step = self.step
        t0 = time.time()
        res = self.dev.run(self.model, self.step)
        if self.dist.is_main and res:
            terms = " ".join(f"{k} {v:.4g}" for k, v in res.items() if k not in ("num_frames", "loss", "dev_wer"))
            wer = f"greedy WER {res['dev_wer']:.2f}%" if "dev_wer" in res else "no WER"
            logger.info("dev at step %d (%d epochs done) | loss %.4g | %s | %.1f s | %s", self.step,
                        self.train_loader.epoch, res.get("loss", float("nan")), wer, time.time() - t0, terms)
            self.curves.add({"split": "dev", "step": self.step, "epoch": self.train_loader.epoch, **res})
            self.curves.write_csv()
        self.meter.pause(time.time() - t0)

    def _check_replicas(self) -> None:
        """Under DDP, fail loudly if the ranks' weights have drifted apart (they never should)."""
        if not self.dist.enabled:
            return
        with torch.no_grad():
            sig = torch.stack([p.detach().double().sum() for p in self.model.parameters()]).cpu()
        sigs = gather_objects(sig, self.dist)
        for r, other in enumerate(sigs[1:], start=1):
            if not torch.equal(sigs[0], other):
                raise RuntimeError(f"DDP replicas diverged: rank {r}'s weights differ from rank 0's")
        logger.info("DDP: weights identical on all %d ranks", self.dist.world_size)

    def checkpoint_state(self) -> dict:
        """Everything a resume needs; collective under DDP (gathers every rank's RNG state)."""
        rngs = gather_objects(ckpt_lib.rng_state(), self.dist)
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "sampler": self.train_loader.state_dict(),
            "rng": rngs,
            "step": self.step,
            "epoch": self.train_loader.epoch,
            "skipped": self.skipped_total,
            "elapsed_s": self.clock.elapsed(),
            "config": self.task.config,
        }

    def _save(self) -> None:
        if self.last_saved_step == self.step:
            return
        t0 = time.time()
        bad = [k for k, v in self.model.state_dict().items()
               if torch.is_tensor(v) and v.is_floating_point() and not bool(torch.isfinite(v).all())]
        if bad:
            raise RuntimeError(
                f"step {self.step}: the model holds non-finite values in {', '.join(bad[:5])}"
                f"{' ...' if len(bad) > 5 else ''}; not saving it over the last good checkpoint")
        state = self.checkpoint_state()
        if self.dist.is_main:
            keep = ckpt_lib.best_steps(self.curves.csv_path, self.cfg.best_metric, self.cfg.keep_best)
            path = ckpt_lib.save_checkpoint(state, self.ckpt_dir, self.step, self.cfg.keep_last, keep)
            logger.info("saved %s", path)
        self.last_saved_step = self.step
        self.meter.pause(time.time() - t0)

    def _plot(self) -> None:
        """Rewrite plots/*.png (rank 0; at epoch ends and at the end: matplotlib takes seconds)."""
        self.last_plot_step = self.step
        if self.dist.is_main and self.cfg.plots:
            t0 = time.time()
            self.curves.plot()
            self.meter.pause(time.time() - t0)
