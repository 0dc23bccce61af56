"""justkit's own RNN-T loss: numba CPU kernels (and numba.cuda on GPU) behind a torch autograd Function.

Semantics follow ``torchaudio.functional.rnnt_loss`` with ``fused_log_softmax=True``:
the inputs are unnormalised logits, ``log_softmax`` over the vocabulary is applied
inside, and the per-utterance cost is ``-log P(y | x)`` summed over all monotonic
alignments of the transducer lattice.

Precision: ``log_softmax`` runs in torch in the input precision (float32 for
float16/bfloat16/float32 logits, float64 for float64 logits); the alpha/beta
recursions, the log-likelihood and the gradient arithmetic accumulate in float64;
the gradient is stored in the log-prob precision and returned in the logits' dtype.

Gradient (Graves 2012, eq. 16; warp-transducer): with ``ll = log P(y|x)``,
occupancy ``occ(t,u) = exp(alpha(t,u) + beta(t,u) - ll)`` and the posteriors of the
two transitions leaving node ``(t,u)``

    gb(t,u) = exp(alpha(t,u) + lp_blank(t,u) + beta(t+1,u) - ll)    (beta(T,U) := 0)
    gl(t,u) = exp(alpha(t,u) + lp_label(t,u) + beta(t,u+1) - ll),

d(-ll)/d lp_blank = -gb, d(-ll)/d lp_label = -gl, and through the log-softmax

    d(-ll)/d z(t,u,v) = p(t,u,v) * occ(t,u) - gb * [v == blank] - gl * [v == y_{u+1}],

zero at padded positions (t >= T_b or u > U_b). The gradient is computed in the
forward pass, in place over the log-prob buffer (one [B,T,U+1,V] buffer in all), and
scaled by the incoming gradient in backward.
"""
from __future__ import annotations

import math
import os

import numba
import numpy as np
import torch
from numba import prange

from justkit.losses.logspace import NEG_INF, log_add

# numba's default "omp" threading layer spin-waits against torch's own OpenMP pool: after
# the first prange kernel every later torch op in the process ran ~20x slower (measured on
# the tiny JUST model, 10 fwd+bwd: 0.5 s -> 13.5 s). The "workqueue" layer has no such
# interaction. Respect an explicit NUMBA_THREADING_LAYER from the user.
if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "workqueue"

# rnnt_pruned's kernels import these two names from here
_NEG_INF = NEG_INF
_log_add = numba.njit(inline="always", cache=True)(log_add)


@numba.njit(parallel=True, cache=True)
def _alpha_beta_cpu(logp, targets, t_lens, u_lens, blank, alpha, beta, ll):
    """Forward (alpha) and backward (beta) log-variables, one utterance per prange step.

    logp [B,T,U+1,V] log-probs; alpha/beta [B,T,U+1] float64 (filled where valid);
    ll [B] float64 receives log P(y|x).
    """
    n_batch = logp.shape[0]
    for b in prange(n_batch):
        tb = t_lens[b]
        ub = u_lens[b]
        # alpha
        alpha[b, 0, 0] = 0.0
        for u in range(1, ub + 1):
            alpha[b, 0, u] = alpha[b, 0, u - 1] + logp[b, 0, u - 1, targets[b, u - 1]]
        for t in range(1, tb):
            alpha[b, t, 0] = alpha[b, t - 1, 0] + logp[b, t - 1, 0, blank]
            for u in range(1, ub + 1):
                no_emit = alpha[b, t - 1, u] + logp[b, t - 1, u, blank]
                emit = alpha[b, t, u - 1] + logp[b, t, u - 1, targets[b, u - 1]]
                alpha[b, t, u] = _log_add(no_emit, emit)
        ll[b] = alpha[b, tb - 1, ub] + logp[b, tb - 1, ub, blank]
        # beta
        beta[b, tb - 1, ub] = logp[b, tb - 1, ub, blank]
        for u in range(ub - 1, -1, -1):
            beta[b, tb - 1, u] = beta[b, tb - 1, u + 1] + logp[b, tb - 1, u, targets[b, u]]
        for t in range(tb - 2, -1, -1):
            beta[b, t, ub] = beta[b, t + 1, ub] + logp[b, t, ub, blank]
            for u in range(ub - 1, -1, -1):
                no_emit = beta[b, t + 1, u] + logp[b, t, u, blank]
                emit = beta[b, t, u + 1] + logp[b, t, u, targets[b, u]]
                beta[b, t, u] = _log_add(no_emit, emit)


@numba.njit(parallel=True, cache=True)
def _grad_cpu(logp, targets, t_lens, u_lens, blank, alpha, beta, ll):
    """Overwrite ``logp`` [B,T,U+1,V] with d(-ll_b)/d logits, one (b, t) row per prange step."""
    n_batch, n_time, n_u1, n_vocab = logp.shape
    for i in prange(n_batch * n_time):
        b = i // n_time
        t = i % n_time
        tb = t_lens[b]
        ub = u_lens[b]
        for u in range(n_u1):
            row = logp[b, t, u]
            if t >= tb or u > ub:
                for v in range(n_vocab):
                    row[v] = 0.0
                continue
            a = alpha[b, t, u]
            occ = math.exp(a + beta[b, t, u] - ll[b])
            if t < tb - 1:
                g_blank = math.exp(a + row[blank] + beta[b, t + 1, u] - ll[b])
            elif u == ub:
                g_blank = math.exp(a + row[blank] - ll[b])
            else:
                g_blank = 0.0
            g_label = 0.0
            y = -1
            if u < ub:
                y = targets[b, u]
                g_label = math.exp(a + row[y] + beta[b, t, u + 1] - ll[b])
            for v in range(n_vocab):
                row[v] = math.exp(row[v]) * occ
            row[blank] -= g_blank
            if y >= 0:
                row[y] -= g_label


def _check_inputs(
    logits: torch.Tensor, targets: torch.Tensor, logit_lens: torch.Tensor, target_lens: torch.Tensor, blank: int
) -> None:
    if logits.dim() != 4:
        raise ValueError(f"rnnt_loss: logits must be [B, T, U+1, V], got shape {tuple(logits.shape)}")
    n_batch, n_time, n_u1, n_vocab = logits.shape
    if targets.shape != (n_batch, n_u1 - 1):
        raise ValueError(
            f"rnnt_loss: targets must be [B, U] = [{n_batch}, {n_u1 - 1}] to match logits {tuple(logits.shape)}, "
            f"got {tuple(targets.shape)}"
        )
    if logit_lens.shape != (n_batch,) or target_lens.shape != (n_batch,):
        raise ValueError("rnnt_loss: logit_lens and target_lens must be [B]")
    if not 0 <= blank < n_vocab:
        raise ValueError(f"rnnt_loss: blank={blank} outside the vocabulary [0, {n_vocab})")
    if n_batch == 0:
        return
    if int(logit_lens.min()) < 1 or int(logit_lens.max()) > n_time:
        raise ValueError(f"rnnt_loss: logit_lens must lie in [1, T={n_time}], got {logit_lens.tolist()}")
    if int(target_lens.min()) < 0 or int(target_lens.max()) > n_u1 - 1:
        raise ValueError(f"rnnt_loss: target_lens must lie in [0, U={n_u1 - 1}], got {target_lens.tolist()}")
    valid = torch.arange(n_u1 - 1, device=targets.device)[None, :] < target_lens[:, None]
    bad = valid & ((targets < 0) | (targets >= n_vocab))
    if bool(bad.any()):
        b, u = (int(x) for x in bad.nonzero()[0])
        raise ValueError(f"rnnt_loss: targets[{b}, {u}]={int(targets[b, u])} outside the vocabulary [0, {n_vocab})")


def _cpu_costs_and_grads(
    logp: torch.Tensor, targets: torch.Tensor, t_lens: torch.Tensor, u_lens: torch.Tensor, blank: int, want_grad: bool
) -> torch.Tensor:
    """Per-utterance costs [B] (float64); if ``want_grad``, ``logp`` is overwritten with the gradient."""
    n_batch, n_time, n_u1, _ = logp.shape
    lp = logp.numpy()
    # padded target positions may hold any value; they are never read, but keep them in range
    tg = targets.clamp(min=0).to(torch.int64).numpy()
    tl = t_lens.to(torch.int64).numpy()
    ul = u_lens.to(torch.int64).numpy()
    alpha = np.full((n_batch, n_time, n_u1), -np.inf)
    beta = np.full((n_batch, n_time, n_u1), -np.inf)
    ll = np.empty(n_batch)
    _alpha_beta_cpu(lp, tg, tl, ul, blank, alpha, beta, ll)
    if want_grad:
        _grad_cpu(lp, tg, tl, ul, blank, alpha, beta, ll)
    return torch.from_numpy(-ll)


class RNNTLossNumba(torch.autograd.Function):
    """Per-utterance RNN-T costs [B] from logits [B,T,U+1,V]; gradient w.r.t. the logits only."""

    @staticmethod
    def forward(ctx, logits, targets, logit_lens, target_lens, blank):  # type: ignore[override]
        work_dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
        logp = torch.log_softmax(logits.detach().to(work_dtype), dim=-1).contiguous()
        want_grad = bool(ctx.needs_input_grad[0])
        if logits.is_cuda:
            # lazy: numba.cuda costs ~85 ms to import and only CUDA logits need it
            from justkit.losses.rnnt_numba_cuda import cuda_costs_and_grads

            costs = cuda_costs_and_grads(logp, targets, logit_lens, target_lens, blank, want_grad)
        else:
            costs = _cpu_costs_and_grads(
                logp, targets.detach().cpu(), logit_lens.detach().cpu(), target_lens.detach().cpu(), blank, want_grad
            )
        if want_grad:
            ctx.save_for_backward(logp)
        ctx.logits_dtype = logits.dtype
        return costs.to(device=logits.device, dtype=logits.dtype)

    @staticmethod
    def backward(ctx, grad_costs):  # type: ignore[override]
        (grads,) = ctx.saved_tensors
        grad_logits = grads * grad_costs.to(grads.dtype).view(-1, 1, 1, 1)
        return grad_logits.to(ctx.logits_dtype), None, None, None, None


def rnnt_loss_numba(
    logits: torch.Tensor,
    targets: torch.Tensor,
    logit_lens: torch.Tensor,
    target_lens: torch.Tensor,
    blank: int = 0,
    reduction: str = "mean",
) -> torch.Tensor:
    """RNN-T loss from logits with justkit's numba kernels; reductions as torchaudio ("mean" = costs.mean() over B)."""
    if reduction not in ("none", "mean", "sum"):
        raise ValueError(f"rnnt_loss: reduction must be 'none', 'mean' or 'sum', got {reduction!r}")
    if blank < 0:
        blank += logits.shape[-1]
    _check_inputs(logits, targets, logit_lens, target_lens, blank)
    costs = RNNTLossNumba.apply(logits, targets, logit_lens, target_lens, blank)
    if reduction == "mean":
        return costs.mean()
    if reduction == "sum":
        return costs.sum()
    return costs
