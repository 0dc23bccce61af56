"""Token and word timings (justkit.decode.align): the transducer's Viterbi path against a brute
force over every alignment, the CTC path on posteriors whose peaks are known, pieces to words."""
from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from justkit.decode.align import (AlignError, Span, TokenAlignment, align, ctc_align, ctm_lines, piece_spans,
                                  read_ctm, transducer_align, words_of)
from justkit.models.just import JUSTModel


def _brute_force(model, enc, tokens):
    """The best (frames, log-probability) over every placement of ``tokens`` on frames (non-decreasing)."""
    T, U = enc.shape[0], len(tokens)
    ys = torch.tensor([[model.blank_id, *tokens]])
    pred, _ = model.predictor(ys, None)
    lp = model.joint(enc[:, None], pred[0][None]).log_softmax(-1)          # [T, U+1, V]
    best = (None, -math.inf)
    for frames in itertools.combinations_with_replacement(range(T), U):
        score, u = 0.0, 0
        for t in range(T):
            while u < U and frames[u] == t:
                score += float(lp[t, u, tokens[u]])
                u += 1
            score += float(lp[t, u, model.blank_id])
        if score > best[1]:
            best = (list(frames), score)
    return best, lp


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_transducer_viterbi_equals_brute_force(tiny_cfg, seed):
    torch.manual_seed(seed)
    model = JUSTModel(tiny_cfg("supervised", vocab_size=7)).eval()
    enc = torch.randn(6, model.cfg.d_model)
    tokens = [3, 3, 5, 2]
    with torch.no_grad():
        (frames, _), lp = _brute_force(model, enc, tokens)
        ali = transducer_align(model, enc, tokens)
    assert ali.starts == frames and ali.ends == [f + 1 for f in frames] and ali.source == "transducer"
    want = [math.exp(float(lp[f, u, tokens[u]])) for u, f in enumerate(frames)]
    assert ali.confidence == pytest.approx(want, rel=1e-5)
    assert transducer_align(model, enc, []).starts == []


class _PeakyCTC(nn.Module):
    """A stand-in model whose CTC posteriors are blank except for given (frame, token) peaks."""

    blank_id = 0

    def __init__(self, T, V, peaks, p=0.9):
        super().__init__()
        logits = torch.full((T, V), -10.0)
        logits[:, 0] = 0.0
        for t, tok in peaks:
            logits[t, tok] = math.log(p / (1 - p)) + 0.0
            logits[t, 0] = 0.0
        self.logits = logits

    def ctc_head(self, enc):
        return self.logits[None].expand(enc.shape[0], -1, -1)


def test_ctc_alignment_finds_the_peaks_and_their_posteriors():
    model = _PeakyCTC(12, 6, [(2, 3), (3, 3), (7, 5), (10, 4)])
    ali = ctc_align(model, torch.zeros(12, 4), [3, 5, 4])
    assert ali.source == "ctc"
    assert ali.starts == [2, 7, 10] and ali.ends == [4, 8, 11]
    assert all(0.85 < c < 0.95 for c in ali.confidence)
    # a repeated token: two spans with a blank between them
    ali = ctc_align(_PeakyCTC(12, 6, [(2, 3), (4, 3), (7, 5)]), torch.zeros(12, 4), [3, 3, 5])
    assert ali.starts == [2, 4, 7] and ali.ends == [3, 5, 8]
    with pytest.raises(AlignError, match="frames"):
        ctc_align(model, torch.zeros(12, 4), [3] * 7)


def test_auto_timing_falls_back_to_the_transducer(tiny_cfg, tiny_loss):
    torch.manual_seed(0)
    model = JUSTModel(tiny_cfg("supervised", vocab_size=7), tiny_loss(w_ctc=1.0)).eval()
    enc = torch.randn(4, model.cfg.d_model)
    assert align(model, enc, [2, 3], "auto").source == "ctc"
    assert align(model, enc, [2, 3, 4, 5, 6], "auto").source == "transducer"   # 5 labels, 4 frames
    with pytest.raises(AlignError):
        align(model, enc, [2, 3, 4, 5, 6], "ctc")
    assert align(model, enc, [2, 3], "transducer").source == "transducer"
    plain = JUSTModel(tiny_cfg("supervised", vocab_size=7)).eval()
    assert align(plain, enc, [2, 3], "auto").source == "transducer"


def test_pieces_share_a_frame_and_merge_into_words():
    # a transducer emitting three pieces on frame 5: they share it evenly, never overlap
    ali = TokenAlignment([1, 5, 5, 5, 9], [2, 6, 6, 6, 10], [0.9, 0.8, 0.4, 0.7, 0.6], "transducer")
    pieces = ["\u2581the", "\u2581ca", "t", "\u2581", "\u2581sat"]
    spans = piece_spans(pieces, ali, 0.04, offset=1.0, limit=1.38)
    assert [s.start for s in spans] == pytest.approx([1.04, 1.2, 1.2133, 1.2267, 1.36], abs=1e-3)
    assert all(a.end <= b.start + 1e-9 for a, b in zip(spans, spans[1:]))
    assert all(s.end > s.start for s in spans) and spans[-1].end == 1.38   # clipped to the limit
    words = words_of(spans, lambda ps: "".join(ps).replace("\u2581", " ").strip())
    assert [w.text for w in words] == ["the", "cat", "sat"]          # the lone U+2581 spells nothing
    assert words[1].confidence == 0.4 and words[1].start == spans[1].start and words[1].end == spans[2].end
    lines = ctm_lines("u1", words)
    assert lines[1] == "u1 1 1.200 0.027 cat 0.400"


def test_read_ctm_names_a_bad_line(tmp_path):
    p = tmp_path / "a.ctm"
    p.write_text("u1 1 0.10 0.20 hi 0.5\nu1 1 0.30 0.20 there\n")
    assert read_ctm(p) == {"u1": [(0.1, 0.2, "hi", 0.5), (0.3, 0.2, "there", None)]}
    p.write_text("u1 1 0.10 x hi 0.5\n")
    with pytest.raises(ValueError, match="a.ctm:1"):
        read_ctm(p)
    assert Span("a", 0.0, 1.0, 1.0).text == "a"
