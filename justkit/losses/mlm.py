"""w2v-BERT masked prediction loss: cross-entropy on the quantizer's token ids at masked frames.

Computed over every frame and weighted by the mask (no boolean indexing, so the training
step does not wait for the device to say how many frames are masked).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def mlm_loss(logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """Mean cross-entropy over masked frames and codebook groups.

    logits [B, T, G, V], ids [B, T, G] long (per-group targets), mask [B, T] bool.
    Returns (loss, {"num": masked frames, "accuracy": top-1 over masked frames and groups},
    both 0-dim tensors); the loss is 0 (with a graph) when no frame is masked.
    """
    if logits.shape[:3] != ids.shape or ids.shape[:2] != mask.shape:
        raise ValueError(f"shape mismatch: logits {tuple(logits.shape)}, ids {tuple(ids.shape)}, mask {tuple(mask.shape)}")
    b, t, g, v = logits.shape
    lf = logits.float()
    ce = F.cross_entropy(lf.reshape(-1, v), ids.reshape(-1).long(), reduction="none").view(b, t, g)
    w = mask.float()
    num = w.sum()
    denom = (num * g).clamp(min=1.0)
    loss = (ce * w[:, :, None]).sum() / denom
    with torch.no_grad():
        acc = ((lf.argmax(-1) == ids).float() * w[:, :, None]).sum() / denom
    return loss, {"num": num.detach(), "accuracy": acc}
