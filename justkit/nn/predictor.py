"""RNN-T prediction network: token embedding + LSTM stack, usable step by step."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

State = tuple[torch.Tensor, torch.Tensor]


@dataclass
class PredictorConfig:
    """JUST: 2-layer LSTM prediction network (widths not given; these suit small models)."""

    embed_dim: int = 256
    hidden_dim: int = 640
    num_layers: int = 2
    dropout: float = 0.1

    def __post_init__(self) -> None:
        if min(self.embed_dim, self.hidden_dim, self.num_layers) < 1 or not 0 <= self.dropout < 1:
            raise ValueError(f"PredictorConfig: bad values {self}")


class Predictor(nn.Module):
    """``forward(tokens [B, U], state=None) -> (out [B, U, hidden_dim], state)``; blank (0) starts."""

    blank_id = 0

    def __init__(self, vocab_size: int, cfg: PredictorConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or PredictorConfig()
        self.vocab_size = vocab_size
        self.embed = nn.Embedding(vocab_size, cfg.embed_dim)
        self.dropout = nn.Dropout(cfg.dropout)
        self.lstm = nn.LSTM(
            cfg.embed_dim, cfg.hidden_dim, num_layers=cfg.num_layers, batch_first=True,
            dropout=cfg.dropout if cfg.num_layers > 1 else 0.0,
        )
        self.output_dim = cfg.hidden_dim

    def forward(self, tokens: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        if tokens.dim() != 2 or tokens.dtype != torch.long:
            raise ValueError(f"tokens must be long [B, U], got {tokens.dtype} {tuple(tokens.shape)}")
        out, state = self.lstm(self.dropout(self.embed(tokens)), state)
        return self.dropout(out), state

    def initial_tokens(self, batch: int, device: torch.device | None = None) -> torch.Tensor:
        """[B, 1] start symbols (blank)."""
        return torch.full((batch, 1), self.blank_id, dtype=torch.long, device=device)
