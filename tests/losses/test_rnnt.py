"""Tests of the RNN-T loss: numba backend vs torchaudio, vs brute-force alignment enumeration, gradcheck, CUDA simulator."""
from __future__ import annotations

import itertools
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from justkit.losses.rnnt import rnnt_loss

REPO = Path(__file__).resolve().parents[2]


def brute_force_nll(logits: torch.Tensor, targets: list[int], blank: int) -> float:
    """-log P(y|x) for one utterance by summing every monotonic alignment.

    logits [T, U+1, V] (already cut to the utterance's lengths). An alignment is a
    sequence of T blanks and U labels whose last symbol is a blank (the final
    transition leaves the lattice from (T-1, U)); a blank at (t, u) moves to (t+1, u),
    a label at (t, u) emits targets[u] and moves to (t, u+1).
    """
    logp = torch.log_softmax(logits.double(), dim=-1)
    n_time, n_u = logp.shape[0], len(targets)
    total = 0.0
    n_paths = 0
    for label_slots in itertools.combinations(range(n_time + n_u - 1), n_u):
        t = u = 0
        log_p = 0.0
        for step in range(n_time + n_u):
            if step in label_slots:
                log_p += float(logp[t, u, targets[u]])
                u += 1
            else:
                log_p += float(logp[t, u, blank])
                t += 1
        assert (t, u) == (n_time, n_u)
        total += math.exp(log_p)
        n_paths += 1
    assert n_paths == math.comb(n_time + n_u - 1, n_u)
    return -math.log(total)


def random_case(
    n_batch: int, n_time: int, n_u: int, n_vocab: int, seed: int, blank: int = 0, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random logits/targets with mixed lengths; rows 1 and 2 (if present) get U=0 and T=1."""
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(n_batch, n_time, n_u + 1, n_vocab, generator=gen, dtype=dtype) * 2.0
    labels = [v for v in range(n_vocab) if v != blank]
    targets = torch.tensor(labels)[torch.randint(len(labels), (n_batch, n_u), generator=gen)]
    logit_lens = torch.randint(1, n_time + 1, (n_batch,), generator=gen)
    target_lens = torch.randint(0, n_u + 1, (n_batch,), generator=gen)
    logit_lens[0], target_lens[0] = n_time, n_u  # one full-size row
    if n_batch > 1:
        target_lens[1] = 0
    if n_batch > 2:
        logit_lens[2] = 1
    padded = torch.arange(n_u)[None, :] >= target_lens[:, None]
    targets = targets.masked_fill(padded, 0)
    return logits, targets, logit_lens, target_lens


def loss_and_grad(backend: str, logits, targets, logit_lens, target_lens, blank=0, reduction="none", weights=None):
    x = logits.clone().requires_grad_(True)
    loss = rnnt_loss(x, targets, logit_lens, target_lens, blank=blank, reduction=reduction, backend=backend)
    out = loss if weights is None else loss * weights
    (grad,) = torch.autograd.grad(out.sum(), x)
    return loss.detach(), grad


@pytest.mark.parametrize("backend", ["numba", "torchaudio"])
@pytest.mark.parametrize(
    "n_time,n_u,n_vocab,blank",
    [(1, 0, 2, 0), (1, 2, 3, 0), (2, 1, 3, 0), (3, 2, 3, 0), (3, 2, 3, 2), (3, 0, 3, 1), (2, 2, 2, 1)],
)
def test_matches_brute_force_enumeration(backend: str, n_time: int, n_u: int, n_vocab: int, blank: int) -> None:
    logits, targets, logit_lens, target_lens = random_case(3, n_time, n_u, n_vocab, seed=n_time * 10 + n_u, blank=blank)
    loss = rnnt_loss(logits, targets, logit_lens, target_lens, blank=blank, reduction="none", backend=backend)
    for b in range(3):
        tb, ub = int(logit_lens[b]), int(target_lens[b])
        expected = brute_force_nll(logits[b, :tb, : ub + 1], targets[b, :ub].tolist(), blank)
        assert float(loss[b]) == pytest.approx(expected, rel=1e-5, abs=1e-5), (b, tb, ub)


@pytest.mark.parametrize(
    "n_batch,n_time,n_u,n_vocab,blank,seed",
    [(1, 1, 0, 2, 0, 0), (3, 4, 3, 5, 0, 1), (5, 12, 6, 17, 0, 2), (4, 20, 9, 33, 7, 3), (2, 30, 15, 9, 8, 4)],
)
def test_parity_with_torchaudio(n_batch: int, n_time: int, n_u: int, n_vocab: int, blank: int, seed: int) -> None:
    case = random_case(n_batch, n_time, n_u, n_vocab, seed=seed, blank=blank)
    weights = torch.rand(n_batch, generator=torch.Generator().manual_seed(seed)) + 0.5  # non-uniform grad_output
    loss_n, grad_n = loss_and_grad("numba", *case, blank=blank, weights=weights)
    loss_t, grad_t = loss_and_grad("torchaudio", *case, blank=blank, weights=weights)
    torch.testing.assert_close(loss_n, loss_t, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(grad_n, grad_t, rtol=0, atol=1e-4)
    assert loss_n.dtype == torch.float32 and grad_n.dtype == torch.float32


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_reductions_match_torchaudio(reduction: str) -> None:
    case = random_case(4, 6, 3, 7, seed=11)
    loss_n, grad_n = loss_and_grad("numba", *case, reduction=reduction)
    loss_t, grad_t = loss_and_grad("torchaudio", *case, reduction=reduction)
    assert loss_n.shape == loss_t.shape
    torch.testing.assert_close(loss_n, loss_t, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(grad_n, grad_t, rtol=0, atol=1e-4)
    if reduction == "mean":  # torchaudio's mean is over the batch, not over tokens
        per_utt = rnnt_loss(*case, reduction="none", backend="numba")
        assert float(loss_n) == pytest.approx(float(per_utt.sum()) / 4, rel=1e-6)


def test_gradient_is_zero_at_padded_positions_and_rows_sum_to_zero() -> None:
    logits, targets, logit_lens, target_lens = random_case(4, 7, 4, 6, seed=5)
    _, grad = loss_and_grad("numba", logits, targets, logit_lens, target_lens)
    for b in range(4):
        tb, ub = int(logit_lens[b]), int(target_lens[b])
        assert torch.count_nonzero(grad[b, tb:]) == 0
        assert torch.count_nonzero(grad[b, :, ub + 1 :]) == 0
        assert torch.count_nonzero(grad[b, :tb, : ub + 1]) > 0
    # a softmax gradient sums to zero over the vocabulary at every node
    torch.testing.assert_close(grad.sum(-1), torch.zeros(grad.shape[:-1]), rtol=0, atol=1e-6)


def test_gradcheck_float64() -> None:
    logits, targets, logit_lens, target_lens = random_case(3, 3, 2, 4, seed=7, dtype=torch.float64)
    logits.requires_grad_(True)

    def f(x: torch.Tensor) -> torch.Tensor:
        return rnnt_loss(x, targets, logit_lens, target_lens, reduction="none", backend="numba")

    assert f(logits).dtype == torch.float64
    assert torch.autograd.gradcheck(f, (logits,), eps=1e-6, atol=1e-7, rtol=1e-5)


def test_no_grad_path_and_errors() -> None:
    logits, targets, logit_lens, target_lens = random_case(2, 4, 2, 5, seed=9)
    with torch.no_grad():
        loss = rnnt_loss(logits, targets, logit_lens, target_lens, reduction="none", backend="numba")
    ref = rnnt_loss(logits, targets, logit_lens, target_lens, reduction="none")
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="logit_lens"):
        rnnt_loss(logits, targets, torch.tensor([0, 4]), target_lens, backend="numba")
    with pytest.raises(ValueError, match="target_lens"):
        rnnt_loss(logits, targets, logit_lens, torch.tensor([3, 1]), backend="numba")
    with pytest.raises(ValueError, match="targets\\[0, 0\\]"):
        rnnt_loss(logits, targets.clone().fill_(9), logit_lens, torch.tensor([2, 1]), backend="numba")
    with pytest.raises(ValueError, match="reduction"):
        rnnt_loss(logits, targets, logit_lens, target_lens, reduction="avg", backend="numba")


_SIMULATOR_SCRIPT = r"""
import numpy as np, torch
from numba import cuda
from justkit.losses import rnnt_numba_cuda as K
from justkit.losses.rnnt_numba import _cpu_costs_and_grads
from tests.losses.test_rnnt import random_case

from numba import config
assert config.ENABLE_CUDASIM, "expected NUMBA_ENABLE_CUDASIM=1"
for max_threads, grad_threads, blank in ((1024, 128, 0), (2, 2, 3)):  # default launch, then strided loops
    K.MAX_THREADS, K.GRAD_THREADS = max_threads, grad_threads
    logits, targets, t_lens, u_lens = random_case(4, 4, 3, 5, seed=3, blank=blank, dtype=torch.float64)
    logp = torch.log_softmax(logits, dim=-1)
    ref = logp.clone()
    costs_ref = _cpu_costs_and_grads(ref, targets, t_lens, u_lens, blank, True).numpy()
    B, T, U1, _ = logp.shape
    dev = [cuda.to_device(np.ascontiguousarray(a)) for a in (
        logp.numpy(), targets.long().numpy(), t_lens.long().numpy(), u_lens.long().numpy(),
        np.full((B, T, U1), -np.inf), np.full((B, T, U1), -np.inf), np.empty(B))]
    K.launch_rnnt_kernels(*dev[:4], blank, *dev[4:], True)
    costs = -dev[6].copy_to_host()
    grad = dev[0].copy_to_host()
    # beta(0, 0) is a second, independent route to log P(y|x)
    ll_beta = dev[5].copy_to_host()[:, 0, 0]
    np.testing.assert_allclose(costs, costs_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(-ll_beta, costs_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(grad, ref.numpy(), rtol=0, atol=1e-12)
print("SIMULATOR-OK")
"""


def test_cuda_kernels_in_simulator_match_cpu() -> None:
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, "-c", _SIMULATOR_SCRIPT], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SIMULATOR-OK" in proc.stdout


def test_low_precision_and_non_contiguous_logits() -> None:
    logits, targets, logit_lens, target_lens = random_case(3, 5, 3, 6, seed=13)
    ref = rnnt_loss(logits, targets, logit_lens, target_lens, reduction="none", backend="torchaudio")
    # a non-contiguous view with the same values
    strided = logits.transpose(1, 2).contiguous().transpose(1, 2)
    assert not strided.is_contiguous()
    loss_nc, grad_nc = loss_and_grad("numba", strided, targets, logit_lens, target_lens)
    torch.testing.assert_close(loss_nc, ref, rtol=1e-5, atol=1e-4)
    # bfloat16 logits: log-softmax and kernels run in float32, result and gradient come back in bfloat16
    loss_bf, grad_bf = loss_and_grad("numba", logits.bfloat16(), targets, logit_lens, target_lens)
    assert loss_bf.dtype == torch.bfloat16 and grad_bf.dtype == torch.bfloat16
    torch.testing.assert_close(loss_bf.float(), ref, rtol=2e-2, atol=0.1)
    torch.testing.assert_close(grad_bf.float(), grad_nc, rtol=0, atol=2e-2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (kernels are simulator-checked above)")
def test_cuda_device_parity_with_torchaudio() -> None:
    case = [x.cuda() for x in random_case(4, 20, 9, 33, seed=3, blank=7)]
    loss_n, grad_n = loss_and_grad("numba", *case, blank=7)
    loss_t, grad_t = loss_and_grad("torchaudio", *case, blank=7)
    assert loss_n.is_cuda and grad_n.is_cuda
    torch.testing.assert_close(loss_n, loss_t, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(grad_n, grad_t, rtol=0, atol=1e-4)


def test_one_log_add_body_for_python_cpu_and_cuda_kernels() -> None:
    import numpy as np

    from justkit.losses import logspace, rnnt_numba
    from justkit.losses import rnnt_numba_cuda as K

    assert rnnt_numba._log_add.py_func is logspace.log_add is K._log_add.py_func
    inf = float("inf")
    for a, b in ((0.0, 0.0), (-1.5, 2.25), (3.0, -700.0), (-inf, 1.0), (2.0, -inf), (-inf, -inf), (1e3, 1e3 - 1)):
        want = float(np.logaddexp(a, b))
        assert logspace.log_add(a, b) == pytest.approx(want, rel=1e-15, abs=0)
        assert rnnt_numba._log_add(a, b) == pytest.approx(want, rel=1e-15, abs=0)
