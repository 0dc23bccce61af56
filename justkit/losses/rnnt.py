"""RNN-T loss with selectable backend: torchaudio (default) or justkit's numba kernels."""
from __future__ import annotations

import torch
import torchaudio.functional as F

from justkit.losses.rnnt_numba import rnnt_loss_numba

BACKENDS = ("torchaudio", "numba")


def rnnt_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    logit_lens: torch.Tensor,
    target_lens: torch.Tensor,
    blank: int = 0,
    reduction: str = "mean",
    backend: str = "torchaudio",
) -> torch.Tensor:
    """RNN-T negative log-likelihood.

    logits: [B, T, U+1, V] unnormalised joint outputs; targets: [B, U] label ids;
    logit_lens / target_lens: [B] valid lengths. ``reduction`` is mean/sum/none over B
    ("mean" divides the summed costs by B, as torchaudio does; it is not per token).
    log_softmax is applied inside (torchaudio's ``fused_log_softmax=True``). ``backend``:
    "torchaudio" (default) or "numba" (justkit.losses.rnnt_numba: numba CPU kernels,
    numba.cuda kernels for CUDA tensors).
    """
    if backend == "torchaudio":
        # torchaudio wants max(logit_lens) == T and max(target_lens) == U exactly ("input length
        # mismatch" otherwise); padding beyond the batch maxima carries nothing, so trim it.
        if logits.dim() == 4 and logit_lens.numel():
            t, u = int(logit_lens.max()), int(target_lens.max())
            if logits.size(1) > t or logits.size(2) > u + 1:
                logits = logits[:, :t, : u + 1].contiguous()
            if targets.size(1) > u:
                targets = targets[:, :u].contiguous()
        return F.rnnt_loss(
            logits,
            targets.int(),
            logit_lens.int(),
            target_lens.int(),
            blank=blank,
            reduction=reduction,
        )
    if backend == "numba":
        return rnnt_loss_numba(logits, targets, logit_lens, target_lens, blank=blank, reduction=reduction)
    raise ValueError(f"unknown RNN-T loss backend {backend!r}; choose one of {BACKENDS}")
