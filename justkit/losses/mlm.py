"""w2v-BERT masked prediction loss: cross-entropy on the quantizer's token ids at masked frames."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def mlm_loss(logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """Mean cross-entropy over masked frames and codebook groups.

    logits [B, T, G, V], ids [B, T, G] long (per-group targets), mask [B, T] bool.
    Returns (loss, {"num": masked frames, "accuracy": top-1 over frames and groups}).
    """
    if logits.shape[:3] != ids.shape or ids.shape[:2] != mask.shape:
        raise ValueError(f"shape mismatch: logits {tuple(logits.shape)}, ids {tuple(ids.shape)}, mask {tuple(mask.shape)}")
    n = int(mask.sum())
    if n == 0:
        return logits.sum() * 0.0, {"num": 0, "accuracy": 0.0}
    sel = logits[mask].float()  # [N, G, V]
    tgt = ids[mask]  # [N, G]
    loss = F.cross_entropy(sel.reshape(-1, sel.size(-1)), tgt.reshape(-1))
    with torch.no_grad():
        acc = (sel.argmax(-1) == tgt).float().mean()
    return loss, {"num": n, "accuracy": acc}
