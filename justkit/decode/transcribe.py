"""Transcribe audio with a trained model: ``Speech2Text.from_dir(path)(waveform, sample_rate) -> text``.

The front end is the recipe's: audio at any rate is resampled to the model's rate as stage 2
does (Kaiser-windowed sinc), then Kaldi fbank (stage 3's options) and the global CMVN; the
search is the stage-7 greedy or beam search. Each result carries its words with start, end and
confidence (``justkit.decode.align``: the CTC head's forced alignment where the model has one, else
the transducer's). The model directory is a packed one (``justkit.models.package``) or an
experiment directory.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

from justkit.data.dataset import resolve_cmvn
from justkit.decode.align import TIMINGS, AlignError, Span, align, piece_spans, words_of
from justkit.decode.beam import BeamConfig, beam_search
from justkit.decode.decoder import check_finite
from justkit.decode.fusion import Fusion
from justkit.decode.greedy import GreedyConfig, greedy_search
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
    ``transducer`` (the RNN-T lattice's Viterbi path), both joined by ``+`` when the pieces of
    a long file differ, or ``""`` when timings are off (``times``, ``words`` and ``spans`` are then
    empty; a stretch that cannot be aligned is left out of them with a warning naming it)."""

    text: str
    pieces: List[str] = field(default_factory=list)
    times: List[float] = field(default_factory=list)  # start of each piece, seconds from the start of the audio
    score: float = 0.0
    words: List[Span] = field(default_factory=list)
    spans: List[Span] = field(default_factory=list)   # the pieces with start, end and confidence
    timing: str = ""


class Speech2Text:
    """A model ready to transcribe: ``s2t(waveform, sample_rate) -> str``, ``s2t.transcribe(batch)``."""

    def __init__(self, model, tokenizer: Tokenizer, fbank: FbankConfig, cmvn: Optional[Tuple[np.ndarray, np.ndarray]],
                 device: str | torch.device = "cpu", method: str = "greedy", beam: Optional[BeamConfig] = None,
                 greedy: Optional[GreedyConfig] = None, fusion: Optional[Fusion] = None,
                 max_segment_s: float = MAX_SEGMENT_S, batch_size: int = 8, timing: str = "auto") -> None:
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if timing not in (*TIMINGS, "off"):
            raise ValueError(f"timing must be one of {(*TIMINGS, 'off')}, got {timing!r}")
        if timing == "ctc" and getattr(model, "ctc_head", None) is None:
            raise AlignError("timing 'ctc' needs a model trained with the CTC head (loss.w_ctc > 0); "
                             "use 'transducer' or 'auto'")
        self.timing = timing
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
        self.tokenizer = tokenizer
        self.fbank = fbank
        self.cmvn = cmvn
        self.method = method
        self.beam = beam or BeamConfig()
        self.greedy = greedy or GreedyConfig()
        if max_segment_s < 0 or batch_size < 1:
            raise ValueError(f"max_segment_s must be >= 0 and batch_size >= 1, got {max_segment_s}, {batch_size}")
        self.max_segment_s = float(max_segment_s)
        self.batch_size = int(batch_size)
        # seconds per encoder frame: the fbank hop times the subsampling
        self.frame_seconds = fbank.frame_shift_ms / 1000 * getattr(model.frontend, "stride", 4)

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

    # ------------------------------------------------------------------ front end
    def features(self, waveform, sample_rate: int, name: str = "") -> np.ndarray:
        """Resampled, fbank, CMVN: ``[T, D]`` float32, as the data loader feeds the model."""
        x = np.asarray(waveform.detach().cpu().numpy() if torch.is_tensor(waveform) else waveform, dtype=np.float32)
        if x.ndim != 1:
            raise ValueError(f"{name or 'waveform'}: expected 1-D mono samples, got shape {x.shape}")
        rate = int(self.fbank.sample_frequency)
        if int(sample_rate) != rate:
            x = resample(x, int(sample_rate), rate)
        feats = compute_fbank(x, self.fbank, rate, name or None)
        if self.cmvn is not None:
            mean, std = self.cmvn
            feats = (feats - mean) / std
        return np.asarray(feats, dtype=np.float32)

    # ------------------------------------------------------------------ search
    @torch.no_grad()
    def transcribe(self, batch: Sequence[Tuple[object, int]], names: Sequence[str] = ()) -> List[Transcript]:
        """``[(waveform, sample_rate), ...]`` -> one Transcript each (decoded together)."""
        if not batch:
            return []
        feats = [self.features(w, sr, names[i] if i < len(names) else "") for i, (w, sr) in enumerate(batch)]
        return self.transcribe_features(feats, names)

    def segments(self, feats: np.ndarray) -> List[Tuple[int, int]]:
        """``[(start, end), ...]`` frames: the whole utterance when it is at most ``max_segment_s``
        long, else pieces of at most that length, each cut at the quietest frame (lowest mean
        log-mel energy, smoothed over 0.1 s) of the last ``CUT_SEARCH`` of the piece, so that a
        cut rarely falls inside a word. Attention memory then grows with the piece, not the file."""
        n = feats.shape[0]
        hop = self.fbank.frame_shift_ms / 1000
        limit = int(self.max_segment_s / hop) if self.max_segment_s > 0 else 0
        if not limit or n <= limit:
            return [(0, n)]
        energy = feats.mean(axis=1)
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

    @torch.no_grad()
    def transcribe_features(self, feats: Sequence[np.ndarray], names: Sequence[str] = ()) -> List[Transcript]:
        """Features (as :meth:`features` gives them) -> one Transcript each. Long utterances are
        decoded in pieces (:meth:`segments`) and stitched; at most ``batch_size`` pieces go through
        the encoder at once. An utterance shorter than the model's subsampling needs gets an
        empty Transcript and a warning naming it."""
        names = [names[i] if i < len(names) and names[i] else f"#{i}" for i in range(len(feats))]
        min_frames = int(getattr(self.model.frontend, "min_frames", 1))
        hop = self.fbank.frame_shift_ms / 1000
        pieces = []  # (utterance index, start frame, features)
        for i, f in enumerate(feats):
            if f.shape[0] < min_frames:
                log.warning("%s: %d frames (%.3f s) is shorter than the %d frames the model needs; "
                            "empty hypothesis", names[i], f.shape[0], f.shape[0] * hop, min_frames)
                continue
            pieces += [(i, s, f[s:e]) for s, e in self.segments(f) if e - s >= min_frames]
        found: List[List[Tuple[int, object]]] = [[] for _ in feats]
        for b in range(0, len(pieces), self.batch_size):
            group = pieces[b : b + self.batch_size]
            lens = torch.tensor([g[2].shape[0] for g in group], dtype=torch.long)
            x = torch.zeros(len(group), int(lens.max()), group[0][2].shape[1])
            for j, (_, _, f) in enumerate(group):
                x[j, : f.shape[0]] = torch.from_numpy(np.ascontiguousarray(f))
            enc, enc_lens = self.model.encode(x.to(self.device), lens.to(self.device))
            check_finite(enc, [names[g[0]] for g in group], "transcribe")
            if self.method == "greedy":
                hyps = greedy_search(self.model, enc, enc_lens, self.greedy)
            else:
                hyps = beam_search(self.model, enc, enc_lens, self.beam, self.fusion)
            for j, ((i, start, f), h) in enumerate(zip(group, hyps)):
                spans, source = self._spans(enc[j, : int(enc_lens[j])], h.tokens, start * hop,
                                            (start + f.shape[0]) * hop, names[i])
                found[i].append((h, spans, source))
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
            words = words_of(spans, self.tokenizer.decode_pieces) if self.timing != "off" else []
            out.append(Transcript(self.tokenizer.decode(tokens) if tokens else "", pieces_,
                                  [s.start for s in spans], score, words, spans, "+".join(sources)))
        return out

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

    def __call__(self, waveform, sample_rate: int) -> str:
        """The text of one utterance (1-D float samples in [-1, 1] at ``sample_rate``)."""
        return self.transcribe([(waveform, sample_rate)])[0].text
