"""Tests for justkit.nn building blocks and the contrastive/MLM losses."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from justkit.losses.contrastive import contrastive_loss, sample_distractors
from justkit.losses.mlm import mlm_loss
from justkit.nn.conformer import (
    ConformerBlock,
    ConformerConfig,
    ConformerStack,
    RelPosMultiHeadAttention,
    attention_allowed,
    lengths_to_valid,
)
from justkit.nn.joint import Joint, JointConfig
from justkit.nn.masking import MaskingConfig, SpanMasker, span_mask
from justkit.nn.predictor import Predictor, PredictorConfig
from justkit.nn.quantizer import GumbelVectorQuantizer, QuantizerConfig, perplexity
from justkit.nn.subsampling import Conv2dSubsampling, SubsamplingConfig

torch.set_num_threads(1)
D = 16


def conf_cfg(**kw) -> ConformerConfig:
    base = dict(num_heads=2, ffn_dim=32, conv_kernel=5, dropout=0.0, attention_dropout=0.0, max_rel_pos=8)
    base.update(kw)
    return ConformerConfig(**base)


# ---------------------------------------------------------------- subsampling
def test_subsampling_lengths_exact():
    torch.manual_seed(0)
    sub = Conv2dSubsampling(80, D, SubsamplingConfig(channels=4, dropout=0.0))
    for t in [7, 8, 9, 10, 11, 50, 101]:
        y, lens = sub(torch.randn(1, t, 80), torch.tensor([t]))
        assert y.shape == (1, int(lens), D)
        assert int(lens) == ((t - 3) // 2 + 1 - 3) // 2 + 1
    # batch: lengths per row, padded rows zero beyond their length
    y, lens = sub(torch.randn(3, 40, 80), torch.tensor([40, 23, 7]))
    assert lens.tolist() == [9, 5, 1] and y.shape == (3, 9, D)
    assert torch.all(y[1, 5:] == 0) and torch.all(y[2, 1:] == 0)


def test_subsampling_rejects_bad_input():
    sub = Conv2dSubsampling(80, D, SubsamplingConfig(channels=4))
    with pytest.raises(ValueError, match="shorter"):
        sub(torch.randn(1, 10, 80), torch.tensor([6]))
    with pytest.raises(ValueError, match="expected feats"):
        sub(torch.randn(1, 10, 40), torch.tensor([10]))
    with pytest.raises(ValueError, match="padded length"):
        sub(torch.randn(1, 10, 80), torch.tensor([11]))


# ---------------------------------------------------------------- conformer
@pytest.mark.parametrize("pos_enc", ["rel_bias", "rope", "none"])
@pytest.mark.parametrize("attention", ["global", "local"])
@pytest.mark.parametrize("conv_norm", ["batch", "layer"])
def test_conformer_padding_invariance(attention, conv_norm, pos_enc):
    torch.manual_seed(0)
    cfg = conf_cfg(attention=attention, left_window=3, right_window=2, conv_norm=conv_norm, pos_enc=pos_enc)
    stack = ConformerStack(D, 2, cfg)
    x = torch.randn(2, 12, D)
    lens = torch.tensor([12, 7])
    for training in (True, False):  # train: batch-norm stats over valid frames only
        stack.train(training)
        ref = stack(x, lengths_to_valid(lens, 12))
        xp = torch.cat([x, 100 * torch.randn(2, 9, D)], dim=1)  # garbage padding
        xp[1, 7:] = -50.0
        out = stack(xp, lengths_to_valid(lens, 21))
        assert torch.allclose(out[0, :12], ref[0, :12], atol=1e-5)
        assert torch.allclose(out[1, :7], ref[1, :7], atol=1e-5)
        assert torch.all(out[1, 7:] == 0) and torch.isfinite(out).all()
    # a row alone gives the same as in the batch (eval: running stats)
    stack.eval()
    alone = stack(x[1:, :7], lengths_to_valid(lens[1:], 7))
    assert torch.allclose(alone[0], stack(x, lengths_to_valid(lens, 12))[1, :7], atol=1e-5)


def _input_grad_support(fn, t: int, x: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    y = fn(x)[0, t]
    (y * torch.linspace(-1, 2, y.numel())).sum().backward()  # not .sum(): a LayerNorm output sums to a constant
    return (x.grad[0].abs().sum(-1) > 0).nonzero().squeeze(1)


def test_local_attention_restricts_receptive_field():
    torch.manual_seed(0)
    left, right, k, T = 3, 2, 5, 20
    cfg = conf_cfg(attention="local", left_window=left, right_window=right, conv_kernel=k)
    att = RelPosMultiHeadAttention(D, cfg)
    valid = torch.ones(1, T, dtype=torch.bool)
    allowed = attention_allowed(valid, cfg)
    x = torch.randn(1, T, D)
    t = 10
    support = _input_grad_support(lambda z: att(z, allowed), t, x)
    assert support.tolist() == list(range(t - left, t + right + 1))
    # one conformer block: the conv module widens the window by (k - 1) / 2 on each side
    blk = ConformerBlock(D, cfg).eval()
    support = _input_grad_support(lambda z: blk(z, valid, allowed), t, x)
    r = k // 2
    assert support.tolist() == list(range(t - left - r, t + right + r + 1))
    # global attention sees everything
    gcfg = conf_cfg(attention="global")
    support = _input_grad_support(lambda z: RelPosMultiHeadAttention(D, gcfg)(z, attention_allowed(valid, gcfg)), t, x)
    assert support.tolist() == list(range(T))


def test_conformer_config_errors():
    with pytest.raises(ValueError, match="attention"):
        ConformerConfig(attention="chunk")
    with pytest.raises(ValueError, match="odd"):
        ConformerConfig(conv_kernel=4)
    with pytest.raises(ValueError, match="divisible"):
        RelPosMultiHeadAttention(15, ConformerConfig(num_heads=2))


# ---------------------------------------------------------------- quantizer
def _onehot_quantizer(v: int) -> GumbelVectorQuantizer:
    q = GumbelVectorQuantizer(v, QuantizerConfig(groups=1, entries=v, code_dim=4))
    with torch.no_grad():
        q.logits.weight.copy_(10 * torch.eye(v))
        q.logits.bias.zero_()
    return q.eval()


def test_quantizer_perplexity_uniform_vs_collapsed():
    v = 8
    q = _onehot_quantizer(v)
    valid = torch.ones(1, 4 * v, dtype=torch.bool)
    uniform = F.one_hot(torch.arange(4 * v) % v, v).float()[None]
    collapsed = F.one_hot(torch.zeros(4 * v, dtype=torch.long), v).float()[None]
    ou, oc = q(uniform, valid), q(collapsed, valid)
    assert ou.code_perplexity.item() == pytest.approx(v, rel=1e-4)
    assert oc.code_perplexity.item() == pytest.approx(1.0, rel=1e-4)
    assert ou.prob_perplexity > 2 * oc.prob_perplexity
    assert ou.diversity_loss < oc.diversity_loss
    assert 0.0 <= ou.diversity_loss.item() <= 1.0
    assert torch.equal(ou.ids[0, :, 0], torch.arange(4 * v) % v)
    # padded frames do not count: collapsed valid frames + uniform padding is still collapsed
    mixed = torch.cat([collapsed, uniform], 1)
    mvalid = torch.cat([valid, torch.zeros_like(valid)], 1)
    assert q(mixed, mvalid).code_perplexity.item() == pytest.approx(1.0, rel=1e-4)
    # perplexity() bounds
    assert perplexity(torch.full((1, 3, 2, 5), 0.2), torch.ones(1, 3, dtype=torch.bool)).item() == pytest.approx(10, rel=1e-4)


def test_quantizer_shapes_straight_through_and_temperature():
    torch.manual_seed(0)
    cfg = QuantizerConfig(groups=2, entries=5, code_dim=6, temp_max=2.0, temp_min=0.5, temp_decay=0.9)
    q = GumbelVectorQuantizer(D, cfg).train()
    x = torch.randn(2, 7, D, requires_grad=True)
    out = q(x, torch.ones(2, 7, dtype=torch.bool), step=3)
    assert out.quantized.shape == (2, 7, 6) and out.ids.shape == (2, 7, 2)
    assert out.ids.min() >= 0 and out.ids.max() < 5
    # each group's half of the quantized vector is exactly one codebook row
    g1 = out.quantized[..., 3:].detach()
    assert torch.allclose(g1, q.codebook[1][out.ids[..., 1]])
    out.quantized.sum().backward()
    assert q.logits.weight.grad.abs().sum() > 0 and x.grad.abs().sum() > 0  # straight-through
    assert out.temperature == pytest.approx(2.0 * 0.9**3)
    assert q.temperature(0) == 2.0 and q.temperature(10_000) == 0.5
    with pytest.raises(ValueError, match="divisible"):
        QuantizerConfig(groups=3, code_dim=8)


# ---------------------------------------------------------------- masking
def test_span_mask_respects_lengths_and_spans():
    g = torch.Generator().manual_seed(0)
    cfg = MaskingConfig(span_start_prob=0.065, span=10, min_spans=1)
    lens = torch.tensor([200, 30, 5, 12])
    fracs = []
    for _ in range(20):
        m = span_mask(lens, 200, cfg, g)
        for i, n in enumerate(lens.tolist()):
            assert not m[i, n:].any()
            if n > cfg.span:
                assert m[i, :n].sum() >= cfg.span
        assert not m[2].any()  # not longer than a span: no mask (it would mask the whole utterance)
        fracs.append(m[0].float().mean().item())
    assert 0.3 < sum(fracs) / len(fracs) < 0.7  # ~1 - (1 - p)^M = 0.49
    masker = SpanMasker(D, cfg)
    x = torch.randn(4, 200, D)
    xm, m = masker(x, lens)
    assert torch.equal(xm[m], masker.embedding.expand(int(m.sum()), D))
    assert torch.equal(xm[~m], x[~m])


# ---------------------------------------------------------------- contrastive / MLM
def test_contrastive_loss_hand_computed():
    context = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]])
    targets = torch.tensor([[[1.0, 0.0], [1.0, 1.0], [3.0, -1.0]]])
    mask = torch.tensor([[True, True, False]])
    kappa = 0.5
    loss, info = contrastive_loss(context, targets, mask, num_distractors=1, temperature=kappa)
    assert info["distractors"][0, :2, 0].tolist() == [1, 0] and info["anchors"].tolist() == [[True, True, False]]
    s = 1 / math.sqrt(2)
    l0 = -math.log(math.exp(1 / kappa) / (math.exp(1 / kappa) + math.exp(s / kappa)))
    l1 = -math.log(math.exp(s / kappa) / (math.exp(s / kappa) + math.exp(0.0)))
    assert loss.item() == pytest.approx((l0 + l1) / 2, rel=1e-5)
    # a distractor identical to the positive is left out of the softmax
    same = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [0.0, 0.0]]])
    loss, _ = contrastive_loss(context, same, mask, num_distractors=1, temperature=kappa)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    # no utterance with two masked frames: zero loss that still has a graph
    c = context.clone().requires_grad_(True)
    loss, info = contrastive_loss(c, targets, torch.tensor([[True, False, False]]), 1, kappa)
    assert info["num"].item() == 0 and loss.item() == 0.0 and loss.requires_grad
    # the quantizer's codes say "same target" as the vectors do
    loss_c, _ = contrastive_loss(context, same, mask, 1, kappa, codes=torch.tensor([[[3], [3], [1]]]))
    assert loss_c.item() == pytest.approx(0.0, abs=1e-6)


def test_distractors_never_the_positive():
    g = torch.Generator().manual_seed(0)
    b, t, k = 3, 40, 10
    mask = torch.rand(b, t, generator=g) < 0.4
    mask[2] = False
    mask[2, 5:7] = True  # two masked frames: each must draw the other one
    mask[1] = False
    mask[1, 9] = True  # one masked frame: no distractor, not an anchor
    anchors, neg = sample_distractors(mask, k, g)
    assert torch.equal(anchors, mask & (mask.sum(1, keepdim=True) >= 2)) and neg.shape == (b, t, k)
    frames = torch.arange(t)[None, :, None].expand(b, t, k)
    a = anchors[:, :, None].expand_as(neg)
    assert not (neg == frames)[a].any()                                  # never the anchor
    assert torch.gather(mask, 1, neg.reshape(b, -1)).view(b, t, k)[a].all()  # always a masked frame
    assert neg[2, 5].eq(6).all() and neg[2, 6].eq(5).all()
    # roughly uniform over the other masked frames
    m = torch.zeros(1, 10, dtype=torch.bool)
    m[0, [1, 4, 8]] = True
    _, neg = sample_distractors(m, 3000, g)
    counts = torch.bincount(neg[0, 1], minlength=10)
    assert counts[1] == 0 and abs(counts[4].item() - 1500) < 150 and counts[4] + counts[8] == 3000


def test_contrastive_loss_matches_a_per_frame_reference():
    torch.manual_seed(0)
    b, t, d, k, kappa = 2, 12, 6, 4, 0.1
    context, targets = torch.randn(b, t, d, requires_grad=True), torch.randn(b, t, d)
    mask = torch.rand(b, t) < 0.5
    mask[:, :2] = True
    g = torch.Generator().manual_seed(1)
    loss, info = contrastive_loss(context, targets, mask, k, kappa, generator=g)
    ref = []
    for i, j in info["anchors"].nonzero().tolist():
        cand = torch.cat([targets[i, j:j + 1], targets[i, info["distractors"][i, j]]])
        ref.append(-F.cosine_similarity(context[i, j][None], cand, dim=-1).div(kappa).log_softmax(0)[0])
    assert loss.item() == pytest.approx(torch.stack(ref).mean().item(), rel=1e-5)
    assert info["num"].item() == len(ref)
    loss.backward()
    assert context.grad[~info["anchors"]].abs().sum() == 0 and context.grad.abs().sum() > 0


def test_mlm_loss_matches_cross_entropy():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 2, 7)
    ids = torch.randint(0, 7, (2, 5, 2))
    mask = torch.tensor([[1, 0, 1, 0, 0], [0, 0, 0, 1, 1]], dtype=torch.bool)
    loss, info = mlm_loss(logits, ids, mask)
    ref = torch.stack([F.cross_entropy(logits[b, t], ids[b, t]) for b, t in mask.nonzero().tolist()]).mean()
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5) and info["num"] == 4
    with pytest.raises(ValueError, match="shape"):
        mlm_loss(logits, ids[..., :1], mask)


# ---------------------------------------------------------------- predictor / joint
def test_predictor_stepwise_equals_full_and_joint_broadcast():
    torch.manual_seed(0)
    pred = Predictor(11, PredictorConfig(embed_dim=8, hidden_dim=12, num_layers=2, dropout=0.0)).eval()
    tokens = torch.cat([pred.initial_tokens(2), torch.randint(1, 11, (2, 4))], dim=1)
    full, _ = pred(tokens)
    state, steps = None, []
    for u in range(tokens.size(1)):
        o, state = pred(tokens[:, u : u + 1], state)
        steps.append(o)
    assert full.shape == (2, 5, 12)
    assert torch.allclose(torch.cat(steps, 1), full, atol=1e-6)
    joint = Joint(D, 12, 11, JointConfig(joint_dim=9))
    enc = torch.randn(2, 6, D)
    logits = joint(enc[:, :, None], full[:, None])
    assert logits.shape == (2, 6, 5, 11)
    assert torch.allclose(logits[1, 3, 2], joint(enc[1, 3], full[1, 2]), atol=1e-6)
    with pytest.raises(ValueError, match="long"):
        pred(tokens.float())


def test_global_attention_mask_is_key_padding_only():
    """Global attention needs no [T, T] mask: a [B, 1, 1, T] key-padding mask (what the fused
    SDPA kernels take); local attention's band is [B, 1, T, T] and never masks a whole row."""
    from justkit.nn.conformer import attention_allowed

    valid = lengths_to_valid(torch.tensor([5, 3]), 5)
    assert attention_allowed(valid, conf_cfg()).shape == (2, 1, 1, 5)
    local = attention_allowed(valid, conf_cfg(attention="local", left_window=1, right_window=0))
    assert local.shape == (2, 1, 5, 5) and local.any(-1).all()


def test_rotary_scores_depend_on_relative_position_only():
    from justkit.nn.conformer import rotary

    torch.manual_seed(0)
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)
    seq_q = q.expand(1, 1, 12, 8).clone()
    seq_k = k.expand(1, 1, 12, 8).clone()
    scores = rotary(seq_q, 10000.0) @ rotary(seq_k, 10000.0).transpose(-1, -2)  # [1, 1, 12, 12]
    for shift in (1, 3):
        assert torch.allclose(scores[0, 0, 2, 5], scores[0, 0, 2 + shift, 5 + shift], atol=1e-5)
    assert not torch.allclose(scores[0, 0, 2, 5], scores[0, 0, 2, 6], atol=1e-3)
    with pytest.raises(ValueError, match="even head dimension"):
        ConformerStack(6, 1, conf_cfg(num_heads=2, pos_enc="rope"))
