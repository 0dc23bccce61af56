"""Token and word timings of a hypothesis: forced alignment on the CTC head or the transducer lattice.

A search gives token ids; this module says *when* each token was spoken and how sure the model
is of it, for any search (greedy or beam):

- ``ctc``: Viterbi forced alignment of the tokens against the auxiliary CTC head's posteriors
  (``loss.w_ctc > 0`` at training; ``torchaudio.functional.forced_align``). A token spans the
  frames the best CTC path gives it (its first frame to the frame after its last); its
  confidence is the mean CTC posterior of the token over those frames
  (``torchaudio.functional.merge_tokens``).
- ``transducer``: Viterbi alignment through the RNN-T lattice (Graves 2012): the most probable
  path of the hypothesis' labels and blanks over the T x (U+1) grid; a token is emitted at one
  frame, and its confidence is the joint's posterior of that token at that (frame, position).

Pieces become words at sentencepiece word boundaries (a piece that starts with U+2581): a word
starts with its first piece, ends with its last one, and its confidence is the *minimum* of its
pieces' (a word is as sure as its least sure piece). Times are encoder frames x the frame length
(fbank hop x subsampling) from the start of the audio, as the CTM writes them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence

import numpy as np
import torch

from justkit.errors import JustkitError

WORD_BOUNDARY = "\u2581"   # sentencepiece's word-start mark
TIMINGS = ("auto", "ctc", "transducer")   # "off" (no timings) is the caller's choice
JOINT_CHUNK = 1 << 21      # joint outputs (frames x positions x vocabulary) computed at once at most


@dataclass
class Span:
    """A word or word piece with its time and confidence: ``[start, end)`` seconds, ``confidence`` in [0, 1]."""

    text: str
    start: float
    end: float
    confidence: float


@dataclass
class TokenAlignment:
    """Per token: first frame, end frame (exclusive) and posterior; ``source``: ``ctc`` or ``transducer``."""

    starts: List[int]
    ends: List[int]
    confidence: List[float]
    source: str


class AlignError(JustkitError, ValueError):
    """The tokens cannot be aligned on this path (e.g. more CTC labels than frames), or the model
    lacks what the path needs (the CTC head)."""


def has_ctc_head(model) -> bool:
    """Whether the model was trained with the auxiliary CTC head (``loss.w_ctc > 0``)."""
    return getattr(model, "ctc_head", None) is not None


@torch.no_grad()
def ctc_align(model, enc: torch.Tensor, tokens: Sequence[int]) -> TokenAlignment:
    """Forced alignment of ``tokens`` on the CTC head's posteriors of ``enc`` [T, D] (one utterance)."""
    import torchaudio.functional as taf

    if not has_ctc_head(model):
        raise AlignError("the model has no CTC head (trained with loss.w_ctc: 0)")
    T = enc.shape[0]
    if not tokens:
        return TokenAlignment([], [], [], "ctc")
    repeats = sum(1 for a, b in zip(tokens, tokens[1:]) if a == b)
    if len(tokens) + repeats > T:
        raise AlignError(f"{len(tokens)} tokens ({repeats} repeated) need more than the {T} frames CTC has")
    logp = model.ctc_head(enc[None]).float().log_softmax(-1).cpu()          # [1, T, V]
    targets = torch.tensor([list(tokens)], dtype=torch.int32)
    path, scores = taf.forced_align(logp, targets, blank=model.blank_id)
    spans = taf.merge_tokens(path[0], scores[0].exp(), blank=model.blank_id)
    if len(spans) != len(tokens):  # cannot happen for a valid alignment; guard the zip below
        raise AlignError(f"CTC alignment gave {len(spans)} spans for {len(tokens)} tokens")
    return TokenAlignment([s.start for s in spans], [s.end for s in spans], [float(s.score) for s in spans], "ctc")


@torch.no_grad()
def transducer_align(model, enc: torch.Tensor, tokens: Sequence[int]) -> TokenAlignment:
    """Viterbi path of ``tokens`` through the RNN-T lattice of ``enc`` [T, D] (one utterance).

    alpha[t, u] (u tokens emitted, at frame t) = max(alpha[t-1, u] + blank[t-1, u],
    alpha[t, u-1] + label[t, u-1]); within a frame the label steps are a prefix sum, so each
    frame is one cumulative maximum over u. Token u is emitted at the frame where the path
    takes its label step; it spans that one frame."""
    T = enc.shape[0]
    U = len(tokens)
    if not U:
        return TokenAlignment([], [], [], "transducer")
    if T < 1:
        raise AlignError("no encoder frame")
    blank = model.blank_id
    dev = enc.device
    ys = torch.tensor([[blank, *tokens]], dtype=torch.long, device=dev)
    pred, _ = model.predictor(ys, None)                                   # [1, U+1, Dp]
    pp = model.joint.pred_proj(pred)[0]                                   # [U+1, J]
    ep = model.joint.enc_proj(enc)                                        # [T, J]
    lab_idx = torch.tensor(list(tokens), dtype=torch.long, device=dev)
    blank_lp = np.empty((T, U + 1))
    label_lp = np.full((T, U + 1), -np.inf)
    step = max(1, JOINT_CHUNK // ((U + 1) * model.joint.out.out_features))
    for t0 in range(0, T, step):
        lp = model.joint.combine(ep[t0 : t0 + step, None], pp[None]).float().log_softmax(-1)   # [t, U+1, V]
        blank_lp[t0 : t0 + step] = lp[..., blank].double().cpu().numpy()
        label_lp[t0 : t0 + step, :U] = lp[:, :U].gather(-1, lab_idx.view(1, U, 1).expand(lp.shape[0], U, 1))[..., 0] \
            .double().cpu().numpy()
    ar = np.arange(U + 1)
    back = np.zeros((T, U + 1), dtype=np.int64)    # the u at which the path entered frame t
    enter = np.full(U + 1, -np.inf)
    enter[0] = 0.0
    alpha = None
    for t in range(T):
        if t:
            enter = alpha + blank_lp[t - 1]
        S = np.concatenate([[0.0], np.cumsum(label_lp[t, :U])])
        c = enter - S
        best = np.maximum.accumulate(c)
        back[t] = np.maximum.accumulate(np.where(c == best, ar, 0))
        alpha = S + best
    if not np.isfinite(alpha[U] + blank_lp[T - 1, U]):
        raise AlignError("no finite path through the transducer lattice")
    frames = [0] * U
    u = U
    for t in range(T - 1, -1, -1):
        k = int(back[t, u])
        for j in range(k, u):
            frames[j] = t
        u = k
    conf = [float(np.exp(label_lp[frames[j], j])) for j in range(U)]
    return TokenAlignment(frames, [f + 1 for f in frames], conf, "transducer")


def align(model, enc: torch.Tensor, tokens: Sequence[int], timing: str = "auto") -> TokenAlignment:
    """Token timings by ``timing``: ``ctc`` (needs the CTC head), ``transducer``, or ``auto``: the
    CTC head where the model has one and the tokens fit its frames, else the transducer."""
    if timing not in TIMINGS:
        raise ValueError(f"timing must be one of {TIMINGS}, got {timing!r}")
    if timing == "ctc" or (timing == "auto" and has_ctc_head(model)):
        try:
            return ctc_align(model, enc, tokens)
        except AlignError:
            if timing == "ctc":
                raise
    return transducer_align(model, enc, tokens)


def piece_spans(pieces: Sequence[str], ali: TokenAlignment, frame_seconds: float, offset: float = 0.0,
                limit: Optional[float] = None) -> List[Span]:
    """Pieces with times: ``offset + frame x frame_seconds``; several pieces on one frame (a transducer
    emits up to max_symbols_per_frame there) share it evenly, so that spans never overlap and
    each has a positive length; ends are clipped to the next piece's start and to ``limit``."""
    n = len(pieces)
    starts = [float(s) for s in ali.starts]
    ends = [float(e) for e in ali.ends]
    i = 0
    while i < n:   # runs of pieces that start on the same frame
        j = i
        while j + 1 < n and ali.starts[j + 1] == ali.starts[i]:
            j += 1
        k = j - i + 1
        if k > 1:
            width = ali.ends[i] - ali.starts[i]
            for m in range(k):
                starts[i + m] = ali.starts[i] + width * m / k
                ends[i + m] = ali.starts[i] + width * (m + 1) / k
        i = j + 1
    out = []
    for m in range(n):
        s = offset + starts[m] * frame_seconds
        e = offset + ends[m] * frame_seconds
        if m + 1 < n:
            e = min(e, offset + starts[m + 1] * frame_seconds)
        if limit is not None:
            e = min(e, limit)
            s = min(s, limit)
        out.append(Span(pieces[m], s, e, ali.confidence[m]))
    return out


def words_of(pieces: Sequence[Span], detokenize) -> List[Span]:
    """Pieces merged into words at sentencepiece word boundaries (a piece starting with U+2581
    starts a word); ``detokenize(list of piece strings) -> text`` spells each word. A word's
    confidence is the minimum of its pieces'; a group that spells nothing (a lone U+2581) is dropped."""
    groups: List[List[Span]] = []
    for p in pieces:
        if not groups or p.text.startswith(WORD_BOUNDARY):
            groups.append([p])
        else:
            groups[-1].append(p)
    words = []
    for g in groups:
        text = detokenize([p.text for p in g]).strip()
        if text:
            words.append(Span(text, g[0].start, g[-1].end, min(p.confidence for p in g)))
    return words


def ctm_lines(utt: str, spans: Sequence[Span], channel: str = "1") -> List[str]:
    """NIST CTM lines ``<utt> <channel> <start> <duration> <token> <confidence>`` (seconds, 2 and 3 decimals)."""
    return [f"{utt} {channel} {s.start:.3f} {max(s.end - s.start, 0.001):.3f} {s.text} {s.confidence:.3f}"
            for s in spans]


def read_ctm(path) -> dict:
    """``{utt: [(start, duration, token, confidence or None), ...]}`` of a CTM file (lines in file order);
    a malformed line is a ValueError naming the file and line."""
    out: dict = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip() or line.startswith(";;"):
                continue
            parts = line.split()
            if len(parts) not in (5, 6):
                raise ValueError(f"{path}:{n}: a CTM line has 5 or 6 fields, got {len(parts)}: {line.strip()!r}")
            try:
                start, dur = float(parts[2]), float(parts[3])
                conf = float(parts[5]) if len(parts) == 6 else None
            except ValueError:
                raise ValueError(f"{path}:{n}: start, duration and confidence must be numbers: {line.strip()!r}") from None
            out.setdefault(parts[0], []).append((start, dur, parts[4], conf))
    return out
