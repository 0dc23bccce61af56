"""Pruned RNN-T (Kuang et al. 2022, "Pruned RNN-T for fast, memory-efficient ASR training", as in k2).

Three steps, none of which builds the [B, T, U+1, V] tensor of the full loss:

1. The **simple loss**: a "trivial joiner" whose logits are ``am[t] + lm[u]`` (the encoder and
   the prediction network each projected to the vocabulary). Its log-softmax normaliser
   ``log sum_v exp(am[t, v] + lm[u, v])`` is one [B, T, V] x [B, V, U+1] matrix product of
   exponentials (shifted by their maxima), so only [B, T, U+1] terms are formed: the
   log-probabilities of blank and of the next label at every lattice node.
2. **Pruning bounds**: the node occupation of the simple lattice (the probability that the
   alignment passes through (t, u), from its forward-backward pass) chooses, per frame, the
   ``s_range`` consecutive label positions that hold most of it; the windows are made
   monotone in t and connected (each can be reached from the previous, the last reaches U).
3. The **pruned loss**: the real joiner on [B, T, s_range, V] only, its blank and label
   log-probabilities scattered into the [B, T, U+1] lattice (-inf outside the windows), and
   the same forward-backward recursion over it.

The lattice recursion (alpha, beta, and the gradients with respect to the two log-probability
arrays) is a numba CPU kernel in float64; on other devices (and as a reference) a torch version
walks the anti-diagonals with autograd. With ``s_range >= U + 1`` the pruned loss equals the
full RNN-T loss (tests/test_rnnt_pruned.py).
"""
from __future__ import annotations

import math
from typing import Tuple

import numba
import numpy as np
import torch
from numba import prange

# importing rnnt_numba also sets numba's threading layer before any kernel runs
from justkit.losses.rnnt_numba import _NEG_INF, _log_add


def _device_path(x: torch.Tensor) -> bool:
    """True where the torch versions run (tensors off the CPU): lattice, occupation and bounds
    then stay on the device. Tests patch it to run the device path on the CPU."""
    return x.device.type != "cpu"


# ----------------------------------------------------------------------------- the lattice


@numba.njit(parallel=True, cache=True)
def _lattice_cpu(lp_blank, lp_label, t_lens, u_lens, ll, g_blank, g_label, occ):
    """Forward-backward over [B, T, U+1] log-probabilities; fills ll [B] = log P(y|x), and
    g_blank/g_label = the posteriors of the two transitions leaving each node (minus the
    derivative of -ll), occ = each node's occupation. Padded positions are left at 0."""
    n_batch, n_time, n_u1 = lp_blank.shape
    for b in prange(n_batch):
        tb = t_lens[b]
        ub = u_lens[b]
        alpha = np.full((tb, ub + 1), _NEG_INF)
        beta = np.full((tb, ub + 1), _NEG_INF)
        alpha[0, 0] = 0.0
        for u in range(1, ub + 1):
            alpha[0, u] = alpha[0, u - 1] + lp_label[b, 0, u - 1]
        for t in range(1, tb):
            alpha[t, 0] = alpha[t - 1, 0] + lp_blank[b, t - 1, 0]
            for u in range(1, ub + 1):
                alpha[t, u] = _log_add(alpha[t - 1, u] + lp_blank[b, t - 1, u], alpha[t, u - 1] + lp_label[b, t, u - 1])
        total = alpha[tb - 1, ub] + lp_blank[b, tb - 1, ub]
        ll[b] = total
        beta[tb - 1, ub] = lp_blank[b, tb - 1, ub]
        for u in range(ub - 1, -1, -1):
            beta[tb - 1, u] = beta[tb - 1, u + 1] + lp_label[b, tb - 1, u]
        for t in range(tb - 2, -1, -1):
            beta[t, ub] = beta[t + 1, ub] + lp_blank[b, t, ub]
            for u in range(ub - 1, -1, -1):
                beta[t, u] = _log_add(beta[t + 1, u] + lp_blank[b, t, u], beta[t, u + 1] + lp_label[b, t, u])
        if total == _NEG_INF:  # no path (a pruned lattice that cannot reach the end): no gradient
            continue
        for t in range(tb):
            for u in range(ub + 1):
                a = alpha[t, u]
                if a == _NEG_INF:
                    continue
                occ[b, t, u] = math.exp(a + beta[t, u] - total)
                if t < tb - 1:
                    g_blank[b, t, u] = math.exp(a + lp_blank[b, t, u] + beta[t + 1, u] - total)
                elif u == ub:
                    g_blank[b, t, u] = math.exp(a + lp_blank[b, t, u] - total)
                if u < ub:
                    g_label[b, t, u] = math.exp(a + lp_label[b, t, u] + beta[t, u + 1] - total)


def _lattice_numpy(lp_blank: torch.Tensor, lp_label: torch.Tensor, t_lens: torch.Tensor, u_lens: torch.Tensor):
    n_batch, n_time, n_u1 = lp_blank.shape
    lb = lp_blank.detach().to("cpu", torch.float64).numpy()
    ll_ = lp_label.detach().to("cpu", torch.float64).numpy()
    tl = t_lens.detach().to("cpu", torch.int64).numpy()
    ul = u_lens.detach().to("cpu", torch.int64).numpy()
    ll = np.empty(n_batch)
    g_blank = np.zeros((n_batch, n_time, n_u1))
    g_label = np.zeros((n_batch, n_time, n_u1))
    occ = np.zeros((n_batch, n_time, n_u1))
    _lattice_cpu(lb, ll_, tl, ul, ll, g_blank, g_label, occ)
    return ll, g_blank, g_label, occ


def lattice_occupation(lp_blank: torch.Tensor, lp_label: torch.Tensor, t_lens: torch.Tensor,
                       u_lens: torch.Tensor) -> torch.Tensor:
    """[B, T, U+1]: the probability that an alignment passes through each node (no gradient)."""
    if _device_path(lp_blank):  # from the torch lattice's gradient: d(-ll)/d lp is minus the arc posterior
        lb, ll = lp_blank.detach().requires_grad_(), lp_label.detach().requires_grad_()
        with torch.enable_grad():
            g_blank, g_label = torch.autograd.grad(lattice_nll_torch(lb, ll, t_lens, u_lens).sum(), (lb, ll))
        return (-g_blank - g_label).clamp(min=0)  # each visited node is left by one arc
    _, _, _, occ = _lattice_numpy(lp_blank, lp_label, t_lens, u_lens)
    return torch.from_numpy(occ).to(lp_blank.device)


class _LatticeNLL(torch.autograd.Function):
    """-log P(y|x) [B] of a [B, T, U+1] lattice (numba, CPU); gradients w.r.t. both arrays."""

    @staticmethod
    def forward(ctx, lp_blank, lp_label, t_lens, u_lens):  # type: ignore[override]
        ll, g_blank, g_label, _ = _lattice_numpy(lp_blank, lp_label, t_lens, u_lens)
        dev, dt = lp_blank.device, lp_blank.dtype
        ctx.save_for_backward(torch.from_numpy(g_blank).to(dev, dt), torch.from_numpy(g_label).to(dev, dt))
        return torch.from_numpy(-ll).to(dev, dt)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        g_blank, g_label = ctx.saved_tensors
        scale = -grad.view(-1, 1, 1)
        return g_blank * scale, g_label * scale, None, None


def lattice_nll_torch(lp_blank: torch.Tensor, lp_label: torch.Tensor, t_lens: torch.Tensor,
                      u_lens: torch.Tensor) -> torch.Tensor:
    """The same -log P(y|x) [B] with torch ops (autograd, any device): alpha over anti-diagonals.

    -inf is replaced by a large negative number first, so that no 0/0 appears in backward
    (an impossible lattice then costs about 1e5 instead of inf)."""
    n_batch, n_time, n_u1 = lp_blank.shape
    dev, dt = lp_blank.device, torch.float64 if lp_blank.dtype == torch.float64 else torch.float32
    neg = -1.0e5
    lb = lp_blank.to(dt).clamp(min=neg)
    ll = lp_label.to(dt).clamp(min=neg)
    u_idx = torch.arange(n_u1, device=dev)
    b_idx = torch.arange(n_batch, device=dev)
    alpha = torch.full((n_batch, n_u1), neg, device=dev, dtype=dt)
    alpha[:, 0] = 0.0
    final = torch.full((n_batch,), neg, device=dev, dtype=dt)
    end_diag = t_lens.to(dev) - 1 + u_lens.to(dev)
    t_last, u_end = (t_lens.to(dev) - 1).clamp(min=0), u_lens.to(dev)
    for d in range(n_time + n_u1 - 1):
        if d > 0:
            t_of = d - u_idx                                    # t of node (., u) on diagonal d
            tb = (t_of - 1).clamp(0, n_time - 1)
            from_blank = alpha + lb[:, tb, u_idx]               # (t-1, u) -> (t, u)
            from_blank = torch.where((t_of >= 1)[None, :], from_blank, torch.full_like(from_blank, neg))
            tl = t_of.clamp(0, n_time - 1)
            lab = lb.new_full((n_batch, n_u1), neg)
            lab = torch.cat([lab[:, :1], alpha[:, :-1] + ll[:, tl[1:], u_idx[:-1]]], dim=1)  # (t, u-1) -> (t, u)
            valid = ((t_of >= 0) & (t_of < n_time))[None, :]
            alpha = torch.where(valid, torch.logaddexp(from_blank, lab), torch.full_like(from_blank, neg))
        # (no "if hit.any()": reading it would wait for the device on every diagonal)
        final = torch.where(end_diag == d, alpha[b_idx, u_end] + lb[b_idx, t_last, u_end], final)
    return (-final).to(lp_blank.dtype)


def lattice_nll(lp_blank: torch.Tensor, lp_label: torch.Tensor, t_lens: torch.Tensor, u_lens: torch.Tensor) -> torch.Tensor:
    """-log P(y|x) per utterance of the lattice given by the blank and label log-probabilities
    [B, T, U+1] (label at (t, u) = emitting the (u+1)-th target; -inf = no such arc)."""
    if _device_path(lp_blank):
        return lattice_nll_torch(lp_blank, lp_label, t_lens, u_lens)
    return _LatticeNLL.apply(lp_blank, lp_label, t_lens, u_lens)


# ----------------------------------------------------------------------------- simple loss and bounds


def simple_lattice(am: torch.Tensor, lm: torch.Tensor, targets: torch.Tensor, blank: int = 0
                   ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Blank and label log-probabilities [B, T, U+1] of the trivial joiner ``am[t] + lm[u]``.

    am [B, T, V], lm [B, U+1, V] (row u: after u labels), targets [B, U]. The normaliser is
    ``log sum_v exp(am + lm)`` = am_max + lm_max + log(exp(am - am_max) @ exp(lm - lm_max)^T),
    one matrix product: no [B, T, U+1, V] tensor.
    """
    dt = torch.float64 if am.dtype == torch.float64 else torch.float32  # fp32 at least, even under autocast
    am, lm = am.to(dt), lm.to(dt)
    am_max = am.max(-1, keepdim=True).values.detach()  # [B, T, 1]
    lm_max = lm.max(-1, keepdim=True).values.detach()  # [B, U+1, 1]
    norm = torch.log(torch.matmul((am - am_max).exp(), (lm - lm_max).exp().transpose(1, 2)) + 1e-30)
    norm = norm + am_max + lm_max.transpose(1, 2)  # [B, T, U+1]
    lp_blank = am[:, :, blank, None] + lm[:, None, :, blank] - norm
    n_u = targets.size(1)
    tgt = targets.clamp(min=0).long()
    am_y = torch.gather(am, 2, tgt[:, None, :].expand(-1, am.size(1), -1))  # [B, T, U]
    lm_y = torch.gather(lm[:, :n_u], 2, tgt[:, :, None]).squeeze(-1)        # [B, U]
    lp_label = torch.full_like(lp_blank, _NEG_INF)
    lp_label[:, :, :n_u] = am_y + lm_y[:, None, :] - norm[:, :, :n_u]
    return lp_blank, lp_label


@numba.njit(cache=True)
def _bounds_cpu(occ, t_lens, u_lens, s_range, out):
    n_batch, n_time, n_u1 = occ.shape
    for b in range(n_batch):
        tb, ub = t_lens[b], u_lens[b]
        top = max(ub + 1 - s_range, 0)  # the highest window start
        for t in range(tb):
            best, arg, acc = -1.0, 0, 0.0
            for u in range(min(s_range, ub + 1)):
                acc += occ[b, t, u]
            for s in range(top + 1):
                if s > 0:
                    acc += (occ[b, t, s + s_range - 1] if s + s_range - 1 <= ub else 0.0) - occ[b, t, s - 1]
                if acc > best:
                    best, arg = acc, s
            out[b, t] = arg
        # monotone, connected (a path leaving frame t inside its window enters frame t+1 inside
        # the next), starting at u = 0 and ending able to reach U
        # (the same three passes as _bounds_torch: cumulative max, steps of at most
        # s_range - 1, at most top)
        out[b, 0] = 0
        for t in range(1, tb):
            out[b, t] = max(out[b, t], out[b, t - 1])
        for t in range(1, tb):
            out[b, t] = min(out[b, t], out[b, t - 1] + s_range - 1)
        for t in range(tb):
            out[b, t] = min(out[b, t], top)
        need = top
        for t in range(tb - 1, -1, -1):
            if out[b, t] < need:
                out[b, t] = need
            need = max(need - (s_range - 1), 0)
        for t in range(tb, n_time):
            out[b, t] = out[b, tb - 1]


def _bounds_torch(occ: torch.Tensor, t_lens: torch.Tensor, u_lens: torch.Tensor, s_range: int) -> torch.Tensor:
    """``_bounds_cpu`` with tensor operations on ``occ``'s device (no host sync, no loop over
    frames): window sums from a cumulative sum over u, the best start per frame by argmax,
    then monotone (cumulative max), steps of at most s_range - 1 (a cumulative max of
    (s_range - 1) t - start, as k2 does it), at most U + 1 - s_range, and able to reach U
    (at least U + 1 - s_range - (s_range - 1)(T_b - 1 - t))."""
    n_batch, n_time, n_u1 = occ.shape
    dev = occ.device
    s1 = s_range - 1
    u_lens, t_lens = u_lens.to(dev).long(), t_lens.to(dev).long()
    u_idx = torch.arange(n_u1, device=dev)
    t_idx = torch.arange(n_time, device=dev)
    occ = occ.to(torch.float64).masked_fill(u_idx[None, None, :] > u_lens[:, None, None], 0.0)
    csum = torch.nn.functional.pad(occ.cumsum(2), (1, s_range))  # csum[..., k] = sum of occ[..., :k]
    csum[..., n_u1 + 1:] = csum[..., n_u1: n_u1 + 1]
    win = csum[..., s_range: s_range + n_u1] - csum[..., :n_u1]   # [B, T, U+1]: sum over [s, s + S)
    top = (u_lens + 1 - s_range).clamp(min=0)                      # [B]
    win = win.masked_fill(u_idx[None, None, :] > top[:, None, None], -1.0)
    out = win.argmax(2)                                            # first maximum, as the kernel
    out[:, 0] = 0
    out = torch.cummax(out, dim=1).values
    line = s1 * t_idx[None, :]
    out = line - torch.cummax(line - out, dim=1).values            # out[t] <= out[t-1] + s_range - 1
    out = torch.minimum(out, top[:, None])
    need = (top[:, None] - s1 * (t_lens[:, None] - 1 - t_idx[None, :])).clamp(min=0)
    out = torch.maximum(out, need)
    last = out.gather(1, (t_lens - 1).clamp(min=0)[:, None])
    return torch.where(t_idx[None, :] >= t_lens[:, None], last, out)


def prune_ranges(occ: torch.Tensor, t_lens: torch.Tensor, u_lens: torch.Tensor, s_range: int) -> torch.Tensor:
    """Window starts [B, T] (long): per frame the ``s_range`` label positions with the most
    occupation, made monotone and connected (see the module docstring). On the CPU the numba
    kernel; elsewhere ``_bounds_torch`` (the same rule, kept on the device)."""
    if _device_path(occ):
        return _bounds_torch(occ.detach(), t_lens, u_lens, int(s_range))
    out = np.zeros(occ.shape[:2], dtype=np.int64)
    _bounds_cpu(occ.detach().to("cpu", torch.float64).numpy(), t_lens.cpu().numpy().astype(np.int64),
                u_lens.cpu().numpy().astype(np.int64), int(s_range), out)
    return torch.from_numpy(out).to(occ.device)


# ----------------------------------------------------------------------------- the pruned loss


def pruned_lattice(logits: torch.Tensor, starts: torch.Tensor, targets: torch.Tensor, u_lens: torch.Tensor,
                   n_u1: int, blank: int = 0) -> Tuple[torch.Tensor, torch.Tensor]:
    """Scatter the pruned joiner's log-probabilities into the [B, T, U+1] lattice.

    logits [B, T, S, V] at label positions ``starts[b, t] + k``; returns (lp_blank, lp_label),
    -inf outside the windows (and for labels past U_b)."""
    b_, t_, s_, _ = logits.shape
    logp = logits.to(torch.float64 if logits.dtype == torch.float64 else torch.float32).log_softmax(-1)
    u = starts[:, :, None] + torch.arange(s_, device=logits.device)[None, None, :]  # [B, T, S]
    tgt = torch.cat([targets.clamp(min=0).long(), targets.new_zeros(b_, 1).long()], dim=1)  # [B, U+1]
    y = torch.gather(tgt, 1, u.clamp(max=n_u1 - 1).reshape(b_, -1)).view(b_, t_, s_)
    w_blank = logp[..., blank]
    w_label = torch.gather(logp, 3, y[..., None]).squeeze(-1)
    w_label = torch.where(u < u_lens[:, None, None], w_label, torch.full_like(w_label, _NEG_INF))
    # s_ spare columns: a window of a short utterance may reach past U; no two k share a column
    lp_blank = torch.full((b_, t_, n_u1 + s_), _NEG_INF, device=logits.device, dtype=logp.dtype)
    lp_label = torch.full_like(lp_blank, _NEG_INF)
    lp_blank = lp_blank.scatter(2, u, w_blank)[:, :, :n_u1]
    lp_label = lp_label.scatter(2, u, w_label)[:, :, :n_u1]
    return lp_blank, lp_label


def gather_windows(x: torch.Tensor, starts: torch.Tensor, s_range: int) -> torch.Tensor:
    """x [B, U+1, D] -> [B, T, S, D]: the rows ``starts[b, t] + k`` (clamped to U)."""
    b_, n_u1, d = x.shape
    u = (starts[:, :, None] + torch.arange(s_range, device=x.device)[None, None, :]).clamp(max=n_u1 - 1)
    return torch.gather(x, 1, u.reshape(b_, -1, 1).expand(-1, -1, d)).view(b_, starts.size(1), s_range, d)


def pruned_rnnt_nll(enc: torch.Tensor, pred: torch.Tensor, joint: torch.nn.Module, am_proj: torch.nn.Module,
                    lm_proj: torch.nn.Module, targets: torch.Tensor, t_lens: torch.Tensor, u_lens: torch.Tensor,
                    s_range: int, blank: int = 0) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-utterance negative log-likelihoods (simple [B], pruned [B]) of the pruned RNN-T loss.

    enc [B, T, D] and pred [B, U+1, Dp] are the encoder and prediction-network outputs;
    ``am_proj``/``lm_proj`` project them to the vocabulary for the simple loss; ``joint`` (a
    justkit.nn.joint.Joint) runs on ``s_range`` label positions per frame only. An utterance
    whose pruned lattice cannot reach its end (``s_range`` too small for it) gets +inf."""
    lp_b, lp_l = simple_lattice(am_proj(enc), lm_proj(pred), targets, blank)
    simple = lattice_nll(lp_b, lp_l, t_lens, u_lens)
    starts = prune_ranges(lattice_occupation(lp_b, lp_l, t_lens, u_lens), t_lens, u_lens, s_range)
    logits = joint.combine(joint.enc_proj(enc)[:, :, None, :],
                           gather_windows(joint.pred_proj(pred), starts, s_range))  # [B, T, S, V]
    pruned = lattice_nll(*pruned_lattice(logits, starts, targets, u_lens, pred.size(1), blank), t_lens, u_lens)
    return simple, pruned
