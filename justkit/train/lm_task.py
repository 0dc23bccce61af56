"""The LM training task (a justkit.train.unit.TrainTask): what the trainer needs to train a token LM.

```python
task = LMTask.resolve("conf/lm/lstm_mini.yaml", ["--train.max_epochs", "5"],
                      {"train": "dump/lm/train", "dev": "dump/lm/dev", "tokenizer": "data/token/spm.model"})
task.save("exp/lm_<tag>")                  # exp/lm_<tag>/config.yaml (task: lm)
Trainer(task, "exp/lm_<tag>", dist).train()
```
Sections: ``model`` (justkit.models.lm.LMConfig), ``data`` (justkit.data.text.TextDataConfig),
``train`` (justkit.train.config.TrainConfig), ``paths`` (:class:`LMPaths`); the dict every
checkpoint holds carries ``task: lm``, which ``justkit.models.lm.load_lm`` checks. Dev metrics:
the perplexity per token (the end boundary counted) of the dev sentences, all and per language.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence

import torch
from torch import nn

from justkit.config import ConfigError, apply_overrides, dump_yaml, from_dict, load_yaml, to_dict
from justkit.data.text import TextDataConfig, build_text_loader
from justkit.models.factory import CheckpointError, load_checkpoint
from justkit.models.lm import LMConfig, TokenLM, build_lm, lm_io
from justkit.text.tokenizer import Tokenizer
from justkit.train.config import TrainConfig

logger = logging.getLogger(__name__)
SECTIONS = ("task", "model", "data", "train", "paths")
CONFIG_NAME = "config.yaml"


@dataclasses.dataclass
class LMPaths:
    """Inputs of an LM experiment (relative to the recipe directory)."""

    config: str = ""      # the YAML it was resolved from
    train: str = ""       # packed LM text (justkit.bin.prepare_lm_text --pack)
    dev: str = ""         # packed dev sentences ("": no dev passes)
    tokenizer: str = ""   # the ASR experiment's sentencepiece model (stage 4)


class LMTask:
    """A token LM as a trainer task (docs/interfaces.md, "Trainer contract")."""

    def __init__(self, model: LMConfig, data: TextDataConfig, train: TrainConfig, paths: LMPaths) -> None:
        self.model_cfg, self.data, self.train, self.paths = model, data, train, paths
        self._dev_all = None   # rank 0's loader over the whole dev set (dev_metrics)

    # ------------------------------------------------------------------ config
    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "config") -> "LMTask":
        unknown = sorted(set(d) - set(SECTIONS))
        if unknown:
            raise ConfigError(f"{where}: unknown top-level key(s) {unknown}; known: {list(SECTIONS)}")
        if d.get("task", "lm") != "lm":
            raise ConfigError(f"{where}: task is {d.get('task')!r}, not an LM config")
        return cls(from_dict(LMConfig, d.get("model"), "model"), from_dict(TextDataConfig, d.get("data"), "data"),
                   from_dict(TrainConfig, d.get("train"), "train"), from_dict(LMPaths, d.get("paths"), "paths"))

    @property
    def config(self) -> dict:
        """The resolved config (saved in every checkpoint)."""
        return {"task": "lm", "model": to_dict(self.model_cfg), "data": to_dict(self.data),
                "train": to_dict(self.train), "paths": to_dict(self.paths)}

    @classmethod
    def resolve(cls, config: str | Path, overrides: Sequence[str] = (),
                paths: Optional[Mapping[str, str]] = None) -> "LMTask":
        """The LM task of YAML ``config`` with ``--section.key value`` overrides and ``paths``;
        ``model.vocab_size`` comes from the tokenizer."""
        raw = apply_overrides(load_yaml(config), overrides)
        raw.setdefault("model", {})
        p = dict(raw.get("paths") or {})
        p.update({k: str(v) for k, v in (paths or {}).items() if v is not None})
        p["config"] = str(config)
        raw["paths"] = p
        if p.get("tokenizer"):
            raw["model"]["vocab_size"] = int(Tokenizer(p["tokenizer"]).vocab_size)
        return cls.from_dict(raw, str(config))

    def save(self, exp_dir: str | Path) -> Path:
        path = Path(exp_dir) / CONFIG_NAME
        dump_yaml(self.config, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "LMTask":
        p = Path(path)
        p = p / CONFIG_NAME if p.is_dir() else p
        if not p.is_file():
            raise ConfigError(f"{p}: LM experiment config not found")
        return cls.from_dict(load_yaml(p), str(p))

    # ------------------------------------------------------------------ the contract
    def build_model(self) -> TokenLM:
        return build_lm(self.model_cfg)

    def train_loader(self, dist, pin_memory: bool = False):
        if not self.paths.train:
            raise ConfigError("paths.train: no packed LM text given (justkit.bin.prepare_lm_text --packed)")
        loader = build_text_loader(self.data, self.paths.train, dist.rank, dist.world_size, train=True,
                                   vocab_size=self.model_cfg.vocab_size, pin_memory=pin_memory)
        if dist.is_main:
            info = loader.dataset.info
            logger.info("LM text %s: %d sentences, %d tokens (%s)", self.paths.train, info["sentences"],
                        info["tokens"], " ".join(f"{l} {s['sentences']}" for l, s in sorted(info["per_lang"].items())))
        return loader

    def dev_loader(self, dist, pin_memory: bool = False):
        if not self.paths.dev:
            return None
        return build_text_loader(self.data, self.paths.dev, dist.rank, dist.world_size, train=False,
                                 vocab_size=self.model_cfg.vocab_size, pin_memory=pin_memory)

    @staticmethod
    def batch_frames(batch: Mapping[str, Any]) -> int:
        """Tokens predicted in the batch (each sentence's tokens and its end boundary), on the host."""
        return int(batch["token_lens"].sum()) + len(batch["utts"])

    @staticmethod
    def to_device(batch: Mapping[str, Any], device: torch.device) -> Dict[str, Any]:
        return {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}

    def init_from(self, model: nn.Module, path: str) -> None:
        """Start from the weights of LM checkpoint ``path`` (train.init: adapting an LM to new text)."""
        state = load_checkpoint(path, map_location="cpu")
        try:
            model.load_state_dict(state["model"])
        except RuntimeError as e:
            raise CheckpointError(f"{path}: weights do not fit this LM ({e})") from None
        logger.info("initialised the LM from %s (step %s)", path, state.get("step", "?"))

    def plot_references(self) -> Dict[str, tuple]:
        return {}

    @torch.no_grad()
    def dev_metrics(self, model, device: torch.device) -> Dict[str, float]:
        """``dev_ppl`` and ``dev_ppl_<lang>``: exp(NLL per token) over the dev sentences (rank 0)."""
        if not self.paths.dev:
            return {}
        if self._dev_all is None:
            self._dev_all = build_text_loader(self.data, self.paths.dev, train=False,
                                              vocab_size=self.model_cfg.vocab_size)
        self._dev_all.set_epoch(0)
        return perplexity(model, self._dev_all, device)


@torch.no_grad()
def perplexity(model: TokenLM, loader, device: torch.device | str = "cpu") -> Dict[str, float]:
    """{"dev_ppl": ..., "dev_ppl_<lang>": ...} of every batch of ``loader`` (one pass, eval mode)."""
    model = getattr(model, "module", model)   # a DDP-wrapped LM
    was_training = model.training
    model.eval()
    nll: Dict[str, float] = {}
    count: Dict[str, int] = {}
    for batch in loader:
        tokens, lens = batch["tokens"].to(device), batch["token_lens"].to(device)
        inp, tgt, mask = lm_io(tokens, lens)
        logits, _ = model.logits(inp)
        per_tok = torch.nn.functional.cross_entropy(logits.float().transpose(1, 2), tgt, reduction="none")
        per_sent = (per_tok * mask).sum(1).double().cpu().tolist()
        for lang, s, n in zip(batch["langs"], per_sent, (lens + 1).tolist()):
            nll[lang] = nll.get(lang, 0.0) + s
            count[lang] = count.get(lang, 0) + n
    model.train(was_training)
    if not count:
        return {}
    out = {"dev_ppl": math.exp(sum(nll.values()) / sum(count.values()))}
    out.update({f"dev_ppl_{l}": math.exp(nll[l] / count[l]) for l in sorted(count)})
    return out
