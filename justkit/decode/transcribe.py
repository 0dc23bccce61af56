"""Transcribe audio with a trained model: ``Speech2Text.from_dir(path)(waveform, sample_rate) -> text``.

The front end is the recipe's: audio at any rate is resampled to the model's rate as stage 2
does (Kaiser-windowed sinc), then Kaldi fbank (stage 3's options) and the global CMVN; the
search is the stage-7 greedy or beam search. Each result carries its words with start, end and
confidence (``justkit.decode.align``: the CTC head's forced alignment where the model has one, else
the transducer's). The model directory is a packed one (``justkit.models.package``) or an
experiment directory.

:class:`Transcriber` is what every backend shares: that front end, the cutting of long audio into
pieces, batching, stitching, word timings and detokenising. :class:`Speech2Text` searches with the
PyTorch model; ``justkit.models.onnx.OnnxTransducer`` with the ONNX export under ONNX Runtime.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

from justkit.data.dataset import resolve_cmvn
from justkit.decode.align import TIMINGS, AlignError, Span, TokenAlignment, align, piece_spans, words_of
from justkit.decode.beam import BeamConfig, beam_search
from justkit.decode.decoder import check_finite
from justkit.decode.fusion import Fusion
from justkit.decode.greedy import GreedyConfig, greedy_search
from justkit.decode.hyp import Hypothesis
from justkit.frontend.fbank import FbankConfig, compute_fbank
from justkit.frontend.resample import resample
from justkit.models.factory import load_checkpoint, model_from_config
from justkit.models.lm import LMError, load_lm
from justkit.models.modeldir import ModelDirError, check_frontend, locate
from justkit.text.tokenizer import Tokenizer, check_vocab

log = logging.getLogger(__name__)

METHODS = ("greedy", "beam")
MAX_SEGMENT_S = 30.0   # longer audio is decoded in pieces of at most this many seconds (Speech2Text.segments)
CUT_SEARCH = 0.2       # a piece ends at the quietest frame of its last fifth


@dataclass
class Transcript:
    """One result: the text, its word pieces with their start times, and its words
    (``Span(text, start, end, confidence)``, seconds from the start of the audio).

    ``timing`` says where the times come from: ``ctc`` (the CTC head's forced alignment),
    ``transducer`` (the RNN-T lattice's Viterbi path), ``search`` (the frames a backend that cannot
    align emitted the pieces on: the ONNX export), joined by ``+`` when the pieces of
    a long file differ, or ``""`` when timings are off (``times``, ``words`` and ``spans`` are then
    empty; a stretch that cannot be aligned is left out of them with a warning naming it)."""

    text: str
    pieces: List[str] = field(default_factory=list)
    times: List[float] = field(default_factory=list)  # start of each piece, seconds from the start of the audio
    score: float = 0.0
    words: List[Span] = field(default_factory=list)
    spans: List[Span] = field(default_factory=list)   # the pieces with start, end and confidence
    timing: str = ""


class Transcriber:
    """The front door every backend shares: ``t(waveform, sample_rate) -> str``, ``t.transcribe(batch)``.

    Front end (resampling, fbank, CMVN), long-audio pieces, batching and detokenising live here; a
    backend implements :meth:`search` (features of a batch of pieces -> hypotheses). With
    ``cmvn_in_search`` the search applies the CMVN itself (an ONNX encoder with the statistics
    inside): :meth:`features` then returns raw fbank, and the pieces are still cut on normalised
    features, so that every backend cuts long audio at the same frames.
    """

    cmvn_in_search = False

    def __init__(self, tokenizer: Optional[Tokenizer], fbank: Optional[FbankConfig],
                 cmvn: Optional[Tuple[np.ndarray, np.ndarray]], subsampling: int = 4, min_frames: int = 1,
                 max_segment_s: float = MAX_SEGMENT_S, batch_size: int = 8, timing: str = "auto") -> None:
        if max_segment_s < 0 or batch_size < 1:
            raise ValueError(f"max_segment_s must be >= 0 and batch_size >= 1, got {max_segment_s}, {batch_size}")
        if timing not in (*TIMINGS, "off"):
            raise ValueError(f"timing must be one of {(*TIMINGS, 'off')}, got {timing!r}")
        self.tokenizer = tokenizer
        self.fbank = fbank
        self.cmvn = cmvn
        self.max_segment_s = float(max_segment_s)
        self.batch_size = int(batch_size)
        self.min_frames = int(min_frames)
        self.timing = timing  # "off": no times, words or spans in the Transcripts
        # seconds per encoder frame: the fbank hop times the subsampling
        self.frame_seconds = fbank.frame_shift_ms / 1000 * subsampling if fbank is not None else 0.0

    def _need_frontend(self) -> None:
        if self.fbank is None or self.tokenizer is None:
            raise ValueError(f"this {type(self).__name__} has no front end or tokenizer: build it with "
                             f"{type(self).__name__}.from_dir(<model dir>) to transcribe audio")

    # ------------------------------------------------------------------ front end
    def normalize(self, feats: np.ndarray) -> np.ndarray:
        """The global CMVN of the model (none: unchanged), float32."""
        if self.cmvn is not None:
            mean, std = self.cmvn
            feats = (feats - mean) / std
        return np.asarray(feats, dtype=np.float32)

    def features(self, waveform, sample_rate: int, name: str = "") -> np.ndarray:
        """Resampled, fbank, CMVN: ``[T, D]`` float32, as the data loader feeds the model (without
        the CMVN when the search applies it: ``cmvn_in_search``)."""
        self._need_frontend()
        x = np.asarray(waveform.detach().cpu().numpy() if torch.is_tensor(waveform) else waveform, dtype=np.float32)
        if x.ndim != 1:
            raise ValueError(f"{name or 'waveform'}: expected 1-D mono samples, got shape {x.shape}")
        rate = int(self.fbank.sample_frequency)
        if int(sample_rate) != rate:
            x = resample(x, int(sample_rate), rate)
        feats = compute_fbank(x, self.fbank, rate, name or None)
        return np.asarray(feats, dtype=np.float32) if self.cmvn_in_search else self.normalize(feats)

    # ------------------------------------------------------------------ search
    def search(self, feats: Sequence[np.ndarray], names: Sequence[str]) -> List[Hypothesis]:
        """One hypothesis (tokens, encoder frame of each, score) per feature matrix; the backend's."""
        raise NotImplementedError

    def timed_search(self, feats: Sequence[np.ndarray], names: Sequence[str], offsets: Sequence[float],
                     limits: Sequence[float]) -> List[Tuple[Hypothesis, List[Span], str]]:
        """:meth:`search`, each hypothesis with its pieces timed (``offsets``: the seconds where each
        stretch starts, ``limits``: where it ends) and the timing's source. This default, for a
        backend that cannot align (the ONNX export), times each piece from the frame the search
        emitted it on to the next piece's (source ``search``; confidence: the posterior the search
        chose it with, where the backend records it)."""
        hyps = self.search(feats, names)
        out = []
        for h, offset, limit in zip(hyps, offsets, limits):
            if self.timing == "off" or not h.tokens or len(h.frames) != len(h.tokens):
                out.append((h, [], ""))
                continue
            starts = list(h.frames)
            ends = [max(b, a + 1) for a, b in zip(starts, starts[1:] + [starts[-1] + 1])]
            conf = list(h.probs) if len(h.probs) == len(h.tokens) else [float("nan")] * len(h.tokens)
            pieces = [self.tokenizer.id_to_piece(t) for t in h.tokens]
            ali = TokenAlignment(starts, ends, conf, "search")
            out.append((h, piece_spans(pieces, ali, self.frame_seconds, offset, limit), "search"))
        return out

    def transcribe(self, batch: Sequence[Tuple[object, int]], names: Sequence[str] = (),
                   timed: bool = True) -> List[Transcript]:
        """``[(waveform, sample_rate), ...]`` -> one Transcript each (decoded together); ``timed``:
        with word times (the backend's ``timing``; False: text and pieces only, no alignment)."""
        if not batch:
            return []
        feats = [self.features(w, sr, names[i] if i < len(names) else "") for i, (w, sr) in enumerate(batch)]
        return self.transcribe_features(feats, names, timed)

    def segments(self, feats: np.ndarray) -> List[Tuple[int, int]]:
        """``[(start, end), ...]`` frames: the whole utterance when it is at most ``max_segment_s``
        long, else pieces of at most that length, each cut at the quietest frame (lowest mean
        normalised log-mel energy, smoothed over 0.1 s) of the last ``CUT_SEARCH`` of the piece,
        so that a cut rarely falls inside a word. Attention memory then grows with the piece, not the file."""
        n = feats.shape[0]
        hop = self.fbank.frame_shift_ms / 1000
        limit = int(self.max_segment_s / hop) if self.max_segment_s > 0 else 0
        if not limit or n <= limit:
            return [(0, n)]
        energy = (self.normalize(feats) if self.cmvn_in_search else feats).mean(axis=1)
        k = max(1, int(0.1 / hop))
        smooth = np.convolve(energy, np.ones(k) / k, mode="same")
        look = max(1, int(limit * CUT_SEARCH))
        out, start = [], 0
        while n - start > limit:
            lo, hi = start + limit - look, start + limit
            cut = lo + int(np.argmin(smooth[lo:hi]))
            out.append((start, cut))
            start = cut
        out.append((start, n))
        return out

    def transcribe_features(self, feats: Sequence[np.ndarray], names: Sequence[str] = (),
                            timed: bool = True) -> List[Transcript]:
        """Features (as :meth:`features` gives them) -> one Transcript each. Long utterances are
        decoded in pieces (:meth:`segments`) and stitched; at most ``batch_size`` pieces are
        searched at once. An utterance shorter than the model's subsampling needs gets an
        empty Transcript and a warning naming it. ``timed`` False (or ``timing`` off): no word times
        and no alignment work."""
        self._need_frontend()
        timed = timed and self.timing != "off"
        names = [names[i] if i < len(names) and names[i] else f"#{i}" for i in range(len(feats))]
        hop = self.fbank.frame_shift_ms / 1000
        pieces = []  # (utterance index, start frame, features)
        for i, f in enumerate(feats):
            if f.shape[0] < self.min_frames:
                log.warning("%s: %d frames (%.3f s) is shorter than the %d frames the model needs; "
                            "empty hypothesis", names[i], f.shape[0], f.shape[0] * hop, self.min_frames)
                continue
            pieces += [(i, s, f[s:e]) for s, e in self.segments(f) if e - s >= self.min_frames]
        found: List[List[Tuple[Hypothesis, List[Span], str]]] = [[] for _ in feats]
        for b in range(0, len(pieces), self.batch_size):
            group = pieces[b : b + self.batch_size]
            feats_, names_ = [g[2] for g in group], [names[g[0]] for g in group]
            if timed:
                results = self.timed_search(feats_, names_, [g[1] * hop for g in group],
                                            [(g[1] + g[2].shape[0]) * hop for g in group])
            else:
                results = [(h, [], "") for h in self.search(feats_, names_)]
            for (i, _, _), result in zip(group, results):
                found[i].append(result)
        out = []
        for parts in found:
            tokens, pieces_, spans, sources, score = [], [], [], [], 0.0
            for h, sp, source in parts:
                tokens += h.tokens
                pieces_ += [self.tokenizer.id_to_piece(t) for t in h.tokens]
                spans += sp
                score += h.score
                if source and source not in sources:
                    sources.append(source)
            words = words_of(spans, self.tokenizer.decode_pieces) if timed else []
            out.append(Transcript(self.tokenizer.decode(tokens) if tokens else "", pieces_,
                                  [round(s.start, 3) for s in spans], score, words, spans, "+".join(sources)))
        return out

    def __call__(self, waveform, sample_rate: int) -> str:
        """The text of one utterance (1-D float samples in [-1, 1] at ``sample_rate``)."""
        return self.transcribe([(waveform, sample_rate)], timed=False)[0].text


class Speech2Text(Transcriber):
    """A PyTorch model ready to transcribe: ``s2t(waveform, sample_rate) -> str``, ``s2t.transcribe(batch)``."""

    def __init__(self, model, tokenizer: Tokenizer, fbank: FbankConfig, cmvn: Optional[Tuple[np.ndarray, np.ndarray]],
                 device: str | torch.device = "cpu", method: str = "greedy", beam: Optional[BeamConfig] = None,
                 greedy: Optional[GreedyConfig] = None, fusion: Optional[Fusion] = None,
                 max_segment_s: float = MAX_SEGMENT_S, batch_size: int = 8, timing: str = "auto") -> None:
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if timing == "ctc" and getattr(model, "ctc_head", None) is None:
            raise AlignError("timing 'ctc' needs a model trained with the CTC head (loss.w_ctc > 0); "
                             "use 'transducer' or 'auto'")
        super().__init__(tokenizer, fbank, cmvn, getattr(model.frontend, "stride", 4),
                         int(getattr(model.frontend, "min_frames", 1)), max_segment_s, batch_size, timing)
        self.fusion = fusion
        if fusion is not None and fusion.lm is not None:
            if fusion.lm.vocab_size != model.cfg.vocab_size:
                raise LMError(f"the LM's vocabulary has {fusion.lm.vocab_size} pieces, the ASR model's "
                              f"{model.cfg.vocab_size}: an LM must be trained on the ASR model's tokenizer")
            fusion.lm.to(device).eval()
            if method != "beam":
                log.warning("an LM is given but --method %s: only beam search uses it", method)
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.method = method
        self.beam = beam or BeamConfig()
        self.greedy = greedy or GreedyConfig()

    @classmethod
    def from_dir(cls, path: str | Path, device: str | torch.device = "cpu", method: str = "greedy",
                 beam_size: int = 4, lm_dir: str | Path | None = None, lm_weight: Optional[float] = None,
                 ilm_weight: Optional[float] = None, max_segment_s: float = MAX_SEGMENT_S,
                 batch_size: int = 8, timing: str = "auto") -> "Speech2Text":
        """Load the model of a packed model directory or of an experiment directory; the parts
        are checked against each other (weights vs config, fbank vs model and CMVN) with errors
        naming the file at fault. Beam search fuses an LM: ``lm_dir`` (exp/lm_<tag>), else the
        packed directory's ``lm/``, with the weights given, else those packed with it
        (``lm/fusion.yaml``; 0 for an LM given by ``lm_dir``). ``timing``: where word times come
        from (``auto``: the CTC head if the model has one, else the transducer; ``ctc``;
        ``transducer``; ``off``: none, the search only)."""
        files = locate(path)
        ckpt = load_checkpoint(files.weights)
        try:
            model = model_from_config(files.config, str(files.weights))
        except (ValueError, TypeError) as e:
            raise ModelDirError(f"{files.config_path}: its model section does not build a model ({e})") from None
        try:
            model.load_state_dict(ckpt["model"])
        except RuntimeError as e:
            first = " ".join(str(e).split("\n\t")[:2]).replace("\n", " ")[:300]
            raise ModelDirError(f"{files.weights}: the weights do not fit the model {files.config_path} describes "
                                f"(was it edited?): {first}") from None
        tok = Tokenizer(files.tokenizer)
        check_vocab(tok, model.cfg.vocab_size, str(files.weights))
        fbank = FbankConfig.from_dict(files.fbank)
        cmvn = resolve_cmvn(files.cmvn) if files.cmvn else None
        check_frontend(files, fbank, model.cfg.feat_dim, cmvn, ckpt.get("fbank"))
        fusion = None
        packed = files.fusion or {}
        lm_src = lm_dir or files.lm
        if lm_src or ilm_weight:
            lm = load_lm(lm_src, device, vocab_size=model.cfg.vocab_size)[0] if lm_src else None
            default = packed if not lm_dir else {}
            fusion = Fusion(lm, default.get("lm_weight", 0.0) if lm_weight is None else lm_weight,
                            default.get("ilm_weight", 0.0) if ilm_weight is None else ilm_weight)
        return cls(model, tok, fbank, cmvn, device, method, BeamConfig(beam_size=beam_size), fusion=fusion,
                   max_segment_s=max_segment_s, batch_size=batch_size, timing=timing)

    @torch.no_grad()
    def _encode(self, feats: Sequence[np.ndarray], names: Sequence[str]):
        lens = torch.tensor([f.shape[0] for f in feats], dtype=torch.long)
        x = torch.zeros(len(feats), int(lens.max()), feats[0].shape[1])
        for j, f in enumerate(feats):
            x[j, : f.shape[0]] = torch.from_numpy(np.ascontiguousarray(f))
        enc, enc_lens = self.model.encode(x.to(self.device), lens.to(self.device))
        check_finite(enc, list(names), "transcribe")
        return enc, enc_lens

    def _search_encoded(self, enc: torch.Tensor, enc_lens: torch.Tensor) -> List[Hypothesis]:
        if self.method == "greedy":
            return greedy_search(self.model, enc, enc_lens, self.greedy)
        return beam_search(self.model, enc, enc_lens, self.beam, self.fusion)

    @torch.no_grad()
    def search(self, feats: Sequence[np.ndarray], names: Sequence[str]) -> List[Hypothesis]:
        """Pad, encode, then the greedy or beam search of stage 7."""
        return self._search_encoded(*self._encode(feats, names))

    @torch.no_grad()
    def timed_search(self, feats: Sequence[np.ndarray], names: Sequence[str], offsets: Sequence[float],
                     limits: Sequence[float]) -> List[Tuple[Hypothesis, List[Span], str]]:
        """The search, then each hypothesis aligned on its encoder output (``justkit.decode.align``:
        the CTC head's forced alignment or the transducer's best path, after any search)."""
        enc, enc_lens = self._encode(feats, names)
        hyps = self._search_encoded(enc, enc_lens)
        return [(h, *self._spans(enc[j, : int(enc_lens[j])], h.tokens, offsets[j], limits[j], names[j]))
                for j, h in enumerate(hyps)]

    def _spans(self, enc: torch.Tensor, tokens: List[int], offset: float, limit: float,
               name: str) -> Tuple[List[Span], str]:
        """The pieces of one decoded stretch with times (``offset`` seconds added, ends at most ``limit``)."""
        if self.timing == "off" or not tokens:
            return [], ""
        try:
            ali = align(self.model, enc, tokens, self.timing)
        except AlignError as e:
            log.warning("%s: no word timings (%s)", name, e)
            return [], ""
        pieces = [self.tokenizer.id_to_piece(t) for t in tokens]
        return piece_spans(pieces, ali, self.frame_seconds, offset, limit), ali.source
