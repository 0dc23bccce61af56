"""The RNN-T loss of a transducer, in one place: its config (``loss.rnnt``), the full loss (one
[B, T', U+1, V] joint, or chunks of utterances), the pruned loss, and the normalisation.

``transducer_loss`` is what a model calls with its encoder output, label sequences, prediction
network and joint; which loss runs and with which kernel is this module's business alone:

- ``type: full``: the joint over the whole [B, T', U+1] lattice and the RNN-T loss of
  ``backend`` (torchaudio's, or justkit's numba CPU / numba.cuda kernels, justkit.losses.rnnt);
  ``chunk_utts > 0`` runs the joint and the loss that many utterances at a time and recomputes
  them in backward, so that nothing of size [B, T', U+1, V] is kept (the same kernel of ``backend``).
- ``type: pruned``: k2's pruned RNN-T (justkit.losses.rnnt_pruned holds the lattice math): the
  simple loss on a trivial joiner plus the joint on ``s_range`` label positions per frame, with
  icefall's warm-up schedule of their two scales.

``norm`` says what the summed negative log-likelihood of the labelled utterances is divided by
(docs/training.md, "Loss normalisation"); :func:`normaliser` is shared with the auxiliary CTC term.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import torch
from torch import nn

from justkit.losses.rnnt import BACKENDS, rnnt_loss
from justkit.losses.rnnt_pruned import pruned_rnnt_nll

LOSS_TYPES = ("full", "pruned")
NORMS = ("frame", "token", "utterance")


@dataclass
class RNNTLossConfig:
    """``loss.rnnt``: which RNN-T loss, its kernel, its normalisation, and the pruned loss's
    settings (icefall's defaults)."""

    type: str = "full"              # full: the [B, T', U+1, V] loss; pruned: k2's pruned RNN-T
    backend: str = "torchaudio"     # the full loss's kernel: torchaudio | numba (also under chunk_utts)
    norm: str = "frame"             # frame | token | utterance: what the summed RNN-T/CTC NLL is divided by
    chunk_utts: int = 0             # full loss: joint + loss over this many utterances at a time (0 = all)
    s_range: int = 5                # pruned: label positions per frame kept by the pruning
    simple_loss_scale: float = 0.5  # pruned: weight of the simple loss after the warm-up (the pruned loss has 1)
    warm_step: int = 2000           # pruned: updates over which the pruned loss is phased in

    def __post_init__(self) -> None:
        if self.type not in LOSS_TYPES:
            raise ValueError(f"loss.rnnt.type must be one of {LOSS_TYPES}, got {self.type!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"loss.rnnt.backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.norm not in NORMS:
            raise ValueError(f"loss.rnnt.norm must be one of {NORMS}, got {self.norm!r}")
        if self.s_range < 1 or self.warm_step < 0 or self.simple_loss_scale < 0 or self.chunk_utts < 0:
            raise ValueError(f"loss.rnnt: s_range >= 1, warm_step, simple_loss_scale, chunk_utts >= 0; got {self}")
        if self.type == "pruned" and self.chunk_utts > 0:
            raise ValueError("loss.rnnt.chunk_utts bounds the full loss's memory; the pruned loss needs no "
                             "chunks (set chunk_utts: 0, or type: full)")

    def scales(self, step: int) -> Tuple[float, float]:
        """(simple, pruned) loss weights at update ``step``: during the warm-up the simple loss
        goes from 1 to ``simple_loss_scale`` and the pruned loss from 0.1 to 1, linearly (and
        the pruned loss is left out for the first tenth of it); afterwards they stay there."""
        if self.warm_step <= 0 or step >= self.warm_step:
            return self.simple_loss_scale, 1.0
        f = step / self.warm_step
        pruned = 0.0 if f < 0.1 else 0.1 + 0.9 * f
        return 1.0 - f * (1.0 - self.simple_loss_scale), pruned


def normaliser(norm: str, enc_lens: torch.Tensor, token_lens: torch.Tensor) -> torch.Tensor:
    """What a summed NLL over the labelled utterances is divided by (``norm``): their encoder
    frames, their label tokens, or their number; at least 1, float32, no host sync."""
    if norm == "frame":
        n = enc_lens.sum()
    elif norm == "token":
        n = token_lens.sum()
    else:
        n = torch.full((), enc_lens.numel(), device=enc_lens.device)  # a fill, not a host copy
    return n.clamp(min=1).to(torch.float32)


def transducer_loss(cfg: RNNTLossConfig, enc: torch.Tensor, enc_lens: torch.Tensor, tokens: torch.Tensor,
                    token_lens: torch.Tensor, predictor: nn.Module, joint: nn.Module,
                    simple_proj: Optional[Tuple[nn.Module, nn.Module]] = None, step: int = 0,
                    blank: int = 0) -> Tuple[torch.Tensor, dict]:
    """The normalised RNN-T loss of labelled utterances and what to log of it.

    enc [B, T', D] / enc_lens [B]: the encoder output; tokens [B, U] / token_lens [B]: the labels;
    ``predictor`` (justkit.nn.predictor.Predictor) and ``joint`` (justkit.nn.joint.Joint);
    ``simple_proj``: the pruned loss's (am, lm) projections to the vocabulary. Returns
    (loss, {"rnnt": ..., and "rnnt_simple" for the pruned loss}, detached).
    """
    if cfg.type == "full" and cfg.chunk_utts <= 0 and cfg.backend == "torchaudio":
        # torchaudio wants T == max(logit_lens) and U == max(target_lens) (and reads both on the
        # host itself); the other losses take padded sizes as they are
        enc = enc[:, : int(enc_lens.max())]
        tokens = tokens[:, : int(token_lens.max())]
    pred_in = torch.cat([predictor.initial_tokens(tokens.size(0), tokens.device), tokens], dim=1)
    pred, _ = predictor(pred_in)
    norm = normaliser(cfg.norm, enc_lens, token_lens)
    # The joint and the loss run in fp32 even under autocast: bf16 logits would lose the small
    # probability differences the RNN-T lattice sums over.
    with torch.autocast(enc.device.type, enabled=False):
        enc, pred = enc.float(), pred.float()
        if cfg.type == "pruned":
            if simple_proj is None:
                raise ValueError("the pruned RNN-T loss needs the simple loss's projections (simple_proj)")
            simple, pruned = pruned_rnnt_nll(enc, pred, joint, simple_proj[0], simple_proj[1], tokens,
                                             enc_lens, token_lens, cfg.s_range, blank)
            simple = simple.sum() / norm
            # a pruned lattice that cannot reach the end (s_range too small for an utterance) costs 0
            pruned = torch.where(torch.isfinite(pruned), pruned, torch.zeros_like(pruned)).sum() / norm
            s_scale, p_scale = cfg.scales(step)
            return s_scale * simple + p_scale * pruned, {"rnnt": pruned.detach(), "rnnt_simple": simple.detach()}
        if cfg.chunk_utts > 0:
            nll = chunked_rnnt_costs(enc, pred, joint, tokens, enc_lens, token_lens, cfg.chunk_utts, blank,
                                     backend=cfg.backend).sum()
        else:
            logits = joint(enc[:, :, None, :], pred[:, None, :, :])  # [B, T', U+1, V]
            nll = rnnt_loss(logits, tokens, enc_lens, token_lens, blank=blank, reduction="sum", backend=cfg.backend)
    loss = nll / norm
    return loss, {"rnnt": loss.detach()}


# ----------------------------------------------------------------------------- memory-lean full loss


class _ChunkedJointLoss(torch.autograd.Function):
    """Full RNN-T loss with the joint run ``chunk`` utterances at a time, in fp32, and nothing of
    size [B, T, U+1, V] kept between forward and backward: the forward keeps only the costs; the
    backward recomputes each chunk's logits, its loss gradient (the kernel of ``backend``) and the
    joint's backward, then frees them. Peak memory: one chunk's logits and their gradient."""

    @staticmethod
    def forward(ctx, enc, pred, targets, t_lens, u_lens, joint, chunk, blank, backend, *params):  # type: ignore[override]
        costs = []
        with torch.no_grad():
            for i in range(0, enc.size(0), chunk):
                sl = slice(i, i + chunk)
                t_max, u_max = int(t_lens[sl].max()), int(u_lens[sl].max())
                logits = joint(enc[sl, :t_max, None].float(), pred[sl, None, : u_max + 1].float())
                costs.append(rnnt_loss(logits, targets[sl, :u_max], t_lens[sl], u_lens[sl], blank=blank,
                                       reduction="none", backend=backend))
        ctx.save_for_backward(enc, pred, targets, t_lens, u_lens)
        ctx.joint, ctx.chunk, ctx.blank, ctx.backend = joint, chunk, blank, backend
        return torch.cat(costs).to(enc.dtype)

    @staticmethod
    def backward(ctx, grad_costs):  # type: ignore[override]
        enc, pred, targets, t_lens, u_lens = ctx.saved_tensors
        params = [p for p in ctx.joint.parameters()]
        g_enc = torch.zeros_like(enc)
        g_pred = torch.zeros_like(pred)
        g_params = [torch.zeros_like(p) for p in params]
        for i in range(0, enc.size(0), ctx.chunk):
            sl = slice(i, i + ctx.chunk)
            t_max, u_max = int(t_lens[sl].max()), int(u_lens[sl].max())
            e = enc[sl, :t_max].detach().float().requires_grad_()
            p = pred[sl, : u_max + 1].detach().float().requires_grad_()
            with torch.enable_grad():
                logits = ctx.joint(e[:, :, None], p[:, None])
                costs = rnnt_loss(logits, targets[sl, :u_max], t_lens[sl], u_lens[sl], blank=ctx.blank,
                                  reduction="none", backend=ctx.backend)
                grads = torch.autograd.grad(costs, (e, p, *params), grad_costs[sl].to(costs.dtype))
            g_enc[sl, :t_max] += grads[0].to(enc.dtype)
            g_pred[sl, : u_max + 1] += grads[1].to(pred.dtype)
            for acc, g in zip(g_params, grads[2:]):
                acc += g
            del logits, costs, grads
        return (g_enc, g_pred, None, None, None, None, None, None, None, *g_params)


def chunked_rnnt_costs(enc: torch.Tensor, pred: torch.Tensor, joint: torch.nn.Module, targets: torch.Tensor,
                       t_lens: torch.Tensor, u_lens: torch.Tensor, chunk: int, blank: int = 0,
                       backend: str = "numba") -> torch.Tensor:
    """Per-utterance full RNN-T costs [B] of ``joint(enc[:, :, None], pred[:, None])``, computed
    ``chunk`` utterances at a time with the joint recomputed in backward (see _ChunkedJointLoss),
    with the RNN-T kernel of ``backend`` (justkit.losses.rnnt.BACKENDS)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown RNN-T loss backend {backend!r}; choose one of {BACKENDS}")
    params = tuple(joint.parameters())
    return _ChunkedJointLoss.apply(enc, pred, targets, t_lens, u_lens, joint, max(1, int(chunk)), blank, backend,
                                   *params)
