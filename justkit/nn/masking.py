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
    an utterance of L <= span frames gets no span at all (it would be masked whole). Drawn on the lengths' device with tensor
    operations only (random keys ranked per row; the spans are a running sum of the starts),
    so the training step does not wait for the device.
    """
    dev = lens.device
    b, t = lens.numel(), max_len
    lens = lens.reshape(-1).long()
    gen_dev = generator.device if generator is not None else dev
    keys = torch.rand(b, t, generator=generator, device=gen_dev).to(dev)
    u = torch.rand(b, generator=generator, device=gen_dev).to(dev)
    pos = torch.arange(t, device=dev)
    n_starts = (lens - cfg.span + 1).clamp(min=1)            # start positions [0, L - span]
    n = torch.floor(cfg.span_start_prob * lens.float() + u).long().clamp(min=cfg.min_spans)
    # an utterance of at most `span` frames would be masked whole: it gets no span (and so no
    # contrastive or masked-prediction loss) instead
    n = torch.minimum(n, n_starts) * (lens > cfg.span).long()
    # n distinct starts: the n smallest random keys among the allowed positions
    keys = keys.masked_fill(pos[None, :] >= n_starts[:, None], 2.0)
    rank = torch.argsort(torch.argsort(keys, dim=1), dim=1)
    starts = (rank < n[:, None]).to(torch.int32)
    # frame i is masked when a span starts in (i - span, i]
    c = torch.nn.functional.pad(starts.cumsum(1), (cfg.span, 0))
    covered = c[:, cfg.span:] - c[:, : t]
    return (covered > 0) & (pos[None, :] < lens[:, None])


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
