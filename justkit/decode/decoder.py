"""Decode a packed test set with one or more RNN-T searches and write the decode_<method>_<set> dirs."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from justkit.config import from_dict
from justkit.errors import JustkitError
from justkit.datadir.tables import write_table
from justkit.data.dataset import PackedDataset
from justkit.data.loader import Collate
from justkit.decode.beam import BeamConfig, beam_search
from justkit.decode.fusion import Fusion, check_weight, rescore_nbest
from justkit.decode.greedy import GreedyConfig, greedy_search
from justkit.decode.hyp import Hypothesis, check_model
from justkit.fileio import atomic_write_text
from justkit.progress import ProgressLog

log = logging.getLogger(__name__)

METHODS = ("greedy", "beam")
LM_MODES = ("fusion", "rescore")
FRAME_SHIFT_SEC = 0.01   # fbank hop: audio duration = frames x 10 ms


@dataclass
class DecodeConfig:
    """Stage 7 settings (``conf/decode.yaml``)."""

    methods: List[str] = field(default_factory=lambda: list(METHODS))
    batch_size: int = 16              # utterances per batch at most
    max_batch_frames: int = 40000     # padded feature frames per batch at most
    greedy: GreedyConfig = field(default_factory=GreedyConfig)
    beam: BeamConfig = field(default_factory=BeamConfig)
    # An external LM (justkit.bin.decode --lm_dir) in the beam search (justkit.decode.fusion):
    lm_weight: float = 0.0            # shallow-fusion weight of the LM (0: the LM is not used)
    ilm_weight: float = 0.0           # internal-LM subtraction weight (0: none)
    lm_mode: str = "fusion"           # fusion: inside the search; rescore: the beam's n-best re-ranked after it

    def __post_init__(self) -> None:
        self.lm_weight = check_weight("decode.lm_weight", self.lm_weight)
        self.ilm_weight = check_weight("decode.ilm_weight", self.ilm_weight)
        if self.lm_mode not in LM_MODES:
            raise ValueError(f"decode.lm_mode must be one of {LM_MODES}, got {self.lm_mode!r}")
        bad = [m for m in self.methods if m not in METHODS]
        if bad or not self.methods:
            raise ValueError(f"decode.methods: unknown {bad or 'empty list'}; choose from {list(METHODS)}")
        if self.batch_size < 1 or self.max_batch_frames < 1:
            raise ValueError("decode.batch_size and decode.max_batch_frames must be >= 1")

    @classmethod
    def from_dict(cls, d: Optional[dict]) -> "DecodeConfig":
        return from_dict(cls, d, "decode")

    def method_name(self, method: str, with_lm: bool) -> str:
        """The name of ``method``'s decode dirs: ``beam`` with an LM becomes ``beamlm`` whatever its
        weight (a dev-tuned weight of 0 is still that method's result), ``beamlmilm`` with
        internal-LM subtraction, ``resc`` appended when rescoring; ``beamilm`` without an LM.
        Scoring reads the name back (no underscore)."""
        if method != "beam" or not (with_lm or self.ilm_weight > 0):
            return method
        name = "beam" + ("lm" if with_lm else "") + ("ilm" if self.ilm_weight > 0 else "")
        return name + ("resc" if self.lm_mode == "rescore" else "")

    def fusion(self, lm: Any = None):
        """The :class:`justkit.decode.fusion.Fusion` of these settings with ``lm`` (a weight > 0
        without an LM is a FusionError)."""
        return Fusion(lm, self.lm_weight, self.ilm_weight)


def make_batches(lengths: Sequence[int], batch_size: int, max_batch_frames: int) -> List[List[int]]:
    """Indices grouped longest first, each batch within both limits (padding is small)."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: List[List[int]] = []
    cur: List[int] = []
    for i in order:
        # Sorted longest first, so the first item of a batch is its padded length.
        if cur and (len(cur) >= batch_size or lengths[cur[0]] * (len(cur) + 1) > max_batch_frames):
            batches.append(cur)
            cur = []
        cur.append(i)
    if cur:
        batches.append(cur)
    return batches


@dataclass
class SetOutput:
    """What one method produced on one set."""

    hyps: Dict[str, Hypothesis]
    seconds: float          # wall time: encoder + this search (+ feature loading)
    audio_seconds: float

    @property
    def rtf(self) -> float:
        return self.seconds / max(self.audio_seconds, 1e-9)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class NonFiniteModel(JustkitError, ValueError):
    """The model's encoder output is NaN or infinite: a search over it would be meaningless."""


def check_finite(enc: torch.Tensor, utts: Sequence[str], source: str = "") -> None:
    """Refuse to search non-finite encoder outputs (a poisoned model, or NaN features): a beam
    search never meets its stop test on NaN scores."""
    bad = ~torch.isfinite(enc).flatten(1).all(1)
    if bool(bad.any()):
        names = [u for u, b in zip(utts, bad.tolist()) if b]
        raise NonFiniteModel(f"{source}: utterance {names[0]}: the encoder output is NaN/inf "
                             f"({len(names)} of {len(utts)} in the batch); is the model or its features finite?")


@torch.no_grad()
def decode_dataset(
    model: Any, dataset: PackedDataset, cfg: DecodeConfig, device: str | torch.device = "cpu",
    desc: str = "decode", progress: bool = True, lm: Any = None,
) -> Dict[str, SetOutput]:
    """Run every method of ``cfg`` on ``dataset``; the encoder runs once per batch and its time
    counts towards every method's real-time factor (as if each method ran alone). ``progress``:
    a log line every 10 s (utterances done, x real time). ``lm``: an external LM
    (``justkit.models.lm``) that beam search fuses (or rescores with) by ``cfg.lm_weight``."""
    check_model(model)
    device = torch.device(device)
    model.eval()
    fusion = cfg.fusion(lm)
    collate = Collate()
    lengths = dataset.lengths
    hyps: Dict[str, Dict[str, Hypothesis]] = {m: {} for m in cfg.methods}
    # Too short for the model's subsampling: no encoder frame, so an empty hypothesis (scored
    # as deletions) and a warning naming it, instead of a failed batch.
    min_frames = int(getattr(getattr(model, "frontend", None), "min_frames", 1))
    usable = [i for i in range(len(lengths)) if int(lengths[i]) >= min_frames]
    if len(usable) < len(lengths):
        for i in sorted(set(range(len(lengths))) - set(usable)):
            utt = dataset.entries[i]["utt"]
            log.warning("%s: utterance %s: %d frames is shorter than the %d frames the model needs; "
                        "empty hypothesis", dataset.source, utt, int(lengths[i]), min_frames)
            for m in cfg.methods:
                hyps[m][utt] = Hypothesis([], 0.0)
    batches = [[usable[j] for j in b] for b in
               make_batches([lengths[i] for i in usable], cfg.batch_size, cfg.max_batch_frames)]
    secs = {m: 0.0 for m in cfg.methods}
    prog = ProgressLog(desc, len(lengths), logger=log) if progress else None
    for idx in batches:
        t0 = time.perf_counter()
        batch = collate([dataset[i] for i in idx])
        feats, feat_lens = batch["feats"].to(device), batch["feat_lens"].to(device)
        enc, enc_lens = model.encode(feats, feat_lens)
        check_finite(enc, batch["utts"], dataset.source)
        _sync(device)
        t_enc = time.perf_counter() - t0
        for m in cfg.methods:
            t1 = time.perf_counter()
            if m == "greedy":
                out = greedy_search(model, enc, enc_lens, cfg.greedy)
            else:
                out = run_beam(model, enc, enc_lens, cfg, fusion)
            _sync(device)
            secs[m] += t_enc + time.perf_counter() - t1
            for utt, h in zip(batch["utts"], out):
                hyps[m][utt] = h
        if prog is not None:
            prog.update(len(idx), float(batch["feat_lens"].sum()) * FRAME_SHIFT_SEC)
    if prog is not None and prog.done:
        prog.finish()
    audio = int(np.sum(lengths, dtype=np.int64)) * FRAME_SHIFT_SEC
    return {m: SetOutput(hyps[m], secs[m], audio) for m in cfg.methods}


def run_beam(model: Any, enc: torch.Tensor, enc_lens: torch.Tensor, cfg: DecodeConfig, fusion) -> List[Hypothesis]:
    """Beam search as ``cfg`` says: with the LM fused, or with its n-best rescored afterwards."""
    if cfg.lm_mode == "rescore" and fusion.active:
        wide = replace(cfg.beam, nbest=max(cfg.beam.nbest, cfg.beam.beam_size))
        return rescore_nbest(model, beam_search(model, enc, enc_lens, wide), fusion, cfg.beam.length_norm)
    return beam_search(model, enc, enc_lens, cfg.beam, fusion)


def write_decode_dir(
    out_dir: str | Path, dataset: PackedDataset, result: SetOutput, detokenize,
) -> None:
    """hyp.txt, ref.txt, scores.txt, utt2lang (Kaldi tables, sorted) and rtf.txt, each atomic."""
    out_dir = Path(out_dir)
    entries = {e["utt"]: e for e in dataset.entries}
    missing = [u for u in entries if u not in result.hyps]
    if missing:
        raise RuntimeError(f"{out_dir}: no hypothesis for utterance {missing[0]}")
    write_table(out_dir / "hyp.txt", {u: detokenize(h.tokens) for u, h in result.hyps.items()})
    write_table(out_dir / "ref.txt", {u: e["text"] for u, e in entries.items()})
    write_table(out_dir / "scores.txt", {u: f"{h.score:.4f}" for u, h in result.hyps.items()})
    write_table(out_dir / "utt2lang", {u: e["lang"] for u, e in entries.items()})
    atomic_write_text(
        out_dir / "rtf.txt",
        f"{result.rtf:.6f}\n# decode wall time {result.seconds:.3f} s / audio {result.audio_seconds:.3f} s "
        f"(frames x {FRAME_SHIFT_SEC * 1000:.0f} ms), {len(result.hyps)} utterances\n",
    )
