"""wav2vec 2.0 contrastive loss: true quantized vector vs K distractors from masked frames.

Computed densely over [B, T] with the anchors as a weight, so the training step needs no
host synchronisation (no ``nonzero`` or boolean indexing, whose output size the host must
know): the cosine similarities of every context vector with every target of its utterance
are one batched matrix product [B, T, T], and the K distractors are gathered from it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def sample_distractors(
    mask: torch.Tensor, num: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """For every masked frame, ``num`` other masked frames of the same utterance, uniformly.

    mask [B, T] bool -> (anchors [B, T] bool: the masked frames that have at least one other
    masked frame in their utterance; distractors [B, T, num] long: time indices into the
    same utterance, drawn with replacement, never the anchor itself; meaningful only where
    ``anchors``). Shapes depend on the input's only, so nothing waits for the device.
    """
    b, t = mask.shape
    dev = mask.device
    m = mask.long()
    counts = m.sum(1, keepdim=True)                      # [B, 1] masked frames per utterance
    rank = m.cumsum(1) - 1                               # rank of a masked frame among its utterance's
    # the masked positions of each utterance first, in time order (a stable sort of ~mask)
    order = torch.sort((~mask).to(torch.uint8), dim=1, stable=True).indices  # [B, T]
    anchors = mask & (counts >= 2)
    gen_dev = generator.device if generator is not None else dev
    u = torch.rand(b, t, num, generator=generator, device=gen_dev).to(dev)
    n_other = (counts - 1).clamp(min=1)[:, :, None]      # [B, 1, 1]
    r = (u * n_other).long().clamp(max=n_other - 1)      # uniform in [0, n - 2]
    r = r + (r >= rank[:, :, None]).long()               # skip the anchor itself
    r = r.clamp(0, t - 1)
    neg = torch.gather(order, 1, r.reshape(b, -1)).view(b, t, num) if t > 0 else r
    return anchors, neg


def contrastive_loss(
    context: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor,
    num_distractors: int,
    temperature: float,
    generator: torch.Generator | None = None,
    codes: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict]:
    """Mean over masked frames of -log softmax(cos(c_t, q)/kappa over [q_t, K distractors])[0].

    context [B, T, D] (context vectors projected to the contrastive space), targets [B, T, D]
    (quantized vectors of the unmasked input), mask [B, T] bool. A distractor equal to the
    positive (same code) is excluded from the softmax, as in fairseq; ``codes`` [B, T, G]
    (the quantizer's ids) tells equality without comparing vectors. Frames of an utterance
    with fewer than two masked frames have no distractor and are not scored. Returns (loss,
    info): info["num"] (frames scored) and info["accuracy"] are 0-dim tensors (read them at
    logging time), info["anchors"] [B, T] and info["distractors"] [B, T, K] (time indices);
    the loss is 0 (with a graph) when nothing is scored.
    """
    if context.shape[:2] != mask.shape or targets.shape[:2] != mask.shape:
        raise ValueError(f"shape mismatch: context {tuple(context.shape)}, targets {tuple(targets.shape)}, mask {tuple(mask.shape)}")
    anchors, neg = sample_distractors(mask, num_distractors, generator)
    c = F.normalize(context.float(), dim=-1, eps=1e-8)
    q = F.normalize(targets.float(), dim=-1, eps=1e-8)
    sim = torch.bmm(c, q.transpose(1, 2)) / temperature          # [B, T, T]: cos(c_t, q_j) / kappa
    pos = torch.diagonal(sim, dim1=1, dim2=2)[:, :, None]        # [B, T, 1]
    dis = torch.gather(sim, 2, neg)                              # [B, T, K]
    with torch.no_grad():
        if codes is not None:
            cb = codes.reshape(codes.size(0), codes.size(1), -1)
            g = torch.gather(cb[:, None, :, :].expand(-1, cb.size(1), -1, -1), 2,
                             neg[..., None].expand(-1, -1, -1, cb.size(2)))   # [B, T, K, G]
            same = (g == cb[:, :, None, :]).all(-1)
        else:
            d = targets.size(-1)
            cand = torch.gather(targets[:, None].expand(-1, targets.size(1), -1, -1), 2,
                                neg[..., None].expand(-1, -1, -1, d))          # [B, T, K, D]
            same = (cand == targets[:, :, None, :]).all(-1)
    logits = torch.cat([pos, dis.masked_fill(same, float("-inf"))], dim=2)  # [B, T, 1+K]
    nll = -logits.log_softmax(-1)[..., 0]                        # [B, T]
    w = anchors.float()
    num = w.sum()
    loss = (nll * w).sum() / num.clamp(min=1.0)
    with torch.no_grad():
        acc = ((logits.argmax(-1) == 0).float() * w).sum() / num.clamp(min=1.0)
    return loss, {"num": num.detach(), "accuracy": acc, "distractors": neg, "anchors": anchors}
