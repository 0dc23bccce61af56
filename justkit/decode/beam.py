"""RNN-T beam search: Graves' search (labels stay on the frame) and icefall's batched modified beam search."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch

from justkit.decode.fusion import Fusion, ilm_logprobs, label_logprobs
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


def beam_search(model, enc: torch.Tensor, enc_lens: torch.Tensor, cfg: BeamConfig,
                fusion: Optional[Fusion] = None) -> List[Hypothesis]:
    """Beam search over a batch of encoder outputs [B, T, D] with the algorithm of ``cfg``;
    ``fusion``: an external LM fused into every label's score (``justkit.decode.fusion``)."""
    if cfg.algorithm == "graves":
        return graves_beam_search(model, enc, enc_lens, cfg, fusion)
    return modified_beam_search(model, enc, enc_lens, cfg, fusion)


@torch.no_grad()
def graves_beam_search(model, enc: torch.Tensor, enc_lens: torch.Tensor, cfg: BeamConfig,
                       fusion: Optional[Fusion] = None) -> List[Hypothesis]:
    """Graves (2012) beam search, as icefall's ``beam_search``, one utterance at a time.

    Same topology as the RNN-T loss: a label keeps the search on the current frame (at
    most ``max_symbols_per_frame`` labels per frame), blank moves to the next. Per frame,
    the most probable unfinished hypothesis of set A is expanded: + blank goes to set B
    (merged with an equal label sequence by log-sum-exp), + each of the best labels back
    to A; the frame ends once B holds ``beam_size`` hypotheses more probable than the best
    of A. Prediction-network outputs are cached per label sequence, and so are the LM's
    and the internal LM's label scores with ``fusion`` (which then rank the labels too).
    """
    check_model(model)
    K = cfg.beam_size
    if K < 1:
        raise ValueError(f"beam_size must be >= 1, got {K}")
    if cfg.max_symbols_per_frame < 1:
        raise ValueError(f"max_symbols_per_frame must be >= 1, got {cfg.max_symbols_per_frame}")
    fuse = fusion is not None and fusion.active
    blank = model.blank_id
    device = enc.device
    results = []
    for b in range(enc.shape[0]):
        cache: Dict[Tuple[int, ...], Tuple[torch.Tensor, object]] = {}
        # with fusion, per label sequence: what each label adds [V] (device), the LM state, the LM
        # and internal-LM sums of the sequence, and the LM's and ILM's label scores (host)
        fcache: Dict[Tuple[int, ...], tuple] = {}

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

        def fused_of(seq: Tuple[int, ...]):
            if seq not in fcache:
                lm_st, lm_sum, ilm_sum, st = None, 0.0, 0.0, None
                if seq:
                    _, st, p_lm, p_ilm, p_lm_lab, p_ilm_lab = fused_of(seq[:-1])
                    lm_sum = p_lm + (float(p_lm_lab[seq[-1]]) if p_lm_lab is not None else 0.0)
                    ilm_sum = p_ilm + (float(p_ilm_lab[seq[-1]]) if p_ilm_lab is not None else 0.0)
                add = torch.zeros(1, dtype=torch.float64, device=device)
                lm_lab = ilm_lab = None
                if fusion.uses_lm:
                    st = fusion.lm.init_state(1, device) if not seq else st
                    tok = torch.full((1,), seq[-1] if seq else blank, dtype=torch.long, device=device)
                    lp, lm_st = fusion.lm.score(tok, st)
                    lm_lab = label_logprobs(lp, blank)[0].double()
                    add = add + fusion.lm_weight * lm_lab
                if fusion.uses_ilm:
                    ilm_lab = ilm_logprobs(model, pred_of(seq)[0])[0].double()
                    add = add - fusion.ilm_weight * ilm_lab
                fcache[seq] = (add, lm_st, lm_sum, ilm_sum,
                               None if lm_lab is None else lm_lab.cpu(), None if ilm_lab is None else ilm_lab.cpu())
            return fcache[seq]

        # seq -> (search score, transducer score); the two are equal without fusion
        hyps: Dict[Tuple[int, ...], Tuple[float, float]] = {(): (0.0, 0.0)}      # set B after each frame
        for t in range(int(enc_lens[b])):
            frame = enc[b : b + 1, t : t + 1]                 # [1, 1, D]
            A: Dict[Tuple[int, ...], Tuple[float, float, int]] = {s: (v, a, 0) for s, (v, a) in hyps.items()}
            Bset: Dict[Tuple[int, ...], Tuple[float, float]] = {}
            while A:
                seq, (score, asr, nsym) = max(A.items(), key=lambda kv: kv[1][0])
                del A[seq]
                if not math.isfinite(score):  # nothing better left (or a non-finite model): stop
                    break
                pred, _ = pred_of(seq)
                logp = model.joint(frame, pred).log_softmax(-1).view(-1).double()
                lab = logp + fused_of(seq)[0] if fuse else logp   # the blank column adds 0
                s_blank, a_blank = score + float(logp[blank]), asr + float(logp[blank])
                if seq in Bset:
                    Bset[seq] = (_logaddexp(Bset[seq][0], s_blank), _logaddexp(Bset[seq][1], a_blank))
                else:
                    Bset[seq] = (s_blank, a_blank)
                if nsym < cfg.max_symbols_per_frame:
                    top_v, top_i = lab.topk(min(K + 1, lab.numel()))
                    for v, i in zip(top_v.tolist(), top_i.tolist()):
                        if i == blank:
                            continue
                        new = seq + (i,)
                        s_new = score + v
                        a_new = asr + float(logp[i]) if fuse else s_new
                        if new in A:   # reached by another prefix path on this frame: merge
                            old, a_old, n_old = A[new]
                            A[new] = (_logaddexp(old, s_new), _logaddexp(a_old, a_new), max(n_old, nsym + 1))
                        else:
                            A[new] = (s_new, a_new, nsym + 1)
                best_a = max((v for v, _, _ in A.values()), default=-math.inf)
                if sum(1 for v, _ in Bset.values() if v > best_a) >= K:
                    break
                if len(A) > A_MAX * K:  # a model that emits many labels per frame: keep the search bounded
                    A = dict(sorted(A.items(), key=lambda kv: -kv[1][0])[: A_MAX * K])
            if not Bset:  # every score non-finite: keep the hypotheses, scored -inf
                Bset = {seq: (-math.inf, -math.inf) for seq in hyps}
            hyps = dict(sorted(Bset.items(), key=lambda kv: -kv[1][0])[:K])
        ranked = sorted(hyps.items(), key=lambda kv: -final_score(kv[0], kv[1][0], cfg))
        nbest = []
        for s, (v, a) in ranked[: max(cfg.nbest, 1)]:
            if fuse:
                _, _, lm_sum, ilm_sum, _, _ = fused_of(s)
                nbest.append(Hypothesis(list(s), float(a), lm_score=lm_sum, ilm_score=ilm_sum, fused=float(v)))
            else:
                nbest.append(Hypothesis(list(s), float(v)))
        best = nbest[0]
        results.append(Hypothesis(best.tokens, best.score, nbest, lm_score=best.lm_score,
                                  ilm_score=best.ilm_score, fused=best.fused))
    return results


def final_score(tokens, score: float, cfg: BeamConfig) -> float:
    """What the final hypotheses are ranked by: ``score / (1 + len(tokens))`` with ``length_norm``."""
    return score / (1 + len(tokens)) if cfg.length_norm else score


@torch.no_grad()
def modified_beam_search(model, enc: torch.Tensor, enc_lens: torch.Tensor, cfg: BeamConfig,
                         fusion: Optional[Fusion] = None) -> List[Hypothesis]:
    """Modified beam search (Kang et al. / icefall ``modified_beam_search``) over a batch.

    At every frame each hypothesis is extended by blank or by exactly one label; of all
    (hypothesis, output) pairs of an utterance the ``beam_size`` best survive, and those
    that spell the same label sequence are merged (log-sum-exp of their scores). One
    label per frame bounds the work per frame, which is what makes batching simple.
    Hypotheses live in a fixed [B, K] layout (K = beam_size, empty slots score -inf);
    the prediction network runs once per frame for all slots that took a label, and so
    does the external LM with ``fusion`` (its state and next-label scores live per slot, as
    the prediction network's; the scores it adds travel to the host with the top-k, in the
    one transfer per frame the search makes anyway).

    Returns per utterance the best hypothesis (``score`` = merged transducer log-probability;
    with fusion ``fused`` = what it was ranked by) with the ``nbest`` best in ``.nbest``.
    """
    check_model(model)
    K = cfg.beam_size
    if K < 1:
        raise ValueError(f"beam_size must be >= 1, got {K}")
    fuse = fusion is not None and fusion.active
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
    if fuse:   # per slot: transducer, LM and internal-LM sums; the LM's state and label scores
        asr_s, lm_s, ilm_s = (torch.zeros(B, K, dtype=torch.float64) for _ in range(3))
        lm_lab = ilm_lab = lm_state = None
        if fusion.uses_lm:
            lp, lm_state = fusion.lm.score(start[:, 0], fusion.lm.init_state(B * K, device))
            lm_lab = label_logprobs(lp, blank)                          # [B*K, V]
    for t in range(int(enc_lens.max().item())):
        active = (enc_lens > t).tolist()
        frame = enc[:, t : t + 1].repeat_interleave(K, dim=0)   # [B*K, 1, D]
        logp = model.joint(frame, pred).log_softmax(-1)[:, 0]    # [B*K, V]
        V = logp.shape[-1]
        cand = scores.view(B * K, 1).to(logp.device) + logp.double()
        if fuse:
            if fusion.uses_ilm:
                ilm_lab = ilm_logprobs(model, pred)
            add = torch.zeros_like(cand)
            if lm_lab is not None:
                add = add + fusion.lm_weight * lm_lab.double()
            if ilm_lab is not None:
                add = add - fusion.ilm_weight * ilm_lab.double()
            cand = cand + add
        cand = cand.view(B, K * V)
        top_scores, top_idx = cand.topk(min(K, K * V), dim=-1)
        if fuse:   # the parts of each chosen candidate, fetched with it
            zero = torch.zeros_like(logp, dtype=torch.float64)
            parts = [logp.double(), zero if lm_lab is None else lm_lab.double(),
                     zero if ilm_lab is None else ilm_lab.double()]
            got = torch.stack([p.view(B, K * V).gather(1, top_idx) for p in parts])   # [3, B, K]
            both = torch.cat([top_scores[None], got.to(top_scores.dtype)]).cpu()
            top_scores, got = both[0], both[1:]
            top_idx = top_idx.cpu()
        else:
            top_scores, top_idx = top_scores.cpu(), top_idx.cpu()
        src_rows: List[int] = []          # source slot of every new slot
        new_tokens: List[int] = []        # label fed to the prediction network (or blank)
        new_seqs: List[List[Tuple[int, ...]]] = []
        new_scores = torch.full((B, K), -math.inf, dtype=torch.float64)
        if fuse:
            new_parts = torch.zeros(3, B, K, dtype=torch.float64)
        for b in range(B):
            if not active[b]:             # utterance finished: keep its slots as they are
                src_rows.extend(b * K + k for k in range(K))
                new_tokens.extend([blank] * K)
                new_seqs.append(seqs[b])
                new_scores[b] = scores[b]
                if fuse:
                    new_parts[:, b] = torch.stack([asr_s[b], lm_s[b], ilm_s[b]])
                continue
            merged: Dict[Tuple[int, ...], Tuple[float, int, int, float, int]] = {}
            for j, (s, i) in enumerate(zip(top_scores[b].tolist(), top_idx[b].tolist())):
                if s == -math.inf:
                    continue
                k, v = divmod(i, V)
                seq = seqs[b][k] if v == blank else seqs[b][k] + (v,)
                a = float(asr_s[b, k] + got[0, b, j]) if fuse else s
                if seq in merged:
                    old, src, tok, a_old, j0 = merged[seq]
                    merged[seq] = (_logaddexp(old, s), src, tok, _logaddexp(a_old, a), j0)
                else:
                    merged[seq] = (s, b * K + k, v, a, j)
            items = sorted(merged.items(), key=lambda kv: -kv[1][0])
            row_seqs = []
            for j in range(K):
                if j < len(items):
                    seq, (s, src, tok, a, j0) = items[j]
                    new_scores[b, j] = s
                    src_rows.append(src)
                    new_tokens.append(tok)
                    row_seqs.append(seq)
                    if fuse:   # LM parts depend on the label sequence only: those of the first path
                        k = src - b * K
                        new_parts[0, b, j] = a
                        new_parts[1, b, j] = lm_s[b, k] + (got[1, b, j0] if tok != blank else 0.0)
                        new_parts[2, b, j] = ilm_s[b, k] + (got[2, b, j0] if tok != blank else 0.0)
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
        if fuse and lm_lab is not None:
            lm_lab = lm_lab.index_select(0, idx)
            lm_state = state_index(lm_state, idx)
        if bool(emit.any()):
            rows = emit.nonzero().flatten()
            out, st = model.predictor(toks[rows].unsqueeze(1), state_index(state, rows))
            pred = pred.index_copy(0, rows, out)
            state = _state_index_copy(state, rows, st)
            if fuse and lm_lab is not None:
                lp, st = fusion.lm.score(toks[rows], state_index(lm_state, rows))
                lm_lab = lm_lab.index_copy(0, rows, label_logprobs(lp, blank))
                lm_state = _state_index_copy(lm_state, rows, st)
        seqs, scores = new_seqs, new_scores
        if fuse:
            asr_s, lm_s, ilm_s = new_parts[0], new_parts[1], new_parts[2]
    results = []
    for b in range(B):
        alive = [k for k in range(K) if scores[b, k] > -math.inf]
        order = sorted(alive, key=lambda k: -final_score(seqs[b][k], float(scores[b, k]), cfg))
        if fuse:
            nbest = [Hypothesis(list(seqs[b][k]), float(asr_s[b, k]), lm_score=float(lm_s[b, k]),
                                ilm_score=float(ilm_s[b, k]), fused=float(scores[b, k]))
                     for k in order[: max(cfg.nbest, 1)]]
        else:
            nbest = [Hypothesis(list(seqs[b][k]), float(scores[b, k])) for k in order[: max(cfg.nbest, 1)]]
        best = nbest[0]
        results.append(Hypothesis(best.tokens, best.score, nbest, lm_score=best.lm_score,
                                  ilm_score=best.ilm_score, fused=best.fused))
    return results


def _logaddexp(a: float, b: float) -> float:
    m = max(a, b)
    return m + math.log(math.exp(a - m) + math.exp(b - m))


def _state_index_copy(state, rows: torch.Tensor, new):
    if isinstance(state, torch.Tensor):
        return state.index_copy(1, rows, new)
    return type(state)(_state_index_copy(s, rows, n) for s, n in zip(state, new))
