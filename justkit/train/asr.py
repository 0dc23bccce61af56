"""The speech recogniser's training task (a justkit.train.unit.TrainTask): the JUST model of an
experiment, its packed training and dev sets, features on the device, the greedy dev WER per
language, and initialisation from a pre-trained encoder."""
from __future__ import annotations

import logging
from typing import Any, Mapping, Optional

import numpy as np
import torch
from torch import nn

from justkit.config import ConfigError
from justkit.data.dataset import PackedDataset
from justkit.data.loader import ResumableDataLoader, build_loader, device_features
from justkit.decode.decoder import DecodeConfig, decode_dataset
from justkit.experiment import Experiment
from justkit.models.factory import build_model, load_checkpoint
from justkit.models.just import JUSTModel
from justkit.score.wer import score_tables
from justkit.text.tokenizer import Tokenizer
from justkit.train.distributed import DistInfo

logger = logging.getLogger(__name__)


class ASRTask:
    """Trains ``experiment``'s model on ``paths.train`` (dev: ``paths.dev``) with its CMVN and the
    fbank options stage 3 used (features computed by the loader or on the device for examples
    packed with audio)."""

    def __init__(self, experiment: Experiment | Mapping[str, Any]) -> None:
        if not isinstance(experiment, Experiment):
            experiment = Experiment.from_dict(experiment)
        if not experiment.paths.train:
            raise ConfigError("paths.train: no training set given (the packed jsonl of stage 5)")
        self.experiment = experiment
        self.config = experiment.to_dict()
        self.train = experiment.train
        self.fbank = experiment.frontend_config()
        self.model: Optional[JUSTModel] = None
        self._train_loader: Optional[ResumableDataLoader] = None
        self._dev: Optional[ResumableDataLoader] = None
        self._tokenizer: Optional[Tokenizer] = None

    def build_model(self) -> JUSTModel:
        self.model = build_model(self.experiment.model, self.experiment.loss)
        return self.model

    def train_loader(self, dist: DistInfo, pin_memory: bool) -> ResumableDataLoader:
        # A supervised model learns nothing from unlabelled utterances: leave them out.
        supervised_only = self.experiment.model.mode == "supervised"
        paths = self.experiment.paths
        loader = build_loader(self.experiment.data, paths.train, paths.cmvn or None, rank=dist.rank,
                              world_size=dist.world_size, train=True, labelled_only=supervised_only,
                              pin_memory=pin_memory, fbank=self.fbank)
        if dist.is_main:
            ds = loader.dataset
            logger.info("training set %s: %d utterances, %d labelled%s", paths.train, len(ds), int(ds.labelled.sum()),
                        " (unlabelled ones left out: supervised model)" if supervised_only else "")
        self._train_loader = loader
        return loader

    def dev_loader(self, dist: DistInfo, pin_memory: bool) -> Optional[ResumableDataLoader]:
        paths = self.experiment.paths
        if not paths.dev:
            return None
        self._dev = build_loader(self.experiment.data, paths.dev, paths.cmvn or None, rank=dist.rank,
                                 world_size=dist.world_size, train=False,
                                 max_frames=self.train.dev_max_frames or None, pin_memory=pin_memory,
                                 fbank=self.fbank)
        return self._dev

    def batch_frames(self, batch: Mapping[str, Any]) -> int:
        # Lengths are checked while still on the host: the step itself never waits for the device.
        if self.model is not None:
            padded = batch["feats"].size(1) if "feats" in batch else int(batch["feat_lens"].max())
            try:
                self.model.frontend.check_lengths(batch["feat_lens"], padded)
            except ValueError as e:
                raise ValueError(f"{e} (batch with {', '.join(batch.get('utts', [])[:4])} ...)") from None
        return int(batch["feat_lens"].sum())

    def to_device(self, batch: Mapping[str, Any], device: torch.device) -> dict:
        """The batch on ``device``; with data.features_on device, fbank + CMVN computed there."""
        out = {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}
        if "wave" in out:
            ds = self._train_loader.dataset
            out = device_features(out, ds.fbank, ds.cmvn)
        return out

    def init_from(self, model: nn.Module, path: str) -> None:
        state = load_checkpoint(path, map_location="cpu")
        loaded = model.load_pretrained_encoder(state["model"])
        logger.info("initialised the encoder from %s (step %s): %d tensors loaded", path,
                    state.get("step", "?"), len(loaded) if loaded is not None else -1)

    # ------------------------------------------------------------------ dev WER
    def plot_references(self) -> dict[str, tuple[float, str]]:
        """The codebook size on ``codebook_perplexity`` (its maximum: groups x entries) in JUST and
        w2v-BERT modes."""
        m = self.experiment.model
        if m.mode == "supervised":
            return {}
        q = m.quantizer
        return {"codebook_perplexity": (float(q.groups * q.entries),
                                        f"codebook size ({q.groups} x {q.entries})" if q.groups > 1
                                        else f"codebook size ({q.entries})")}

    def dev_metrics(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        """Greedy WER (%) on the dev set (``dev_wer_max_utts`` per language): ``dev_wer`` = the
        mean over languages (as the paper averages), ``dev_wer_<lang>`` per language, scored as
        stage 8 scores (justkit.score.wer)."""
        tok = self._dev_tokenizer()
        dev = self._dev
        if tok is None or getattr(model, "predictor", None) is None or dev is None:
            return {}
        ds = dev.dataset
        cap = self.train.dev_wer_max_utts
        keep = np.ones(len(ds), dtype=bool)
        if cap > 0:  # the first `cap` utterances of each language
            keep[:] = False
            for code in np.unique(ds.lang_codes):
                keep[np.nonzero(ds.lang_codes == code)[0][:cap]] = True
        sub = PackedDataset(ds.entries, cmvn=ds.cmvn, fbank=ds.fbank)
        sub.select(keep)
        sub.source = ds.source
        was_training = model.training
        out = decode_dataset(model, sub, DecodeConfig(methods=["greedy"]), device, progress=False)
        model.train(was_training)
        hyps = {u: tok.decode(h.tokens) for u, h in out["greedy"].hyps.items()}
        entries = list(sub.entries)
        res = score_tables({e["utt"]: e["text"] for e in entries}, hyps, {e["utt"]: e["lang"] for e in entries},
                           ref_name=f"{ds.source} (text)", hyp_name="dev greedy hypotheses")
        wers = {f"dev_wer_{lang}": r.wer for lang, r in res.by_lang().items()}
        wers["dev_wer"] = sum(wers.values()) / max(len(wers), 1)
        return wers

    def _dev_tokenizer(self) -> Optional[Tokenizer]:
        path = self.experiment.paths.tokenizer
        if self._tokenizer is None and path and self.train.dev_wer:
            self._tokenizer = Tokenizer(path)
        return self._tokenizer
