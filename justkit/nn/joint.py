"""RNN-T joint network: project encoder and predictor outputs, add, tanh, output layer."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class JointConfig:
    joint_dim: int = 640

    def __post_init__(self) -> None:
        if self.joint_dim < 1:
            raise ValueError(f"joint_dim must be >= 1, got {self.joint_dim}")


class Joint(nn.Module):
    """``joint(enc [..., D], pred [..., Dp]) -> logits [..., V]`` with broadcasting.

    Projections run before broadcasting, so ``joint(enc[:, :, None], pred[:, None])``
    costs two small matmuls plus the [B, T, U+1, J] x [J, V] output layer.
    """

    def __init__(self, enc_dim: int, pred_dim: int, vocab_size: int, cfg: JointConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or JointConfig()
        self.enc_proj = nn.Linear(enc_dim, cfg.joint_dim)
        self.pred_proj = nn.Linear(pred_dim, cfg.joint_dim)
        self.out = nn.Linear(cfg.joint_dim, vocab_size)

    def forward(self, enc: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
        return self.combine(self.enc_proj(enc), self.pred_proj(pred))

    def combine(self, enc_proj: torch.Tensor, pred_proj: torch.Tensor) -> torch.Tensor:
        """The logits from already projected inputs (broadcast): what the pruned loss computes on
        its windows of label positions, and what the ONNX joiner exports."""
        return self.out(torch.tanh(enc_proj + pred_proj))
