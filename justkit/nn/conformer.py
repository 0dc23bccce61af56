"""Conformer blocks with relative-position self-attention (global or local) that honour padding."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

ATTENTION_TYPES = ("global", "local")
CONV_NORMS = ("batch", "layer")
POS_ENCODINGS = ("rel_bias", "rope", "none")


@dataclass
class ConformerConfig:
    """One Conformer block's hyper-parameters (shared by every block of a stack).

    ``pos_enc``: ``rel_bias`` = a learned scalar bias per head and clipped relative
    distance (Shaw et al. 2018 / T5 style) added to the attention logits. It fits
    ``scaled_dot_product_attention``'s additive ``attn_mask``, costs H x (2P+1) parameters
    per layer, and, unlike Transformer-XL's content-dependent term, needs no extra
    matmul; distances beyond ``max_rel_pos`` share one bias. It is a dense [1, H, T, T]
    additive mask, which keeps ``scaled_dot_product_attention`` off its flash kernel.
    ``rope`` = rotary position embedding of queries and keys (Su et al. 2021; relative by
    construction, no mask term). ``none`` = no position term in attention (w2v-BERT, Table 1:
    the convolutions carry position). With ``rope`` or ``none`` and global attention the only
    mask is the key padding, a [B, 1, 1, T] boolean that the memory-efficient kernel takes
    (and no mask at all when a batch has no padding, which the flash kernel takes).
    """

    num_heads: int = 4
    ffn_dim: int = 1024
    conv_kernel: int = 31  # depthwise conv kernel (Conformer paper 32 -> odd 31; w2v-BERT XL: 5)
    conv_norm: str = "batch"  # "batch" (Conformer paper; stats over valid frames only) or "layer"
    dropout: float = 0.1  # residual/FFN/conv dropout (Conformer paper 0.1)
    attention_dropout: float = 0.1
    attention: str = "global"  # "global" (full utterance) or "local" (band of frames)
    left_window: int = 64  # local attention: frames to the left a query sees (encoder frames)
    right_window: int = 0  # local attention: frames to the right
    max_rel_pos: int = 64  # relative distances are clipped to [-max_rel_pos, max_rel_pos]
    pos_enc: str = "rel_bias"  # "rel_bias", "rope" or "none" (w2v-BERT Table 1: no relative attention)
    rope_base: float = 10000.0  # rope: the wavelength base of the rotary frequencies

    def __post_init__(self) -> None:
        if self.pos_enc not in POS_ENCODINGS:
            raise ValueError(f"pos_enc must be one of {POS_ENCODINGS}, got {self.pos_enc!r}")
        if self.attention not in ATTENTION_TYPES:
            raise ValueError(f"attention must be one of {ATTENTION_TYPES}, got {self.attention!r}")
        if self.conv_norm not in CONV_NORMS:
            raise ValueError(f"conv_norm must be one of {CONV_NORMS}, got {self.conv_norm!r}")
        if self.conv_kernel < 1 or self.conv_kernel % 2 == 0:
            raise ValueError(f"conv_kernel must be odd and >= 1 (same-length conv), got {self.conv_kernel}")
        if self.left_window < 0 or self.right_window < 0 or self.max_rel_pos < 0:
            raise ValueError("left_window, right_window and max_rel_pos must be >= 0")
        if self.num_heads < 1 or self.ffn_dim < 1:
            raise ValueError("num_heads and ffn_dim must be >= 1")
        for name in ("dropout", "attention_dropout"):
            v = getattr(self, name)
            if not 0.0 <= v < 1.0:  # also refuses NaN
                raise ValueError(f"{name} must be in [0, 1), got {v}")


def lengths_to_valid(lens: torch.Tensor, max_len: int) -> torch.Tensor:
    """[B] lengths -> [B, T] bool, True at valid (non-padded) frames."""
    return torch.arange(max_len, device=lens.device)[None, :] < lens[:, None]


def attention_allowed(valid: torch.Tensor, cfg: ConformerConfig) -> torch.Tensor:
    """Bool mask, True where query i may attend key j: [B, 1, 1, T] (global: valid keys) or
    [B, 1, T, T] (local: valid keys inside the band, and every query itself).

    No row is ever fully masked (that would give NaN): a global query sees the utterance's
    valid keys (there is at least one), a local one at least itself; valid rows are unchanged
    by the latter since a valid query always sees itself.
    """
    allowed = valid[:, None, None, :]
    if cfg.attention != "local":
        return allowed
    t = valid.size(1)
    idx = torch.arange(t, device=valid.device)
    rel = idx[None, :] - idx[:, None]  # key - query
    band = (rel >= -cfg.left_window) & (rel <= cfg.right_window)
    return (allowed & band[None, None]) | (rel == 0)[None, None]  # (not torch.eye: ONNX Runtime has no bool EyeLike)


def rotary(x: torch.Tensor, base: float) -> torch.Tensor:
    """Rotary position embedding of ``x`` [B, H, T, Dh] (Dh even): pairs (i, i + Dh/2) rotated by
    position t times frequency base^(-2i/Dh)."""
    t, dh = x.size(-2), x.size(-1)
    half = dh // 2
    freq = base ** (-torch.arange(half, device=x.device, dtype=torch.float32) * 2.0 / dh)
    ang = torch.arange(t, device=x.device, dtype=torch.float32)[:, None] * freq[None, :]  # [T, Dh/2]
    cos, sin = ang.cos().to(x.dtype), ang.sin().to(x.dtype)
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class RelPosMultiHeadAttention(nn.Module):
    """Multi-head self-attention, with a learned per-head relative-position bias unless ``pos_enc: none``."""

    def __init__(self, d_model: int, cfg: ConformerConfig) -> None:
        super().__init__()
        if d_model % cfg.num_heads:
            from justkit.config import ConfigError

            raise ConfigError(f"model.d_model {d_model} is not divisible by model.conformer.num_heads {cfg.num_heads}")
        self.h = cfg.num_heads
        self.p = cfg.max_rel_pos
        self.dropout = cfg.attention_dropout
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.rel_bias = (nn.Parameter(torch.zeros(2 * cfg.max_rel_pos + 1, cfg.num_heads))
                         if cfg.pos_enc == "rel_bias" else None)
        self.rope_base = cfg.rope_base if cfg.pos_enc == "rope" else None
        if self.rope_base is not None and (d_model // cfg.num_heads) % 2:
            raise ValueError(f"pos_enc rope needs an even head dimension, got {d_model // cfg.num_heads}")

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.h, d // self.h).permute(2, 0, 3, 1, 4)
        if self.rope_base is not None:
            q, k = rotary(q, self.rope_base), rotary(k, self.rope_base)
        if self.rel_bias is None:
            mask = allowed
        else:
            idx = torch.arange(t, device=x.device)
            rel = (idx[None, :] - idx[:, None]).clamp(-self.p, self.p) + self.p
            bias = self.rel_bias[rel].permute(2, 0, 1).unsqueeze(0).to(q.dtype)  # [1, H, T, T]
            mask = bias.masked_fill(~allowed, float("-inf"))
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0
        )
        return self.out(y.transpose(1, 2).reshape(b, t, d))


class MaskedBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm over channels whose batch statistics count valid frames only.

    Own code because torch's BatchNorm1d would include padded frames in the statistics,
    so a valid frame's output would change with the amount of padding in the batch.
    ``update_stats = False`` (see :func:`frozen_running_stats`) normalises a training batch
    with its own statistics but leaves the running statistics, which decoding uses, alone.
    """

    update_stats: bool = True

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:  # x [B, C, T]
        if not self.training:
            return super().forward(x)
        m = valid[:, None, :].to(x.dtype)
        n = m.sum().clamp(min=1.0)
        mean = (x * m).sum(dim=(0, 2)) / n
        var = (((x - mean[None, :, None]) ** 2) * m).sum(dim=(0, 2)) / n
        if self.update_stats:
            self._update_running(mean, var, n)
        y = (x - mean[None, :, None]) / torch.sqrt(var[None, :, None] + self.eps)
        return y * self.weight[None, :, None] + self.bias[None, :, None]

    def _update_running(self, mean: torch.Tensor, var: torch.Tensor, n: torch.Tensor) -> None:
        with torch.no_grad():
            self.num_batches_tracked += 1
            mom = self.momentum if self.momentum is not None else 0.1
            unbiased = var * n / (n - 1).clamp(min=1.0)
            self.running_mean.mul_(1 - mom).add_(mom * mean.detach())
            self.running_var.mul_(1 - mom).add_(mom * unbiased.detach())


@contextlib.contextmanager
def frozen_running_stats(module: nn.Module) -> Iterator[None]:
    """Inside the block, no :class:`MaskedBatchNorm1d` of ``module`` updates its running statistics.

    JUST runs the conformer blocks twice per step: on the masked input (contrastive and MLM
    terms) and on the unmasked input (RNN-T). Decoding normalises with the running
    statistics, so they must describe the input decoding sees: the masked pass runs frozen.
    """
    norms = [m for m in module.modules() if isinstance(m, MaskedBatchNorm1d)]
    saved = [m.update_stats for m in norms]
    for m in norms:
        m.update_stats = False
    try:
        yield
    finally:
        for m, s in zip(norms, saved):
            m.update_stats = s


class ConvModule(nn.Module):
    """LN -> pointwise (2d) -> GLU -> zero padding -> depthwise conv -> norm -> Swish -> pointwise."""

    def __init__(self, d_model: int, cfg: ConformerConfig) -> None:
        super().__init__()
        self.norm_in = nn.LayerNorm(d_model)
        self.pw1 = nn.Conv1d(d_model, 2 * d_model, 1)
        self.dw = nn.Conv1d(d_model, d_model, cfg.conv_kernel, padding=cfg.conv_kernel // 2, groups=d_model)
        self.batch_norm = cfg.conv_norm == "batch"
        self.norm = MaskedBatchNorm1d(d_model) if self.batch_norm else nn.LayerNorm(d_model)
        self.pw2 = nn.Conv1d(d_model, d_model, 1)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        y = self.norm_in(x).transpose(1, 2)  # [B, D, T]
        y = F.glu(self.pw1(y), dim=1)
        y = y.masked_fill(~valid[:, None, :], 0.0)  # padded frames must not leak into valid ones
        y = self.dw(y)
        if self.batch_norm:
            y = self.norm(y, valid)
        else:
            y = self.norm(y.transpose(1, 2)).transpose(1, 2)
        y = self.pw2(F.silu(y))
        return self.dropout(y.transpose(1, 2))


class FeedForward(nn.Module):
    """LN -> Linear -> Swish -> dropout -> Linear -> dropout."""

    def __init__(self, d_model: int, cfg: ConformerConfig) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(d_model),
            nn.Linear(d_model, cfg.ffn_dim),
            nn.SiLU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(cfg.ffn_dim, d_model),
            nn.Dropout(cfg.dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ConformerBlock(nn.Module):
    """x + FFN/2 -> x + MHSA -> x + Conv -> x + FFN/2 -> LayerNorm (Gulati et al. 2020)."""

    def __init__(self, d_model: int, cfg: ConformerConfig) -> None:
        super().__init__()
        self.ffn1 = FeedForward(d_model, cfg)
        self.norm_att = nn.LayerNorm(d_model)
        self.att = RelPosMultiHeadAttention(d_model, cfg)
        self.att_dropout = nn.Dropout(cfg.dropout)
        self.conv = ConvModule(d_model, cfg)
        self.ffn2 = FeedForward(d_model, cfg)
        self.norm_out = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor, valid: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        x = x + 0.5 * self.ffn1(x)
        x = x + self.att_dropout(self.att(self.norm_att(x), allowed))
        x = x + self.conv(x, valid)
        x = x + 0.5 * self.ffn2(x)
        return self.norm_out(x).masked_fill(~valid.unsqueeze(-1), 0.0)


class ConformerStack(nn.Module):
    """``num_blocks`` Conformer blocks; ``forward(x [B,T,D], valid [B,T]) -> [B,T,D]`` (padded frames 0)."""

    def __init__(self, d_model: int, num_blocks: int, cfg: ConformerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.blocks = nn.ModuleList(ConformerBlock(d_model, cfg) for _ in range(num_blocks))

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        allowed = attention_allowed(valid, self.cfg)
        for blk in self.blocks:
            x = blk(x, valid, allowed)
        return x
