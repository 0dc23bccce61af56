"""Batched greedy search for RNN-T (up to max_symbols_per_frame labels per encoder frame)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List

import torch

from justkit.decode.hyp import Hypothesis, check_model, state_where


@dataclass
class GreedyConfig:
    """Greedy search settings."""

    max_symbols_per_frame: int = 3   # labels emitted at one frame before moving on


@torch.no_grad()
def greedy_search(model, enc: torch.Tensor, enc_lens: torch.Tensor, cfg: GreedyConfig,
                  sync_free: bool | None = None) -> List[Hypothesis]:
    """Greedy RNN-T search over a batch of encoder outputs.

    enc: [B, T, D] from ``model.encode``; enc_lens: [B]. At each frame the most probable
    output is taken; a label feeds the prediction network and the same frame is tried
    again, up to ``max_symbols_per_frame`` labels; blank (or the limit) moves to the next
    frame. The prediction network starts from the blank id (docs/interfaces.md).
    ``score`` is the log-probability of the path taken (labels and blanks).

    ``sync_free`` (default: on any device but the CPU) keeps the search on the device: the
    emitted labels go into a [B, T, max_symbols] tensor read once at the end, and every
    frame runs all ``max_symbols_per_frame`` tries instead of stopping when no utterance
    emits (finding that out would make the host wait for the device at every frame). The
    result is the same either way.
    """
    check_model(model)
    if cfg.max_symbols_per_frame < 1:
        raise ValueError(f"max_symbols_per_frame must be >= 1, got {cfg.max_symbols_per_frame}")
    blank = model.blank_id
    B, T, _ = enc.shape
    device = enc.device
    if sync_free is None:
        sync_free = device.type != "cpu"
    enc_lens = enc_lens.to(device)
    start = torch.full((B, 1), blank, dtype=torch.long, device=device)
    pred, state = model.predictor(start, None)           # [B, 1, Dp]
    S = cfg.max_symbols_per_frame
    n_frames = T if sync_free else (int(enc_lens.max().item()) if B else 0)
    emitted = torch.full((B, n_frames, S), -1, dtype=torch.long, device=device)
    scores = torch.zeros(B, dtype=torch.float64, device=device)
    for t in range(n_frames if B else 0):
        active = enc_lens > t                                # [B]
        frame = enc[:, t : t + 1]                            # [B, 1, D]
        for s in range(S):
            logp = model.joint(frame, pred).log_softmax(-1)[:, 0]   # [B, V]
            best_lp, best = logp.max(-1)
            scores += torch.where(active, best_lp.double(), torch.zeros_like(scores))
            emit = active & (best != blank)
            if not sync_free and not bool(emit.any()):
                break
            new_pred, new_state = model.predictor(best.unsqueeze(1), state)
            pred = torch.where(emit.view(B, 1, 1), new_pred, pred)
            state = state_where(emit, new_state, state)
            emitted[:, t, s] = torch.where(emit, best, torch.full_like(best, -1))
            active = emit
    out = emitted.reshape(B, -1).cpu()
    hyps = []
    for b in range(B):
        idx = (out[b] >= 0).nonzero().flatten()
        hyps.append(Hypothesis(out[b, idx].tolist(), float(scores[b]), frames=(idx // S).tolist()))
    return hyps
