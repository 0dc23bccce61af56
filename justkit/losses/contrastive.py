"""wav2vec 2.0 contrastive loss: true quantized vector vs K distractors from masked frames."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def sample_distractors(
    mask: torch.Tensor, num: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """For every masked frame, ``num`` other masked frames of the same utterance, uniformly.

    mask [B, T] bool -> (anchors [N] flat indices b*T+t of the masked frames that have at
    least one other masked frame in their utterance, distractors [N, num] flat indices;
    drawn with replacement, never the anchor itself).
    """
    b, t = mask.shape
    flat = mask.reshape(-1).nonzero().squeeze(1)  # masked positions, utterance-major order
    counts = mask.sum(1)  # [B]
    utt = flat // t
    n = counts[utt]  # masked frames in the anchor's utterance
    first = torch.cumsum(counts, 0) - counts  # offset of each utterance in ``flat``
    rank = torch.arange(flat.numel(), device=mask.device) - first[utt]
    keep = n >= 2
    flat, n, rank, utt = flat[keep], n[keep], rank[keep], utt[keep]
    if flat.numel() == 0:
        return flat, flat.new_zeros(0, num)
    u = torch.rand(flat.numel(), num, generator=generator, device=mask.device)
    r = (u * (n - 1)[:, None]).long().clamp(max=(n - 2)[:, None])  # uniform in [0, n-2]
    r = r + (r >= rank[:, None]).long()  # skip the anchor itself
    all_flat = mask.reshape(-1).nonzero().squeeze(1)
    return flat, all_flat[first[utt][:, None] + r]


def contrastive_loss(
    context: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor,
    num_distractors: int,
    temperature: float,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, dict]:
    """Mean over masked frames of -log softmax(cos(c_t, q)/kappa over [q_t, K distractors])[0].

    context [B, T, D] (context vectors projected to the code dimension), targets [B, T, D]
    (quantized vectors of the unmasked input), mask [B, T] bool. A distractor equal to the
    positive (same code) is excluded from the softmax, as in fairseq. Returns (loss,
    info) with info["num"] (frames scored) and info["accuracy"] (a 0-dim tensor); the loss is 0 (with a
    graph) when no utterance has two masked frames.
    """
    if context.shape[:2] != mask.shape or targets.shape[:2] != mask.shape:
        raise ValueError(f"shape mismatch: context {tuple(context.shape)}, targets {tuple(targets.shape)}, mask {tuple(mask.shape)}")
    anchors, neg = sample_distractors(mask, num_distractors, generator)
    d = context.size(-1)
    if anchors.numel() == 0:
        zero = (context.sum() + targets.sum()) * 0.0
        return zero, {"num": 0, "accuracy": 0.0}
    c = context.reshape(-1, d)[anchors].float()  # [N, D]
    q = targets.reshape(-1, targets.size(-1)).float()
    cand = torch.cat([q[anchors].unsqueeze(1), q[neg]], dim=1)  # [N, 1+K, D]
    logits = F.cosine_similarity(c.unsqueeze(1), cand, dim=-1) / temperature
    same = (cand[:, 1:] == cand[:, :1]).all(-1)
    logits = torch.cat([logits[:, :1], logits[:, 1:].masked_fill(same, float("-inf"))], dim=1)
    target = torch.zeros(anchors.numel(), dtype=torch.long, device=logits.device)
    loss = F.cross_entropy(logits, target)
    with torch.no_grad():
        acc = (logits.argmax(-1) == 0).float().mean()
    return loss, {"num": int(anchors.numel()), "accuracy": acc, "distractors": neg, "anchors": anchors}
