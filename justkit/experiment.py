"""One experiment: the model/data/train/paths sections, resolved once and saved as ``exp/<tag>/config.yaml``.

Stage 6 resolves it from the recipe's YAML, the command-line overrides and the files the
earlier stages wrote: the vocabulary size comes from the tokenizer, the feature dimension
from stage 3's fbank options (``<features>/conf/fbank.yaml``). Everything later (resuming,
decoding, packing a model) reads the saved file instead of asking again for the tokenizer,
CMVN or front-end settings.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from justkit.config import ConfigError, apply_overrides, dump_yaml, from_dict, load_yaml, to_dict
from justkit.data.loader import DataConfig
from justkit.frontend.fbank import FbankConfig
from justkit.losses.terms import LossConfig
from justkit.models.just import JUSTConfig, migrate_legacy_config
from justkit.text.tokenizer import Tokenizer
from justkit.train.config import TrainConfig

logger = logging.getLogger(__name__)
SECTIONS = ("model", "loss", "data", "train", "paths")
CONFIG_NAME = "config.yaml"
FBANK_NAME = "fbank.yaml"


@dataclasses.dataclass
class PathsConfig:
    """Where the experiment's inputs are; relative paths are relative to the recipe directory
    (where run.sh runs every stage)."""

    config: str = ""      # the YAML the experiment was resolved from
    train: str = ""       # packed training examples (stage 5)
    dev: str = ""         # packed dev examples ("": no dev passes)
    tokenizer: str = ""   # sentencepiece model (stage 4)
    cmvn: str = ""        # global CMVN statistics (stage 3; "": none)
    features: str = ""    # stage 3's dir of the training set: its conf/fbank.yaml (features and their dimension)


@dataclasses.dataclass
class Experiment:
    """The resolved config of one experiment (docs/interfaces.md, "Experiment")."""

    model: JUSTConfig
    loss: LossConfig
    data: DataConfig
    train: TrainConfig
    paths: PathsConfig = dataclasses.field(default_factory=PathsConfig)
    # The experiment dir it was loaded from (not part of the config): its fbank.yaml, the copy
    # stage 6 keeps of stage 3's options, is what decoding and packing read first.
    exp_dir: Optional[str] = dataclasses.field(default=None, compare=False, repr=False)

    # ------------------------------------------------------------------ dicts and files
    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "config") -> "Experiment":
        """Build and check every section; an unknown section or key is a ConfigError naming it."""
        if not isinstance(d, Mapping):
            raise ConfigError(f"{where}: an experiment config must be a mapping of sections {SECTIONS}")
        unknown = sorted(set(d) - set(SECTIONS))
        if unknown:
            raise ConfigError(f"{where}: unknown top-level key(s) {unknown}; known: {list(SECTIONS)}")
        if "model" not in d:
            raise ConfigError(f"{where}: no 'model' section (include: [model/mini.yaml]?)")
        return cls(
            model=JUSTConfig.from_dict(d.get("model")),
            loss=LossConfig.from_dict(d.get("loss")),
            data=from_dict(DataConfig, d.get("data"), "data"),
            train=from_dict(TrainConfig, d.get("train"), "train"),
            paths=from_dict(PathsConfig, d.get("paths"), "paths"),
        )

    def to_dict(self) -> dict:
        return {name: (self.loss.to_dict() if name == "loss" else to_dict(getattr(self, name))) for name in SECTIONS}

    def save(self, exp_dir: str | Path) -> Path:
        """Write ``<exp_dir>/config.yaml`` (atomically)."""
        path = Path(exp_dir) / CONFIG_NAME
        dump_yaml(self.to_dict(), path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Experiment":
        """Read an experiment dir's ``config.yaml`` (``path`` may be the dir or the file)."""
        p = Path(path)
        if p.is_dir():
            p = p / CONFIG_NAME
        if not p.is_file():
            raise ConfigError(f"{p}: experiment config not found (stage 6 writes it)")
        raw, moved = migrate_legacy_config(load_yaml(p))
        if moved:
            logger.warning("%s: written by an earlier justkit; read in today's shape: model.%s",
                           p, ", model.".join(moved))
        exp = cls.from_dict(raw, str(p))
        exp.exp_dir = str(p.parent)
        return exp

    # ------------------------------------------------------------------ resolving
    @classmethod
    def resolve(
        cls,
        config: str | Path,
        overrides: Sequence[str] = (),
        paths: Optional[Mapping[str, str]] = None,
    ) -> "Experiment":
        """The experiment of YAML ``config`` with ``--section.key value`` ``overrides`` and the
        stage outputs in ``paths`` (PathsConfig fields): vocab_size from the tokenizer, feat_dim
        from stage 3's fbank options (``<features>/conf/fbank.yaml``), each an error when the
        model config gives a different value."""
        raw = apply_overrides(load_yaml(config), overrides)
        raw.setdefault("model", {})
        if not isinstance(raw["model"], dict):
            raise ConfigError(f"{config}: model: must be a mapping of JUSTConfig keys")
        p = dict(raw.get("paths") or {})
        p.update({k: str(v) for k, v in (paths or {}).items() if v is not None})
        p["config"] = str(config)
        raw["paths"] = p
        tok = p.get("tokenizer")
        if tok:
            raw["model"]["vocab_size"] = int(Tokenizer(tok).vocab_size)
        fb = _stage3_fbank(p.get("features", ""))
        if fb is not None:
            dim = FbankConfig.from_dict(fb).dim
            given = raw["model"].get("feat_dim")
            if given is not None and given != dim:
                raise ConfigError(
                    f"{config}: model.feat_dim {given} disagrees with the features it trains on: "
                    f"{p['features']}/conf/fbank.yaml gives {dim}-dim fbank (leave model.feat_dim out: "
                    f"it comes from the fbank options)")
            raw["model"]["feat_dim"] = dim
        return cls.from_dict(raw, str(config))

    # ------------------------------------------------------------------ what later stages need
    def frontend_config(self) -> Optional[dict]:
        """The fbank options stage 3 used, or None if unknown: the experiment's own copy
        (``<exp>/fbank.yaml``, written by stage 6 with :meth:`save_frontend`) when loaded from an
        experiment dir that has one, else ``<features>/conf/fbank.yaml``."""
        if self.exp_dir:
            own = Path(self.exp_dir) / FBANK_NAME
            if own.is_file():
                return load_yaml(own).get("fbank")
        return _stage3_fbank(self.paths.features)

    def save_frontend(self, exp_dir: str | Path) -> Optional[Path]:
        """Copy stage 3's fbank options to ``<exp_dir>/fbank.yaml`` (atomically), so the features the
        model was trained on (stored, or computed on the fly by the loader) travel with it; None
        when stage 3's dir has no options file."""
        path = Path(self.paths.features) / "conf" / "fbank.yaml" if self.paths.features else None
        if path is None or not path.is_file():
            return None
        fb = load_yaml(path).get("fbank")
        out = Path(exp_dir) / FBANK_NAME
        dump_yaml({"fbank": fb}, out)
        return out


def _stage3_fbank(features_dir: str | Path) -> Optional[dict]:
    """The ``fbank:`` options stage 3 used for ``features_dir`` (its ``conf/fbank.yaml``), or None."""
    if not features_dir:
        return None
    path = Path(features_dir) / "conf" / "fbank.yaml"
    if not path.is_file():
        return None
    return load_yaml(path).get("fbank")
