"""What a model's training forward returns: the loss, its terms, and what the trainer logs."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Iterator

import torch


@dataclass
class LossOutput:
    """One batch's training loss (docs/interfaces.md, "Trainer contract").

    ``loss``: what backward runs on; ``terms``: detached 0-dim values to log (each loss term
    unweighted, and its metrics); ``weighted``: the terms as they enter ``loss`` (weights
    applied, graphs kept; they sum to ``loss``), which gradient monitors differentiate one by
    one; ``num_frames``: the count throughput is measured in (encoder frames, tokens, ...).
    ``out["rnnt"]`` reads a term (or ``loss``, ``num_frames``).
    """

    loss: torch.Tensor
    terms: Dict[str, torch.Tensor] = field(default_factory=dict)
    weighted: Dict[str, torch.Tensor] = field(default_factory=dict)
    num_frames: torch.Tensor = field(default_factory=lambda: torch.zeros(()))

    def logged(self) -> Dict[str, torch.Tensor]:
        """Every 0-dim value a log line shows, detached: ``loss``, ``num_frames`` and the terms."""
        return {**self.terms, "loss": self.loss.detach(), "num_frames": self.num_frames.detach()}

    def __getitem__(self, key: str) -> torch.Tensor:
        if key == "loss":
            return self.loss
        if key == "num_frames":
            return self.num_frames
        return self.terms[key]

    def __contains__(self, key: object) -> bool:
        return key in ("loss", "num_frames") or key in self.terms

    def __iter__(self) -> Iterator[str]:
        yield from ("loss", "num_frames", *self.terms)
