"""The training loop: AMP, DDP, gradient accumulation, non-finite skips, checkpoints, exact resume, curves."""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from justkit.config import ConfigError
from justkit.experiment import Experiment
from justkit.models.factory import build_model
from justkit.train import checkpoint as ckpt_lib
from justkit.train.curves import TrainCurves
from justkit.train.distributed import DistInfo, all_reduce_, gather_objects
from justkit.train.config import TrainConfig
from justkit.train.optim import build_optimizer, build_scheduler, clip_gradients

logger = logging.getLogger(__name__)



def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _to_device(batch: dict, device: torch.device) -> dict:
    return {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}


def _fmt_eta(seconds: float) -> str:
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class Trainer:
    """Runs ``experiment`` in ``exp_dir`` as DDP rank ``dist.rank`` (rank 0 writes the files).

    The training and dev sets, tokenizer and CMVN are the experiment's ``paths``. Re-running
    the same command resumes from the newest readable checkpoint in ``exp_dir/checkpoints``;
    a run that already reached its stop criterion returns at once.
    """

    def __init__(self, experiment: Experiment | dict, exp_dir: str | Path, dist: DistInfo | None = None) -> None:
        from justkit.data.loader import build_loader

        if not isinstance(experiment, Experiment):
            experiment = Experiment.from_dict(experiment)
        self.experiment = experiment
        self.config = experiment.to_dict()  # stored in every checkpoint
        self.dist = dist or DistInfo()
        self.device = self.dist.device
        self.cfg: TrainConfig = experiment.train
        self.data_cfg = experiment.data
        paths = experiment.paths
        if not paths.train:
            raise ConfigError("paths.train: no training set given (the packed jsonl of stage 5)")
        train_jsonl, dev_jsonl, cmvn = paths.train, paths.dev or None, paths.cmvn or None
        # stage 3's fbank options: the loader (or, with data.features_on device, the training step)
        # computes features with them for examples packed with audio
        fbank = experiment.frontend_config()
        self.exp_dir = Path(exp_dir)
        self.ckpt_dir = self.exp_dir / "checkpoints"
        self.curves = TrainCurves(self.exp_dir / "train.csv", self.exp_dir / "plots",
                                  self.exp_dir / "tensorboard" if self.cfg.tensorboard and self.dist.is_main else None)
        if self.cfg.num_threads > 0:
            torch.set_num_threads(self.cfg.num_threads)

        seed_everything(self.cfg.seed)  # identical initial weights on every rank
        self.model = build_model(experiment.model).to(self.device)
        seed_everything(self.cfg.seed + self.dist.rank)  # masking/dropout differ between ranks

        self.amp_dtype = self._amp_dtype()
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self.optimizer = build_optimizer(self.model.parameters(), self.cfg.optim)
        self.scheduler = build_scheduler(self.optimizer, self.cfg.optim)

        # A supervised model learns nothing from unlabelled utterances: leave them out.
        supervised_only = not getattr(self.model, "unsupervised", True)
        self.train_loader = build_loader(
            self.data_cfg, train_jsonl, cmvn, rank=self.dist.rank, world_size=self.dist.world_size, train=True,
            labelled_only=supervised_only, pin_memory=self.device.type == "cuda", fbank=fbank,
        )
        self._device_cmvn = self.train_loader.dataset.cmvn
        if self.dist.is_main:
            ds = self.train_loader.dataset
            n_lab = int(ds.labelled.sum())
            logger.info("training set %s: %d utterances, %d labelled%s", train_jsonl, len(ds), n_lab,
                        " (unlabelled ones left out: supervised model)" if supervised_only else "")
        self.dev_loader = None
        if dev_jsonl:
            self.dev_loader = build_loader(
                self.data_cfg, dev_jsonl, cmvn, rank=self.dist.rank, world_size=self.dist.world_size,
                train=False, max_frames=self.cfg.dev_max_frames or None, pin_memory=self.device.type == "cuda",
                fbank=fbank,
            )
        self.step = 0
        self.skipped_total = 0
        self.elapsed_before = 0.0  # training wall time of the runs this one resumes
        self.t_start = time.time()
        self.consecutive_skips = 0
        self.last_saved_step = -1
        self.last_eval_step = -1
        self.last_plot_step = -1
        self.ddp_model: torch.nn.Module = self.model
        self._buffers_before: dict[str, torch.Tensor] | None = None  # restored if the update is skipped
        self.balance: dict[str, float] = {}  # latest gradient-balance measurement

    # ------------------------------------------------------------------ set-up
    def _to_device(self, batch: dict) -> dict:
        """The batch on the training device; with data.features_on device, fbank + CMVN computed there."""
        batch = _to_device(batch, self.device)
        if "wave" in batch:
            from justkit.data.loader import device_features

            batch = device_features(batch, self.train_loader.dataset.fbank, self._device_cmvn)
        return batch

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
                self._init_from(self.cfg.init)
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
        self.elapsed_before = float(state.get("elapsed_s", 0.0))
        self.last_saved_step = self.step
        if self.dist.is_main:
            self.curves.resume(self.step)
        logger.info("resumed from %s: step %d, epoch %d, batch %d of the epoch",
                    path, self.step, state["sampler"]["epoch"], state["sampler"]["position"])

    def _init_from(self, path: str) -> None:
        state = ckpt_lib.load_checkpoint(path, map_location="cpu")
        if not hasattr(self.model, "load_pretrained_encoder"):
            raise ConfigError(f"train.init={path}: the model has no load_pretrained_encoder()")
        loaded = self.model.load_pretrained_encoder(state["model"])
        logger.info("initialised the encoder from %s (step %s): %d tensors loaded", path,
                    state.get("step", "?"), len(loaded) if loaded is not None else -1)

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
    def _snapshot_buffers(self) -> dict[str, torch.Tensor]:
        return {k: b.detach().clone() for k, b in self.model.named_buffers()}

    def _restore_buffers(self, saved: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for k, b in self.model.named_buffers():
                b.copy_(saved[k])

    def _micro_step(self, batch: dict, scale: float, sync: bool) -> tuple[dict, torch.Tensor, int]:
        """Forward + backward of one batch; returns (detached terms, finite flag, input frames).

        The first batch of an update snapshots the model's buffers (batch-norm running
        statistics, ...), which a skipped update restores: a non-finite batch leaves no trace.
        """
        # Lengths are read while still on the host: the step itself never waits for the device.
        frames = int(batch["feat_lens"].sum())
        check = getattr(getattr(self.model, "frontend", None), "check_lengths", None)
        if check is not None:
            try:
                check(batch["feat_lens"], batch["feats"].size(1) if "feats" in batch else int(batch["feat_lens"].max()))
            except ValueError as e:
                raise ValueError(f"{e} (batch with {', '.join(batch.get('utts', [])[:4])} ...)") from None
        batch = self._to_device(batch)
        if self._buffers_before is None:
            self._buffers_before = self._snapshot_buffers()
        ctx = contextlib.nullcontext()
        if self.dist.enabled and not sync:
            ctx = self.ddp_model.no_sync()
        with ctx:
            with self._autocast():
                out = self.ddp_model(batch, step=self.step)
            loss = out["loss"].float()
            finite = torch.isfinite(loss).all()
            # Backward even when non-finite: under DDP every rank must join the gradient
            # all-reduce; the NaN gradients are then dropped on all ranks together.
            self.scaler.scale(loss * scale).backward()
        terms = {k: v.detach().float() for k, v in out.items() if torch.is_tensor(v) and v.numel() == 1}
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
            self._restore_buffers(self._buffers_before)
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
        self.t_start = time.time()
        self.step_at_start = self.step
        self._reset_interval()
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
                    self.step, self.train_loader.epoch, self.skipped_total, time.time() - self.t_start)
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
            iv = self.cfg.grad_balance_interval
            if not group and iv > 0 and self.step % iv == 0 and self.dist.is_main:
                self._measure_balance(batch)
            terms, finite, frames = self._micro_step(batch, 1.0 / group_size, sync=is_last)
            self.iv_frames += frames
            group.append((terms, finite, batch["utts"]))
            if not is_last:
                continue
            finite_all = torch.stack([g[1] for g in group]).all()
            applied, gnorm = self._apply_update(finite_all)
            if applied:
                self.consecutive_skips = 0
                for t, _, _ in group:
                    for k, v in t.items():
                        self.iv_sums[k] = self.iv_sums.get(k, 0.0) + v
                self.iv_count += len(group)
                self.iv_gnorm += gnorm
                self.iv_updates += 1
            else:
                self._on_skip(group, gnorm, epoch)
            group, group_start = [], i + 1
            if applied:
                row = self._after_update(epoch)
                last_row = row or last_row
                if self.cfg.max_steps > 0 and self.step >= self.cfg.max_steps:
                    return True, last_row
        # The epoch is exhausted (the loader moved the sampler to the next epoch).
        self._evaluate()
        self._save()
        self._plot()
        return False, last_row

    def _measure_balance(self, batch: dict) -> None:
        """Each loss term's gradient norm on the shared encoder, and its share of their sum.

        A separate forward of the unwrapped model on ``batch`` (RNG forked, buffers restored),
        then one backward per term: the training step itself is unchanged by measuring.
        """
        params_of = getattr(self.model, "encoder_parameters", None)
        if params_of is None:
            return
        params = [p for p in params_of() if p.requires_grad]
        saved = self._snapshot_buffers()
        devices = [self.device.index] if self.device.type == "cuda" else []
        norms: dict[str, torch.Tensor] = {}
        with torch.random.fork_rng(devices=devices):
            with self._autocast():
                out = self.model(self._to_device(batch), step=self.step)
            for name, term in (out.get("weighted") or {}).items():
                if not term.requires_grad:
                    continue
                grads = torch.autograd.grad(term.float(), params, retain_graph=True, allow_unused=True)
                sq = [g.float().pow(2).sum() for g in grads if g is not None]
                norms[name] = torch.stack(sq).sum().sqrt() if sq else torch.zeros((), device=self.device)
        del out
        self._restore_buffers(saved)
        if not norms:
            return
        vals = {k: float(v) for k, v in norms.items()}  # one host sync per measurement
        total = sum(v for v in vals.values() if math.isfinite(v))
        self.balance = {f"gnorm_{k}": v for k, v in vals.items()}
        self.balance.update({f"gshare_{k}": (v / total if total > 0 else 0.0) for k, v in vals.items()})

    def _on_skip(self, group: list, gnorm: torch.Tensor, epoch: int) -> None:
        self.skipped_total += 1
        self.consecutive_skips += 1
        self.iv_skipped += 1
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

    def _reset_interval(self) -> None:
        self.iv_sums: dict[str, torch.Tensor | float] = {}
        self.iv_count = 0
        self.iv_frames = 0
        self.iv_gnorm = 0.0
        self.iv_updates = 0
        self.iv_skipped = 0
        self.iv_t0 = time.time()
        self.iv_paused = 0.0  # dev evaluation, checkpoint and plot time inside the interval

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
        keys = sorted(self.iv_sums)
        vals = torch.tensor([float(self.iv_sums[k]) for k in keys]
                            + [self.iv_count, self.iv_frames, self.iv_skipped], dtype=torch.float64)
        if self.dist.enabled:
            vals = all_reduce_(vals.to(self.device), "sum").cpu()
        n = max(vals[len(keys)].item(), 1.0)
        frames = vals[len(keys) + 1].item()
        skipped = int(vals[len(keys) + 2].item())
        elapsed = max(time.time() - self.iv_t0 - self.iv_paused, 1e-9)
        done_here = self.step - self.step_at_start
        per_step = (time.time() - self.t_start) / max(done_here, 1)
        eta = (self._total_steps() - self.step) * per_step
        row = {"split": "train", "step": self.step, "epoch": epoch,
               "lr": self.scheduler.get_last_lr()[0],
               "grad_norm": float(self.iv_gnorm) / max(self.iv_updates, 1),
               "frames_per_s": frames / elapsed, "skipped": skipped,
               "elapsed_s": self._elapsed()}
        row.update({k: vals[i].item() / n for i, k in enumerate(keys)})
        self._reset_interval()
        balance = ""
        if self.balance:
            row.update(self.balance)
            shares = {k[len("gshare_"):]: v for k, v in self.balance.items() if k.startswith("gshare_")}
            balance = " | encoder grad share " + " ".join(f"{k} {v:.2f}" for k, v in shares.items())
            self.balance = {}
        if self.dist.is_main:
            # The first fields are the heartbeat asr.sh shows on the console (cut at the 5th '|').
            terms = " ".join(f"{k} {row[k]:.4g}" for k in keys if k not in ("num_frames", "loss"))
            logger.info("step %d epoch %d | loss %.4g | lr %.3e | %.0f frames/s | ETA %s%s | %s | gnorm %.3g%s",
                        self.step, epoch, row.get("loss", float("nan")), row["lr"], row["frames_per_s"],
                        _fmt_eta(eta), f" | {skipped} skipped" if skipped else "", terms, row["grad_norm"], balance)
            self.curves.add(row)
            self.curves.write_csv()
        return row

    # ------------------------------------------------------------------ dev, checkpoints
    @torch.no_grad()
    def evaluate(self) -> dict:
        """Mean loss terms over the dev set (all ranks' shards), without touching the training RNG."""
        if self.dev_loader is None:
            return {}
        was_training = self.model.training
        self.model.eval()
        sums: dict[str, float] = {}
        n_utts = 0
        devices = [self.device.index] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            seed_everything(self.cfg.seed + 7919)  # the same masks at every evaluation
            self.dev_loader.set_epoch(0)
            for batch in self.dev_loader:
                b = len(batch["utts"])
                with self._autocast():
                    out = self.model(self._to_device(batch), step=self.step)
                for k, v in out.items():
                    if torch.is_tensor(v) and v.numel() == 1:
                        sums[k] = sums.get(k, 0.0) + float(v.detach().float()) * b
                n_utts += b
        self.model.train(was_training)
        keys = sorted(sums)
        vals = torch.tensor([sums[k] for k in keys] + [n_utts], dtype=torch.float64)
        if self.dist.enabled:
            # Ranks hold the same keys (same model, same mode); sum their shards.
            vals = all_reduce_(vals.to(self.device), "sum").cpu()
        total = max(vals[-1].item(), 1.0)
        return {k: vals[i].item() / total for i, k in enumerate(keys)}

    def dev_wer(self) -> dict[str, float]:
        """Greedy WER (%) on the dev set (rank 0; ``dev_wer_max_utts`` per language): ``dev_wer``
        = the mean over languages (as the paper averages), ``dev_wer_<lang>`` per language."""
        from justkit.decode.decoder import DecodeConfig, decode_dataset
        from justkit.score.wer import score_tables

        tok = self._dev_tokenizer()
        if tok is None or getattr(self.model, "predictor", None) is None or self.dev_loader is None:
            return {}
        ds = self.dev_loader.dataset
        cap = self.cfg.dev_wer_max_utts
        keep = np.ones(len(ds), dtype=bool)
        if cap > 0:  # the first `cap` utterances of each language
            keep[:] = False
            for code in np.unique(ds.lang_codes):
                keep[np.nonzero(ds.lang_codes == code)[0][:cap]] = True
        from justkit.data.dataset import PackedDataset

        sub = PackedDataset(ds.entries, cmvn=ds.cmvn, fbank=ds.fbank)
        sub.select(keep)
        sub.source = ds.source
        was_training = self.model.training
        with self._autocast():
            out = decode_dataset(self.model, sub, DecodeConfig(methods=["greedy"]), self.device, progress=False)
        self.model.train(was_training)
        hyps = {u: tok.decode(h.tokens) for u, h in out["greedy"].hyps.items()}
        entries = list(sub.entries)
        res = score_tables({e["utt"]: e["text"] for e in entries}, hyps, {e["utt"]: e["lang"] for e in entries},
                           ref_name=f"{ds.source} (text)", hyp_name="dev greedy hypotheses")
        per_lang: dict[str, list] = {}
        for u in res.utts:
            per_lang.setdefault(u.lang, []).append(u)
        wers = {}
        for lang, utts in sorted(per_lang.items()):
            n = sum(len(u.ref) for u in utts)
            wers[f"dev_wer_{lang}"] = 100.0 * sum(u.errors for u in utts) / max(n, 1)
        wers["dev_wer"] = sum(wers.values()) / max(len(wers), 1)
        return wers

    def _dev_tokenizer(self):
        if not hasattr(self, "_tokenizer"):
            path = self.experiment.paths.tokenizer
            self._tokenizer = None
            if path and self.cfg.dev_wer:
                from justkit.text.tokenizer import Tokenizer

                self._tokenizer = Tokenizer(path)
        return self._tokenizer

    def _evaluate(self) -> None:
        self.last_eval_step = self.step
        if self.dev_loader is None:
            return
        t0 = time.time()
        res = self.evaluate()
        if self.dist.is_main and res:
            res.update(self.dev_wer())
        if self.dist.is_main and res:
            terms = " ".join(f"{k} {v:.4g}" for k, v in res.items() if k not in ("num_frames", "loss", "dev_wer"))
            wer = f"greedy WER {res['dev_wer']:.2f}%" if "dev_wer" in res else "no WER"
            logger.info("dev at step %d (epoch %d) | loss %.4g | %s | %.1f s | %s", self.step,
                        self.train_loader.epoch, res.get("loss", float("nan")), wer, time.time() - t0, terms)
            self.curves.add({"split": "dev", "step": self.step, "epoch": self.train_loader.epoch, **res})
            self.curves.write_csv()
        self.iv_paused += time.time() - t0

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

    def _elapsed(self) -> float:
        """Training wall time in seconds, summed over every run of this experiment (resumes)."""
        return self.elapsed_before + time.time() - self.t_start

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
            "elapsed_s": self._elapsed(),
            "config": self.config,
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
        self.iv_paused += time.time() - t0

    def _plot(self) -> None:
        """Rewrite plots/*.png (rank 0; at epoch ends and at the end: matplotlib takes seconds)."""
        self.last_plot_step = self.step
        if self.dist.is_main and self.cfg.plots:
            t0 = time.time()
            self.curves.plot()
            self.iv_paused += time.time() - t0

