"""wav2vec 2.0 Gumbel-softmax product quantizer with the codebook diversity loss."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

INPUTS = ("features", "proj")
INITS = ("normal", "default")


@dataclass
class QuantizerConfig:
    """G codebooks of V entries each; the quantized vector concatenates one entry per group.

    Defaults are wav2vec 2.0 BASE (G=2, V=320, Gumbel temperature 2 -> 0.5 by 0.999995
    per update). w2v-BERT uses one codebook of 1024 entries (G=1, V=1024).

    What it reads (docs/training.md, "The quantizer's input"): ``input: features`` = the feature
    encoder's convolution output before its projection to d_model, as wav2vec 2.0 (fairseq:
    ``unmasked_features`` after ``layer_norm``) and fairseq2's w2v-BERT quantize; ``proj`` = after
    the projection (justkit before 2026-12). ``input_norm``: a LayerNorm on that input (both
    references normalise what they quantize; without it the logits of the mini model were so flat
    that the Gumbel sample was the argmax code on 9% of frames). The quantizer always reads the
    features before the feature encoder's dropout. ``init: normal`` = N(0, 1) logit weights
    (fairseq's ``weight_proj``), ``default`` = PyTorch's Linear init.
    """

    groups: int = 2
    entries: int = 320
    code_dim: int = 256  # dimension of the quantized vector (each group gives code_dim / groups)
    temp_max: float = 2.0
    temp_min: float = 0.5
    temp_decay: float = 0.999995
    input: str = "features"
    input_norm: bool = True
    init: str = "normal"

    def __post_init__(self) -> None:
        if self.groups < 1 or self.entries < 2:
            raise ValueError(f"quantizer needs groups >= 1 and entries >= 2, got {self.groups}, {self.entries}")
        if self.code_dim % self.groups:
            raise ValueError(f"quantizer code_dim {self.code_dim} not divisible by groups {self.groups}")
        if not 0 < self.temp_min <= self.temp_max or not 0 < self.temp_decay <= 1:
            raise ValueError("quantizer temperatures need 0 < temp_min <= temp_max and 0 < temp_decay <= 1")
        if self.input not in INPUTS:
            raise ValueError(f"quantizer.input must be one of {INPUTS}, got {self.input!r}")
        if self.init not in INITS:
            raise ValueError(f"quantizer.init must be one of {INITS}, got {self.init!r}")


# What a stored quantizer config of a justkit before these options meant (models/just.py migrates it)
LEGACY = {"input": "proj", "input_norm": False, "init": "normal"}


@dataclass
class QuantizerOutput:
    quantized: torch.Tensor  # [B, T, code_dim]
    ids: torch.Tensor  # [B, T, G] long: one codebook index per group (the MLM targets)
    diversity_loss: torch.Tensor  # scalar, (GV - prob_perplexity) / GV
    prob_perplexity: torch.Tensor  # scalar: perplexity of the batch-averaged soft assignment
    code_perplexity: torch.Tensor  # scalar: perplexity of the hard code usage
    temperature: float
    code_entropy: torch.Tensor  # scalar: mean per-frame entropy (nats) of softmax(logits), over groups
    code_agreement: torch.Tensor  # scalar: expected share of frames whose Gumbel sample is the argmax code


def perplexity(probs: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Sum over groups of exp(entropy) of the valid-frame-averaged distribution.

    probs [B, T, G, V] (rows sum to 1), valid [B, T] -> scalar in [G, G*V].
    """
    m = valid[..., None, None].to(probs.dtype)
    avg = (probs * m).sum(dim=(0, 1)) / m.sum().clamp(min=1.0)  # [G, V]
    return torch.exp(-(avg * torch.log(avg + 1e-7)).sum(-1)).sum()


def target_quality(logits: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean per-frame entropy of softmax(logits) in nats, expected Gumbel/argmax agreement) over
    valid frames and groups. The agreement is exact in expectation: the hard Gumbel-softmax sample
    is argmax(logits + Gumbel noise) whatever the temperature (which only shapes the
    straight-through gradient), i.e. code v with probability softmax(logits)[v], so it equals the
    argmax code with probability max_v softmax(logits)[v]."""
    m = valid[..., None].to(logits.dtype)                      # [B, T, 1]
    n = (m.sum() * logits.size(2)).clamp(min=1.0)
    logp = logits.log_softmax(-1)
    p = logp.exp()
    ent = -(p * logp).sum(-1)                                  # [B, T, G]
    return (ent * m).sum() / n, (p.amax(-1) * m).sum() / n


class GumbelVectorQuantizer(nn.Module):
    """[LayerNorm] -> Linear -> G x V logits -> (hard, straight-through) Gumbel-softmax -> codebook lookup.

    Token ids are kept per group ([B, T, G]) rather than combined into one id of V**G
    classes, so the MLM head predicts G softmaxes of V (a single softmax for G = 1,
    which is w2v-BERT's setting).
    """

    def __init__(self, in_dim: int, cfg: QuantizerConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or QuantizerConfig()
        self.norm = nn.LayerNorm(in_dim) if cfg.input_norm else None
        self.logits = nn.Linear(in_dim, cfg.groups * cfg.entries)
        if cfg.init == "normal":  # wav2vec 2.0 init: weights N(0, 1), zero bias
            nn.init.normal_(self.logits.weight, mean=0.0, std=1.0)
            nn.init.zeros_(self.logits.bias)
        self.codebook = nn.Parameter(torch.rand(cfg.groups, cfg.entries, cfg.code_dim // cfg.groups))  # U(0, 1)
        # Updates this quantizer was trained for before the current run (set when a run starts
        # from a pre-trained checkpoint), so that fine-tuning continues the temperature
        # schedule where pre-training left it instead of restarting at temp_max.
        # A buffer, so it travels in checkpoints; mirrored as a Python int (no device sync per step).
        self.register_buffer("step_offset", torch.zeros((), dtype=torch.long))
        self._offset = 0
        self.register_load_state_dict_post_hook(lambda mod, _keys: mod._sync_offset())

    def _sync_offset(self) -> None:
        self._offset = int(self.step_offset)

    def set_step_offset(self, steps: int) -> None:
        """Continue the temperature schedule after ``steps`` earlier updates."""
        self.step_offset.fill_(int(steps))
        self._offset = int(steps)

    def temperature(self, step: int) -> float:
        """max(temp_max * temp_decay**(step_offset + step), temp_min)."""
        c = self.cfg
        s = max(int(step), 0) + self._offset
        return max(c.temp_max * c.temp_decay ** s, c.temp_min)

    def forward(self, x: torch.Tensor, valid: torch.Tensor, step: int = 0) -> QuantizerOutput:
        c = self.cfg
        b, t, _ = x.shape
        if self.norm is not None:
            x = self.norm(x)
        logits = self.logits(x).float().view(b, t, c.groups, c.entries)
        tau = self.temperature(step)
        hard_ids = logits.argmax(-1)  # [B, T, G]
        if self.training:
            onehot = F.gumbel_softmax(logits, tau=tau, hard=True, dim=-1)
            ids = onehot.argmax(-1)
        else:
            onehot = F.one_hot(hard_ids, c.entries).to(logits.dtype)
            ids = hard_ids
        q = torch.einsum("btgv,gvd->btgd", onehot.to(self.codebook.dtype), self.codebook)
        q = q.reshape(b, t, c.code_dim)
        soft = logits.softmax(-1)
        prob_ppl = perplexity(soft, valid)
        gv = c.groups * c.entries
        div = (gv - prob_ppl) / gv
        with torch.no_grad():
            code_ppl = perplexity(F.one_hot(hard_ids, c.entries).float(), valid)
            entropy, agreement = target_quality(logits, valid)
        return QuantizerOutput(q, ids, div, prob_ppl.detach(), code_ppl, tau, entropy, agreement)
