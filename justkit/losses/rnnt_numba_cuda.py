"""numba.cuda kernels of justkit's RNN-T loss: wavefront alpha/beta and an in-place logits-gradient kernel.

Layout and choices (see ``rnnt_numba`` for the maths and the precision policy):

* ``_alpha_beta_kernel``, grid ``(B, 2)``: block ``(b, 0)`` computes alpha and block
  ``(b, 1)`` beta of utterance ``b``, so both recursions run concurrently. Inside a block
  the lattice is swept by **anti-diagonal wavefront**: every node on the diagonal
  ``t + u = n`` depends only on diagonal ``n - 1`` (alpha) or ``n + 1`` (beta), so the
  threads take the ``u`` of one diagonal each (strided when ``U + 1`` exceeds the block)
  and ``cuda.syncthreads()`` separates diagonals: ``T + U`` barriers per utterance
  instead of ``T * (U + 1)`` serial steps. alpha/beta are float64 in global memory.
* ``_grad_kernel``, grid ``(U+1, T, B)``, threads over the vocabulary (strided): one
  block per lattice node computes occupancy and the blank/label posteriors from
  alpha, beta and ll, then overwrites the node's log-prob row with
  ``p * occ - gb*[v==blank] - gl*[v==y]`` (zero at padded nodes).

Torch CUDA tensors are handed to the kernels with ``numba.cuda.as_cuda_array`` (via
``__cuda_array_interface__``) on torch's current stream (``cuda.external_stream``).
The kernels were checked with numba's CUDA simulator only (``NUMBA_ENABLE_CUDASIM=1``,
tests/losses/test_rnnt.py); they have not been run on a real GPU.
"""
from __future__ import annotations

import math

import torch
from numba import cuda

from justkit.losses.logspace import log_add

GRAD_THREADS = 128
MAX_THREADS = 1024

_log_add = cuda.jit(device=True)(log_add)   # the same body as the CPU kernels' (justkit.losses.logspace)


@cuda.jit
def _alpha_beta_kernel(logp, targets, t_lens, u_lens, blank, alpha, beta, ll):
    b = cuda.blockIdx.x
    which = cuda.blockIdx.y
    tid = cuda.threadIdx.x
    nthreads = cuda.blockDim.x
    tb = t_lens[b]
    ub = u_lens[b]
    n_diag = tb + ub  # diagonals n = t + u in [0, tb - 1 + ub]
    if which == 0:
        for n in range(n_diag):
            for u in range(tid, ub + 1, nthreads):
                t = n - u
                if t >= 0 and t < tb:
                    if t == 0 and u == 0:
                        alpha[b, 0, 0] = 0.0
                    elif t == 0:
                        alpha[b, 0, u] = alpha[b, 0, u - 1] + logp[b, 0, u - 1, targets[b, u - 1]]
                    elif u == 0:
                        alpha[b, t, 0] = alpha[b, t - 1, 0] + logp[b, t - 1, 0, blank]
                    else:
                        no_emit = alpha[b, t - 1, u] + logp[b, t - 1, u, blank]
                        emit = alpha[b, t, u - 1] + logp[b, t, u - 1, targets[b, u - 1]]
                        alpha[b, t, u] = _log_add(no_emit, emit)
            cuda.syncthreads()
        if tid == 0:
            ll[b] = alpha[b, tb - 1, ub] + logp[b, tb - 1, ub, blank]
    else:
        for k in range(n_diag):
            n = n_diag - 1 - k
            for u in range(tid, ub + 1, nthreads):
                t = n - u
                if t >= 0 and t < tb:
                    if t == tb - 1 and u == ub:
                        beta[b, t, u] = logp[b, t, u, blank]
                    elif t == tb - 1:
                        beta[b, t, u] = beta[b, t, u + 1] + logp[b, t, u, targets[b, u]]
                    elif u == ub:
                        beta[b, t, u] = beta[b, t + 1, u] + logp[b, t, u, blank]
                    else:
                        no_emit = beta[b, t + 1, u] + logp[b, t, u, blank]
                        emit = beta[b, t, u + 1] + logp[b, t, u, targets[b, u]]
                        beta[b, t, u] = _log_add(no_emit, emit)
            cuda.syncthreads()


@cuda.jit
def _grad_kernel(logp, targets, t_lens, u_lens, blank, alpha, beta, ll):
    u = cuda.blockIdx.x
    t = cuda.blockIdx.y
    b = cuda.blockIdx.z
    tid = cuda.threadIdx.x
    nthreads = cuda.blockDim.x
    n_vocab = logp.shape[3]
    tb = t_lens[b]
    ub = u_lens[b]
    if t >= tb or u > ub:
        for v in range(tid, n_vocab, nthreads):
            logp[b, t, u, v] = 0.0
        return
    # every thread reads the node's scalars before any thread overwrites the row
    lab = ll[b]
    a = alpha[b, t, u]
    occ = math.exp(a + beta[b, t, u] - lab)
    lp_blank = logp[b, t, u, blank]
    if t < tb - 1:
        g_blank = math.exp(a + lp_blank + beta[b, t + 1, u] - lab)
    elif u == ub:
        g_blank = math.exp(a + lp_blank - lab)
    else:
        g_blank = 0.0
    y = -1
    g_label = 0.0
    if u < ub:
        y = targets[b, u]
        g_label = math.exp(a + logp[b, t, u, y] + beta[b, t, u + 1] - lab)
    cuda.syncthreads()
    for v in range(tid, n_vocab, nthreads):
        g = math.exp(logp[b, t, u, v]) * occ
        if v == blank:
            g -= g_blank
        if v == y:
            g -= g_label
        logp[b, t, u, v] = g


def alpha_beta_threads(n_u1: int) -> int:
    """Threads per alpha/beta block: U+1 rounded up to a warp, at most 1024 (then strided)."""
    return min(MAX_THREADS, 32 * ((n_u1 + 31) // 32))


def launch_rnnt_kernels(logp, targets, t_lens, u_lens, blank: int, alpha, beta, ll, want_grad: bool, stream=0) -> None:
    """Run the kernels on numba device arrays: fill alpha, beta [B,T,U+1] and ll [B] (float64);
    if ``want_grad``, overwrite ``logp`` [B,T,U+1,V] with d(-ll)/d logits."""
    n_batch, n_time, n_u1, _ = logp.shape
    if n_batch == 0:
        return
    _alpha_beta_kernel[(n_batch, 2), alpha_beta_threads(n_u1), stream](
        logp, targets, t_lens, u_lens, blank, alpha, beta, ll
    )
    if want_grad:
        _grad_kernel[(n_u1, n_time, n_batch), GRAD_THREADS, stream](
            logp, targets, t_lens, u_lens, blank, alpha, beta, ll
        )


def cuda_costs_and_grads(
    logp: torch.Tensor,
    targets: torch.Tensor,
    logit_lens: torch.Tensor,
    target_lens: torch.Tensor,
    blank: int,
    want_grad: bool,
) -> torch.Tensor:
    """Per-utterance costs [B] (float64, on logp's device) for CUDA log-probs; if ``want_grad``
    ``logp`` is overwritten in place with the gradient w.r.t. the logits."""
    device = logp.device
    n_batch, n_time, n_u1, _ = logp.shape
    tg = targets.to(device=device, dtype=torch.int64).clamp(min=0).contiguous()
    tl = logit_lens.to(device=device, dtype=torch.int64).contiguous()
    ul = target_lens.to(device=device, dtype=torch.int64).contiguous()
    alpha = torch.full((n_batch, n_time, n_u1), -math.inf, dtype=torch.float64, device=device)
    beta = torch.full_like(alpha, -math.inf)
    ll = torch.empty(n_batch, dtype=torch.float64, device=device)
    with cuda.gpus[device.index if device.index is not None else torch.cuda.current_device()]:
        stream = cuda.external_stream(torch.cuda.current_stream(device).cuda_stream)
        arrays = [cuda.as_cuda_array(x) for x in (logp, tg, tl, ul, alpha, beta, ll)]
        launch_rnnt_kernels(arrays[0], arrays[1], arrays[2], arrays[3], blank, *arrays[4:], want_grad, stream=stream)
    return -ll
