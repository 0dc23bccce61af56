"""RNN-T beam search: Graves' search (labels stay on the frame) and icefall's batched modified beam search."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Tuple

import torch

from justkit.decode.hyp import Hypothesis, check_model, state_index


ALGORITHMS = ("graves", "modified")
# Graves search: at most A_MAX * beam_size partial hypotheses wait on a frame. An under-trained
# model that prefers labels to blank would otherwise grow them ~beam_size-fold per label.
A_MAX = 4

MAX_BEAM = 64


@dataclass
class BeamConfig:
    """Beam search settings."""

    beam_size: int = 4
    nbest: int = 1                   # final hypotheses kept in Hypothesis.nbest (best first)
    algorithm: str = "graves"        # graves: the RNN-T topology of the loss; modified: batched, 1 label/frame
    max_symbols_per_frame: int = 10  # graves: labels emitted at one frame at most (3 lost accuracy on an under-trained model)
    # Rank the final hypotheses by log-probability / (1 + number of labels), as icefall's
    # beam_search and modified_beam_search do (their ys holds the start blank too): every
    # label costs log-probability, so the raw sum favours short outputs (deletions).
    # Hypothesis.score stays the raw log-probability.
    length_norm: bool = True

    def __post_init__(self) -> None:
        from justkit.config import ConfigError

        if self.algorithm not in ALGORITHMS:
            raise ConfigError(f"beam.algorithm must be one of {ALGORITHMS}, got {self.algorithm!r}")
        # A beam holds beam_size hypotheses x vocabulary scores per frame: past a few dozen it
        # buys nothing and the search's time and memory grow without bound.
        if not 1 <= self.beam_size <= MAX_BEAM:
            raise ConfigError(f"beam.beam_size must be in [1, {MAX_BEAM}], got {self.beam_size}")
        if not 1 <= self.nbest <= self.beam_size:
            raise ConfigError(f"beam.nbest must be in [1, beam_size={self.beam_size}], got {self.nbest}")
        if self.max_symbols_per_frame < 1:
            raise ConfigError(f"beam.max_symbols_per_frame must be >= 1, got {self.max_symbols_per_frame}")


def beam_search(model, enc: torch.Tensor, enc_lens: torch.Tensor, cfg: BeamConfig) -> List[Hypothesis]:
    """Beam search over a batch of encoder outputs [B, T, D] with the algorithm of ``cfg``."""
    if cfg.algorithm == "graves":
        return graves_beam_search(model, enc, enc_lens, cfg)
    return modified_beam_search(model, enc, enc_lens, cfg)


@torch.no_grad()
def graves_beam_search(model, enc: torch.Tensor, enc_lens: torch.Tensor, cfg: BeamConfig) -> List[Hypothesis]:
    """Graves (2012) beam search, as icefall's ``beam_search``, one utterance at a time.

    Same topology as the RNN-T loss: a label keeps the search on the current frame (at
    most ``max_symbols_per_frame`` labels per frame), blank moves to the next. Per frame,
    the most probable unfinished hypothesis of set A is expanded: + blank goes to set B
    (merged with an equal label sequence by log-sum-exp), + each of the best labels back
    to A; the frame ends once B holds ``beam_size`` hypotheses more probable than the best
    of A. Prediction-network outputs are cached per label sequence.
    """
    check_model(model)
    K = cfg.beam_size
    if K < 1:
        raise ValueError(f"beam_size must be >= 1, got {K}")
    if cfg.max_symbols_per_frame < 1:
        raise ValueError(f"max_symbols_per_frame must be >= 1, got {cfg.max_symbols_per_frame}")
    blank = model.blank_id
    device = enc.device
    results = []
    for b in range(enc.shape[0]):
        cache: Dict[Tuple[int, ...], Tuple[torch.Tensor, object]] = {}

        def pred_of(seq: Tuple[int, ...]):
            if seq not in cache:
                if not seq:
                    tok = torch.full((1, 1), blank, dtype=torch.long, device=device)
                    cache[seq] = model.predictor(tok, None)
                else:
                    _, st = pred_of(seq[:-1])
                    tok = torch.full((1, 1), seq[-1], dtype=torch.long, device=device)
                    cache[seq] = model.predictor(tok, st)
            return cache[seq]

        hyps: Dict[Tuple[int, ...], float] = {(): 0.0}      # set B after each frame
        for t in range(int(enc_lens[b])):
            frame = enc[b : b + 1, t : t + 1]                 # [1, 1, D]
            A: Dict[Tuple[int, ...], Tuple[float, int]] = {s: (v, 0) for s, v in hyps.items()}
            Bset: Dict[Tuple[int, ...], float] = {}
            while A:
                seq, (score, nsym) = max(A.items(), key=lambda kv: kv[1][0])
                del A[seq]
                if not math.isfinite(score):  # nothing better left (or a non-finite model): stop
                    break
                pred, _ = pred_of(seq)
                logp = model.joint(frame, pred).log_softmax(-1).view(-1).double()
                s_blank = score + float(logp[blank])
                Bset[seq] = _logaddexp(Bset[seq], s_blank) if seq in Bset else s_blank
                if nsym < cfg.max_symbols_per_frame:
                    top_v, top_i = logp.topk(min(K + 1, logp.numel()))
                    for v, i in zip(top_v.tolist(), top_i.tolist()):
                        if i == blank:
                            continue
                        new = seq + (i,)
                        s_new = score + v
                        if new in A:   # reached by another prefix path on this frame: merge
                            old, n_old = A[new]
                            A[new] = (_logaddexp(old, s_new), max(n_old, nsym + 1))
                        else:
                            A[new] = (s_new, nsym + 1)
                best_a = max((v for v, _ in A.values()), default=-math.inf)
                if sum(1 for v in Bset.values() if v > best_a) >= K:
                    break
                if len(A) > A_MAX * K:  # a model that emits many labels per frame: keep the search bounded
                    A = dict(sorted(A.items(), key=lambda kv: -kv[1][0])[: A_MAX * K])
            if not Bset:  # every score non-finite: keep the hypotheses, scored -inf
                Bset = {seq: -math.inf for seq in hyps}
            hyps = dict(sorted(Bset.items(), key=lambda kv: -kv[1])[:K])
        ranked = sorted(hyps.items(), key=lambda kv: -final_score(kv[0], kv[1], cfg))
        nbest = [Hypothesis(list(s), float(v)) for s, v in ranked[: max(cfg.nbest, 1)]]
        results.append(Hypothesis(nbest[0].tokens, nbest[0].score, nbest))
    return results


def final_score(tokens, score: float, cfg: BeamConfig) -> float:
    """What the final hypotheses are ranked by: ``score / (1 + len(tokens))`` with ``length_norm``."""
    return score / (1 + len(tokens)) if cfg.length_norm else score


@torch.no_grad()
def modified_beam_search(model, enc: torch.Tensor, enc_lens: torch.Tensor, cfg: BeamConfig) -> List[Hypothesis]:
    """Modified beam search (Kang et al. / icefall ``modified_beam_search``) over a batch.

    At every frame each hypothesis is extended by blank or by exactly one label; of all
    (hypothesis, output) pairs of an utterance the ``beam_size`` best survive, and those
    that spell the same label sequence are merged (log-sum-exp of their scores). One
    label per frame bounds the work per frame, which is what makes batching simple.
    Hypotheses live in a fixed [B, K] layout (K = beam_size, empty slots score -inf);
    the prediction network runs once per frame for all slots that took a label.

    Returns per utterance the best hypothesis (``score`` = merged log-probability) with
    the ``nbest`` best in ``.nbest``.
    """
    check_model(model)
    K = cfg.beam_size
    if K < 1:
        raise ValueError(f"beam_size must be >= 1, got {K}")
    blank = model.blank_id
    B, T, _ = enc.shape
    device = enc.device
    enc_lens = enc_lens.to(device)
    if B == 0:
        return []
    # Slot (b, k) is row b * K + k of the flattened prediction-network batch.
    start = torch.full((B * K, 1), blank, dtype=torch.long, device=device)
    pred, state = model.predictor(start, None)           # [B*K, 1, Dp]
    seqs: List[List[Tuple[int, ...]]] = [[()] + [()] * (K - 1) for _ in range(B)]
    scores = torch.full((B, K), -math.inf, dtype=torch.float64)
    scores[:, 0] = 0.0
    for t in range(int(enc_lens.max().item())):
        active = (enc_lens > t).tolist()
        frame = enc[:, t : t + 1].repeat_interleave(K, dim=0)   # [B*K, 1, D]
        logp = model.joint(frame, pred).log_softmax(-1)[:, 0]    # [B*K, V]
        V = logp.shape[-1]
        cand = scores.view(B * K, 1).to(logp.device) + logp.double()
        cand = cand.view(B, K * V)
        top_scores, top_idx = cand.topk(min(K, K * V), dim=-1)
        top_scores, top_idx = top_scores.cpu(), top_idx.cpu()
        src_rows: List[int] = []          # source slot of every new slot
        new_tokens: List[int] = []        # label fed to the prediction network (or blank)
        new_seqs: List[List[Tuple[int, ...]]] = []
        new_scores = torch.full((B, K), -math.inf, dtype=torch.float64)
        for b in range(B):
            if not active[b]:             # utterance finished: keep its slots as they are
                src_rows.extend(b * K + k for k in range(K))
                new_tokens.extend([blank] * K)
                new_seqs.append(seqs[b])
                new_scores[b] = scores[b]
                continue
            merged: Dict[Tuple[int, ...], Tuple[float, int, int]] = {}
            for s, i in zip(top_scores[b].tolist(), top_idx[b].tolist()):
                if s == -math.inf:
                    continue
                k, v = divmod(i, V)
                seq = seqs[b][k] if v == blank else seqs[b][k] + (v,)
                if seq in merged:
                    old, src, tok = merged[seq]
                    merged[seq] = (_logaddexp(old, s), src, tok)
                else:
                    merged[seq] = (s, b * K + k, v)
            items = sorted(merged.items(), key=lambda kv: -kv[1][0])
            row_seqs = []
            for j in range(K):
                if j < len(items):
                    seq, (s, src, tok) = items[j]
                    new_scores[b, j] = s
                    src_rows.append(src)
                    new_tokens.append(tok)
                    row_seqs.append(seq)
                else:                     # empty slot: copy slot 0, never selected (-inf)
                    src_rows.append(b * K)
                    new_tokens.append(blank)
                    row_seqs.append(())
            new_seqs.append(row_seqs)
        idx = torch.tensor(src_rows, device=device)
        pred = pred.index_select(0, idx)
        state = state_index(state, idx)
        toks = torch.tensor(new_tokens, device=device)
        emit = toks != blank
        if bool(emit.any()):
            rows = emit.nonzero().flatten()
            out, st = model.predictor(toks[rows].unsqueeze(1), state_index(state, rows))
            pred = pred.index_copy(0, rows, out)
            state = _state_index_copy(state, rows, st)
        seqs, scores = new_seqs, new_scores
    results = []
    for b in range(B):
        alive = [k for k in range(K) if scores[b, k] > -math.inf]
        order = sorted(alive, key=lambda k: -final_score(seqs[b][k], float(scores[b, k]), cfg))
        nbest = [Hypothesis(list(seqs[b][k]), float(scores[b, k])) for k in order[: max(cfg.nbest, 1)]]
        best = nbest[0]
        results.append(Hypothesis(best.tokens, best.score, nbest))
    return results


def _logaddexp(a: float, b: float) -> float:
    m = max(a, b)
    return m + math.log(math.exp(a - m) + math.exp(b - m))


def _state_index_copy(state, rows: torch.Tensor, new):
    if isinstance(state, torch.Tensor):
        return state.index_copy(1, rows, new)
    return type(state)(_state_index_copy(s, rows, n) for s, n in zip(state, new))
