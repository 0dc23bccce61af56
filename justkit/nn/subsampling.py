"""Feature encoder: two stride-2 2-D convolutions (4x in time) on fbank, then a linear projection."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from justkit.frontend.lengths import conv_out_len, min_input_frames, subsampled_len  # noqa: F401 (conv_out_len: importable here too)


@dataclass
class SubsamplingConfig:
    """Conv2d subsampling (ESPnet ``Conv2dSubsampling`` layout; w2v-BERT/JUST feature encoder)."""

    channels: int = 64  # conv channels; w2v-BERT does not state it, ESPnet uses d_model
    kernel: int = 3  # kernel in time and frequency (w2v-BERT: two 3x3 conv layers, stride 2)
    dropout: float = 0.1  # dropout on the projected output (wav2vec 2.0 dropout_input 0.1)

    def __post_init__(self) -> None:
        if self.channels < 1 or self.kernel < 1 or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"SubsamplingConfig: bad values {self}")


class Conv2dSubsampling(nn.Module):
    """[B, T, F] fbank -> [B, T', d_model], T' = ((T - k) // 2 - k + 1) // 2 + 1 for kernel k = 3.

    No padding in time, so an output frame inside the valid length never reads a padded
    input frame (outputs at valid frames are independent of how much padding follows).
    """

    def __init__(self, feat_dim: int, d_model: int, cfg: SubsamplingConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or SubsamplingConfig()
        k = cfg.kernel
        f = conv_out_len(conv_out_len(feat_dim, k), k)
        if f < 1:
            raise ValueError(f"feat_dim {feat_dim} too small for two {k}x{k} stride-2 convs")
        self.conv = nn.Sequential(
            nn.Conv2d(1, cfg.channels, k, stride=2),
            nn.ReLU(),
            nn.Conv2d(cfg.channels, cfg.channels, k, stride=2),
            nn.ReLU(),
        )
        self.proj = nn.Linear(cfg.channels * f, d_model)
        self.dropout = nn.Dropout(cfg.dropout)
        self.feat_dim = feat_dim
        self.min_frames = self.min_input_frames(k)
        self.stride = 4  # input frames per output frame (two stride-2 convolutions)

    @staticmethod
    def min_input_frames(kernel: int = 3) -> int:
        """Shortest input (frames) that yields one output frame."""
        return min_input_frames(kernel)

    def output_lengths(self, lens: torch.Tensor) -> torch.Tensor:
        """Exact output lengths for input lengths ``lens``."""
        return subsampled_len(lens, self.cfg.kernel)

    def check_lengths(self, lens: torch.Tensor, padded: int) -> None:
        """Raise ValueError unless every length is in [min_frames, padded] (``lens`` on the host)."""
        lo, hi = int(lens.min()), int(lens.max())
        if lo < self.min_frames:
            raise ValueError(
                f"utterance with {lo} frames is shorter than the {self.min_frames} "
                "frames the conv subsampling needs; drop such utterances when packing"
            )
        if hi > padded:
            raise ValueError(f"feat_lens max {hi} > padded length {padded}")

    def forward(self, feats: torch.Tensor, lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, out_lens, _, _ = self.forward_all(feats, lens)
        return x, out_lens

    def forward_all(self, feats: torch.Tensor, lens: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(output [B, T', d_model] after dropout, lengths [B], the convolutions' features before the
        projection [B, T', C*F'] (padded frames not zeroed), the projection before dropout [B, T',
        d_model], padded frames 0).
        The quantizer reads one of the last two (QuantizerConfig.input)."""
        if feats.dim() != 3 or feats.size(-1) != self.feat_dim:
            raise ValueError(f"expected feats [B, T, {self.feat_dim}], got {tuple(feats.shape)}")
        if lens.device.type == "cpu" and not torch.jit.is_tracing():
            # lengths on an accelerator are checked by the caller while still on the host
            # (Trainer: before the copy), so that the forward never waits for the device
            self.check_lengths(lens, feats.size(1))
        x = self.conv(feats.unsqueeze(1))  # [B, C, T', F']
        b, c, t, f = x.shape
        conv = x.transpose(1, 2).reshape(b, t, c * f)
        x = self.proj(conv)
        out_lens = self.output_lengths(lens)
        pad = ~(torch.arange(t, device=x.device)[None, :] < out_lens[:, None]).unsqueeze(-1)
        x = x.masked_fill(pad, 0.0)
        return self.dropout(x), out_lens, conv, x
