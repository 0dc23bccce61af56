"""RNN-T search results and the prediction-network state helpers shared by the searches."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional

import torch

# The prediction network's state is what ``model.predictor`` returns: a tensor or a
# (nested) tuple of tensors whose dim 1 is the batch, e.g. torch.nn.LSTM's (h, c), each
# [num_layers, B, H] (docs/interfaces.md). The searches only index and merge along dim 1.
State = Any


@dataclass
class Hypothesis:
    """One search result: token ids (no blanks) and the transducer's total log-probability.

    With an external LM (``justkit.decode.fusion``): ``lm_score`` and ``ilm_score`` are the LM's and
    the internal LM's log-probabilities of ``tokens`` and ``fused`` the score the search ranked by
    (``score + lm_weight * lm_score - ilm_weight * ilm_score``); without one ``fused`` is None.
    """

    tokens: List[int]
    score: float
    nbest: List["Hypothesis"] = field(default_factory=list)  # beam search: all final beam entries
    frames: List[int] = field(default_factory=list)  # greedy: the encoder frame that emitted each token
    probs: List[float] = field(default_factory=list)  # where the search records it: each token's posterior
    lm_score: float = 0.0
    ilm_score: float = 0.0
    fused: Optional[float] = None

    @property
    def total(self) -> float:
        """The score the search ranked by: ``fused`` with an LM, else ``score``."""
        return self.score if self.fused is None else self.fused


def state_index(state: State, index: torch.Tensor) -> State:
    """Rows ``index`` of the batch (dim 1) of every tensor in ``state``."""
    if state is None:
        return None
    if isinstance(state, torch.Tensor):
        return state.index_select(1, index)
    return type(state)(state_index(s, index) for s in state)


def state_where(mask: torch.Tensor, new: State, old: State) -> State:
    """``new`` where ``mask`` [B] is true, else ``old`` (batch on dim 1)."""
    if isinstance(new, torch.Tensor):
        shape = [1] * new.dim()
        shape[1] = -1
        return torch.where(mask.view(shape), new, old)
    return type(new)(state_where(mask, n, o) for n, o in zip(new, old))


def check_model(model: Any) -> None:
    """Fail early, naming what is missing, if ``model`` lacks the decoding interface."""
    missing = [a for a in ("encode", "predictor", "joint", "blank_id") if not hasattr(model, a)]
    if missing:
        raise TypeError(f"{type(model).__name__} lacks {missing}; see docs/interfaces.md (Model)")
    if model.predictor is None or model.joint is None:
        raise TypeError(
            f"{type(model).__name__} has no RNN-T decoder (a mode 'pretrain' model?): nothing to "
            "decode; fine-tune it first (--init) with a supervised or just config"
        )
