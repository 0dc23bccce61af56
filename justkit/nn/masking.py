"""wav2vec 2.0 span masking over encoder frames, replaced by a learned mask embedding."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class MaskingConfig:
    """Each valid frame starts a span of ``span`` frames with probability ``span_start_prob``.

    wav2vec 2.0 / w2v-BERT: p = 0.065, M = 10 (spans overlap; about half the frames end up
    masked). fairseq writes the same rule as ``mask_prob`` = p * M = 0.65 and fairseq2 as
    ``max_temporal_mask_prob`` = 0.65: their number is the expected masked share before
    overlaps, ten times this one. Copying 0.65 here would start a span at 65% of frames.
    """

    span_start_prob: float = 0.065
    span: int = 10
    min_spans: int = 1  # at least this many spans per utterance

    def __post_init__(self) -> None:
        if not 0.0 <= self.span_start_prob <= 1.0 or self.span < 1 or self.min_spans < 1:
            raise ValueError(f"masking: need 0 <= span_start_prob <= 1, span >= 1, min_spans >= 1; got {self}")


def span_mask(
    lens: torch.Tensor, max_len: int, cfg: MaskingConfig, generator: torch.Generator | None = None
) -> torch.Tensor:
    """[B] valid lengths -> [B, T] bool mask of masked frames (never beyond an utterance's length).

    Per utterance of length L: n = max(min_spans, int(span_start_prob * L + U[0,1))) span starts
    drawn without replacement from [0, L - span] (spans may overlap, as in wav2vec 2.0);
    a span is cut to L frames when L < span.
    """
    b = lens.numel()
    mask = torch.zeros(b, max_len, dtype=torch.bool)
    lens_cpu = lens.detach().cpu()
    for i in range(b):
        n_frames = int(lens_cpu[i])
        if n_frames <= 0:
            continue
        span = min(cfg.span, n_frames)
        n_starts = n_frames - span + 1
        u = float(torch.rand((), generator=generator))
        n = max(cfg.min_spans, int(cfg.span_start_prob * n_frames + u))  # = fairseq mask_prob 0.65 / M
        n = min(n, n_starts)
        starts = torch.randperm(n_starts, generator=generator)[:n]
        idx = (starts[:, None] + torch.arange(span)[None, :]).reshape(-1)
        mask[i, idx] = True
    return mask.to(lens.device)


class SpanMasker(nn.Module):
    """Draws span masks and replaces masked frames with a learned embedding."""

    def __init__(self, d_model: int, cfg: MaskingConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or MaskingConfig()
        self.embedding = nn.Parameter(torch.empty(d_model).uniform_())  # wav2vec 2.0 init

    def forward(self, x: torch.Tensor, lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, T, D], lens [B] -> (masked x, mask [B, T] bool)."""
        mask = span_mask(lens, x.size(1), self.cfg)
        return torch.where(mask.unsqueeze(-1), self.embedding.to(x.dtype), x), mask
