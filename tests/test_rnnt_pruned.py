"""The pruned RNN-T loss: its lattice kernel, the simple loss, the bounds, equality with the full loss."""
from __future__ import annotations

import itertools
import math

import pytest
import torch

from justkit.losses.rnnt_numba import rnnt_loss_numba
from justkit.losses.rnnt_pruned import (
    gather_windows,
    lattice_nll,
    lattice_nll_torch,
    prune_ranges,
    pruned_lattice,
    simple_lattice,
)
from justkit.losses.transducer import RNNTLossConfig, chunked_rnnt_costs

torch.set_num_threads(1)


def _full_lattice(logits: torch.Tensor, targets: torch.Tensor):
    logp = logits.log_softmax(-1)
    b, t, u1, _ = logp.shape
    lp_label = torch.full(logp.shape[:3], -math.inf, dtype=logp.dtype)
    lp_label[:, :, : u1 - 1] = torch.gather(logp[:, :, : u1 - 1], 3,
                                            targets[:, None, :, None].expand(-1, t, -1, 1)).squeeze(-1)
    return logp[..., 0], lp_label


@pytest.mark.parametrize("impl", [lattice_nll, lattice_nll_torch])
def test_lattice_equals_the_full_rnnt_loss(impl):
    torch.manual_seed(0)
    B, T, U, V = 3, 7, 4, 6
    logits = torch.randn(B, T, U + 1, V, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(1, V, (B, U))
    tl, ul = torch.tensor([7, 5, 1]), torch.tensor([4, 2, 0])
    ref = rnnt_loss_numba(logits, targets, tl, ul, reduction="none")
    got = impl(*_full_lattice(logits, targets), tl, ul)
    torch.testing.assert_close(got, ref)
    g_ref, = torch.autograd.grad(ref.sum(), logits, retain_graph=True)
    g, = torch.autograd.grad(got.sum(), logits)
    torch.testing.assert_close(g, g_ref)


def test_simple_loss_against_brute_force():
    """The trivial joiner's lattice (no [B,T,U,V] tensor) gives exactly -log of the sum over
    every alignment of the product of its softmax(am[t] + lm[u]) transitions."""
    torch.manual_seed(1)
    T, U, V = 3, 2, 5
    am = torch.randn(1, T, V, dtype=torch.float64, requires_grad=True)
    lm = torch.randn(1, U + 1, V, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([[2, 4]])
    lp_blank, lp_label = simple_lattice(am, lm, y)
    nll = lattice_nll(lp_blank.double(), lp_label.double(), torch.tensor([T]), torch.tensor([U]))
    p = (am[0, :, None, :] + lm[0, None, :, :]).log_softmax(-1)  # [T, U+1, V]
    total = 0.0
    # an alignment: a sequence of T blanks and U labels ending in blank, as (t, u) moves
    for labels_at in itertools.product(range(T), repeat=U):
        if list(labels_at) != sorted(labels_at):
            continue
        lp, u = 0.0, 0
        for t in range(T):
            while u < U and labels_at[u] == t:
                lp += float(p[t, u, y[0, u]].detach())
                u += 1
            lp += float(p[t, u, 0].detach())
        total += math.exp(lp)
    assert float(nll.detach()) == pytest.approx(-math.log(total), rel=1e-9)
    nll.sum().backward()  # gradients reach am and lm through the matrix-product normaliser
    assert am.grad.abs().sum() > 0 and lm.grad.abs().sum() > 0


def test_pruned_with_a_full_window_equals_the_full_loss():
    torch.manual_seed(2)
    B, T, U, V, D = 3, 9, 4, 7, 5
    enc = torch.randn(B, T, D, dtype=torch.float64, requires_grad=True)
    pred = torch.randn(B, U + 1, D, dtype=torch.float64, requires_grad=True)
    w = torch.randn(D, V, dtype=torch.float64)
    targets = torch.randint(1, V, (B, U))
    tl, ul = torch.tensor([9, 6, 4]), torch.tensor([4, 3, 1])

    def joint(e, p):
        return torch.tanh(e + p) @ w

    full = rnnt_loss_numba(joint(enc[:, :, None], pred[:, None]), targets, tl, ul, reduction="none")
    s_range = U + 1
    starts = torch.zeros(B, T, dtype=torch.long)
    logits = joint(enc[:, :, None], gather_windows(pred, starts, s_range))
    pruned = lattice_nll(*pruned_lattice(logits, starts, targets, ul, U + 1), tl, ul)
    torch.testing.assert_close(pruned, full)
    g_full = torch.autograd.grad(full.sum(), (enc, pred), retain_graph=True)
    g_pruned = torch.autograd.grad(pruned.sum(), (enc, pred))
    for a, b in zip(g_full, g_pruned):
        torch.testing.assert_close(a, b)


def test_bounds_are_monotone_connected_and_follow_the_occupation():
    torch.manual_seed(3)
    B, T, U, S = 2, 12, 9, 3
    am, lm = torch.randn(B, T, 6), torch.randn(B, U + 1, 6)
    y = torch.randint(1, 6, (B, U))
    tl, ul = torch.tensor([12, 8]), torch.tensor([9, 5])
    from justkit.losses.rnnt_pruned import _lattice_numpy

    _, _, _, occ = _lattice_numpy(*simple_lattice(am, lm, y), tl, ul)
    occ = torch.from_numpy(occ)
    starts = prune_ranges(occ, tl, ul, S)
    for b in range(B):
        s = starts[b, : tl[b]]
        assert s[0] == 0 and s[-1] + S - 1 >= ul[b]                       # from (0, 0) to (T-1, U)
        assert bool((s[1:] >= s[:-1]).all()) and bool((s[1:] - s[:-1] <= S - 1).all())
        assert bool((s + S - 1 <= max(int(ul[b]), S - 1)).all())
    # occupation concentrated on a diagonal: the windows sit on it
    occ = torch.zeros(1, 10, 11)
    for t in range(10):
        occ[0, t, t] = 1.0
    s = prune_ranges(occ, torch.tensor([10]), torch.tensor([10]), 3)[0]
    assert all(int(s[t]) <= t <= int(s[t]) + 2 for t in range(10))


def test_device_bounds_equal_the_cpu_kernel():
    """_bounds_torch (what a GPU runs, no host sync) chooses the windows the numba kernel does."""
    from justkit.losses.rnnt_pruned import _bounds_torch

    g = torch.Generator().manual_seed(0)
    for S in (1, 2, 4, 9):
        B, T, U = 5, 17, 11
        occ = torch.rand(B, T, U + 1, generator=g, dtype=torch.float64) ** 4  # peaked, no ties
        tl = torch.tensor([17, 9, 1, 12, 17])
        ul = torch.tensor([11, 3, 0, 11, 7])
        assert torch.equal(_bounds_torch(occ, tl, ul, S), prune_ranges(occ, tl, ul, S)), S


def test_pruned_loss_bounds_the_full_one_and_config():
    """A pruned lattice holds a subset of the alignments: its cost is >= the full cost."""
    torch.manual_seed(4)
    B, T, U, V, D = 2, 10, 6, 8, 4
    enc, pred = torch.randn(B, T, D), torch.randn(B, U + 1, D)
    w = torch.randn(D, V)
    y = torch.randint(1, V, (B, U))
    tl, ul = torch.tensor([10, 9]), torch.tensor([6, 4])
    full = rnnt_loss_numba(torch.tanh(enc[:, :, None] + pred[:, None]) @ w, y, tl, ul, reduction="none")
    from justkit.losses.rnnt_pruned import _lattice_numpy

    _, _, _, occ = _lattice_numpy(*simple_lattice(enc @ w, pred @ w, y), tl, ul)
    starts = prune_ranges(torch.from_numpy(occ), tl, ul, 3)
    logits = torch.tanh(enc[:, :, None] + gather_windows(pred, starts, 3)) @ w
    pruned = lattice_nll(*pruned_lattice(logits, starts, y, ul, U + 1), tl, ul)
    assert bool((pruned >= full - 1e-4).all()) and bool(torch.isfinite(pruned).all())
    cfg = RNNTLossConfig(type="pruned", warm_step=100, simple_loss_scale=0.5)
    assert cfg.scales(0) == (1.0, 0.0) and cfg.scales(100) == (0.5, 1.0)
    s50, p50 = cfg.scales(50)
    assert s50 == pytest.approx(0.75) and p50 == pytest.approx(0.55)
    with pytest.raises(ValueError, match="loss.rnnt.type"):
        RNNTLossConfig(type="k2")
    with pytest.raises(ValueError, match="loss.rnnt.backend"):
        RNNTLossConfig(backend="warp")
    with pytest.raises(ValueError, match="pruned loss needs no chunks"):
        RNNTLossConfig(type="pruned", chunk_utts=2)


@pytest.mark.parametrize("backend", ["numba", "torchaudio"])
def test_chunked_full_loss_equals_the_one_pass_loss(backend, monkeypatch):
    """The memory-lean full loss (joint + loss per chunk of utterances, recomputed in backward)
    gives the same costs and gradients, parameters of the joint included, with the kernel of
    the backend it is given (and only that one)."""
    from justkit.losses import rnnt as rnnt_mod
    from justkit.nn.joint import Joint, JointConfig

    used = []
    real = rnnt_mod.rnnt_loss
    monkeypatch.setattr("justkit.losses.transducer.rnnt_loss",
                        lambda *a, **k: used.append(k["backend"]) or real(*a, **k))

    torch.manual_seed(5)
    B, T, U, V = 5, 8, 3, 9
    joint = Joint(6, 4, V, JointConfig(joint_dim=7))
    enc = torch.randn(B, T, 6, requires_grad=True)
    pred = torch.randn(B, U + 1, 4, requires_grad=True)
    y = torch.randint(1, V, (B, U))
    tl, ul = torch.tensor([8, 7, 8, 2, 5]), torch.tensor([3, 3, 0, 1, 2])
    ref = rnnt_loss_numba(joint(enc[:, :, None], pred[:, None]), y, tl, ul, reduction="none")
    w = torch.rand(B)
    g_ref = torch.autograd.grad((ref * w).sum(), (enc, pred, *joint.parameters()))
    got = chunked_rnnt_costs(enc, pred, joint, y, tl, ul, chunk=2, backend=backend)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    g = torch.autograd.grad((got * w).sum(), (enc, pred, *joint.parameters()))
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert used and set(used) == {backend}


@pytest.mark.parametrize("loss", [{"type": "pruned", "s_range": 3, "warm_step": 4}, {"type": "full", "chunk_utts": 1}])
def test_model_trains_with_the_pruned_and_the_chunked_loss(loss):
    from pathlib import Path

    from justkit.config import load_yaml
    from justkit.losses.terms import LossConfig
    from justkit.models.just import JUSTConfig, JUSTModel

    d = load_yaml(Path(__file__).resolve().parents[1] / "egs/TEMPLATE/conf/model/tiny.yaml")["model"]
    d.update(mode="supervised", vocab_size=10)
    torch.manual_seed(0)
    model = JUSTModel(JUSTConfig.from_dict(d), LossConfig.from_dict({"rnnt": {**loss, "backend": "numba"}}))
    g = torch.Generator().manual_seed(0)
    batch = {"feats": torch.randn(3, 60, 80, generator=g), "feat_lens": torch.tensor([60, 50, 40]),
             "tokens": torch.randint(1, 10, (3, 4), generator=g), "token_lens": torch.tensor([4, 3, 2]),
             "labelled": torch.ones(3, dtype=torch.bool)}
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    first = None
    for step in range(12):
        out = model(batch, step=step)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        first = first if first is not None else float(out["rnnt"])
    assert float(out["rnnt"]) < first
    if loss["type"] == "pruned":
        assert "rnnt_simple" in out and model.simple_am_proj is not None
        assert all(p.grad is not None for p in model.simple_lm_proj.parameters())
