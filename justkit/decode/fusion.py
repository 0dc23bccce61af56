"""External language models in the RNN-T searches: shallow fusion, internal-LM subtraction, n-best rescoring.

A label ``v`` after history ``y`` scores ``log P_asr(v) + lm_weight * log P_lm(v | y)
- ilm_weight * log P_ilm(v | y)``; blank scores ``log P_asr(blank)`` alone (Gulati et al. /
icefall ``modified_beam_search_lm_shallow_fusion``). The internal LM (Meng et al. 2021,
"Internal language model estimation") is the joint network with the encoder's contribution
removed: ``log_softmax`` over the labels (blank left out) of ``joint.out(tanh(joint.pred_proj(pred)))``.
A hypothesis' fused score is therefore ``asr + lm_weight * lm - ilm_weight * ilm`` with
``lm`` and ``ilm`` the sums over its labels; the searches carry the three apart
(``Hypothesis.score`` stays the transducer's log-probability).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, List, Sequence

import torch

from justkit.decode.hyp import Hypothesis
from justkit.models.lm import FusionError, check_weight

__all__ = ["Fusion", "FusionError", "check_weight", "ilm_logprobs", "ilm_sequence_logprob", "label_logprobs",
           "rescore_nbest"]


@dataclass
class Fusion:
    """What the searches add to the transducer's scores: an external LM (``justkit.models.lm``)
    weighted by ``lm_weight`` and the internal LM weighted by ``-ilm_weight``."""

    lm: Any = None
    lm_weight: float = 0.0
    ilm_weight: float = 0.0

    def __post_init__(self) -> None:
        self.lm_weight = check_weight("lm_weight", self.lm_weight)
        self.ilm_weight = check_weight("ilm_weight", self.ilm_weight)
        if self.lm is None and self.lm_weight > 0:
            raise FusionError(f"lm_weight {self.lm_weight} > 0 but no LM given (--lm_dir)")

    @property
    def uses_lm(self) -> bool:
        return self.lm is not None

    @property
    def uses_ilm(self) -> bool:
        return self.ilm_weight > 0

    @property
    def active(self) -> bool:
        return self.uses_lm or self.uses_ilm

    def total(self, asr: float, lm: float, ilm: float) -> float:
        """The fused score of a hypothesis from its three sums."""
        return asr + self.lm_weight * lm - self.ilm_weight * ilm


def ilm_logprobs(model, pred: torch.Tensor) -> torch.Tensor:
    """Internal-LM log-probabilities of the labels after the prediction-network outputs ``pred``
    [N, 1, Dp] -> [N, V] float32; the blank column is 0 (blank is no label and never scored)."""
    joint = model.joint
    if not (hasattr(joint, "pred_proj") and hasattr(joint, "out")):
        raise FusionError(f"{type(joint).__name__}: no pred_proj/out layers; internal-LM subtraction "
                          "needs justkit.nn.joint.Joint")
    logits = joint.out(torch.tanh(joint.pred_proj(pred)))[:, 0].float()
    blank = model.blank_id
    logits[:, blank] = -math.inf
    lp = logits.log_softmax(-1)
    lp[:, blank] = 0.0
    return lp


def label_logprobs(logp: torch.Tensor, blank: int) -> torch.Tensor:
    """An LM's next-token log-probabilities [N, V] with the blank (= sentence-end) column set to 0:
    what a label adds, blank adding nothing."""
    out = logp.float().clone()
    out[:, blank] = 0.0
    return out


@torch.no_grad()
def ilm_sequence_logprob(model, seqs: Sequence[Sequence[int]]) -> torch.Tensor:
    """Internal-LM log P(y_1 .. y_U) of each sequence, the prediction network run over it in one
    padded pass: [N] float64."""
    if not seqs:
        return torch.zeros(0, dtype=torch.float64)
    device = next(model.parameters()).device
    blank = model.blank_id
    lens = [len(s) for s in seqs]
    U = max(lens)
    inp = torch.full((len(seqs), U + 1), blank, dtype=torch.long)
    for i, s in enumerate(seqs):
        if s:
            inp[i, 1 : len(s) + 1] = torch.as_tensor(list(s))
    pred, _ = model.predictor(inp.to(device), None)            # [N, U+1, Dp]
    N = len(seqs)
    lp = ilm_logprobs(model, pred.reshape(N * (U + 1), 1, -1)).view(N, U + 1, -1)
    out = torch.zeros(N, dtype=torch.float64)
    for i, s in enumerate(seqs):
        if s:
            out[i] = lp[i, torch.arange(len(s)), torch.as_tensor(list(s))].double().sum().cpu()
    return out


@torch.no_grad()
def rescore_nbest(model, hyps: List[Hypothesis], fusion: Fusion, length_norm: bool = True) -> List[Hypothesis]:
    """N-best rescoring: each utterance's ``nbest`` (from a search without fusion) gets its LM and
    internal-LM scores from one padded pass over all of them, and is re-ranked by the fused
    score (divided by 1 + labels with ``length_norm``). Returns new Hypotheses, best first."""
    flat = [h for utt in hyps for h in (utt.nbest or [utt])]
    seqs = [h.tokens for h in flat]
    lm = fusion.lm.sequence_logprob(seqs).tolist() if fusion.uses_lm else [0.0] * len(seqs)
    ilm = ilm_sequence_logprob(model, seqs).tolist() if fusion.uses_ilm else [0.0] * len(seqs)
    out, i = [], 0
    for utt in hyps:
        n = len(utt.nbest or [utt])
        scored = []
        for h, a, b in zip(flat[i : i + n], lm[i : i + n], ilm[i : i + n]):
            scored.append(Hypothesis(list(h.tokens), h.score, lm_score=a, ilm_score=b,
                                     fused=fusion.total(h.score, a, b)))
        i += n
        scored.sort(key=lambda h: -(h.fused / (1 + len(h.tokens)) if length_norm else h.fused))
        best = scored[0]
        out.append(Hypothesis(best.tokens, best.score, scored, lm_score=best.lm_score,
                              ilm_score=best.ilm_score, fused=best.fused))
    return out
