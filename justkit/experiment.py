"""One experiment: the model/data/train/paths sections, resolved once and saved as ``exp/<tag>/config.yaml``.

Stage 6 resolves it from the recipe's YAML, the command-line overrides and the files the
earlier stages wrote: the vocabulary size comes from the tokenizer, the feature dimension
from stage 3's fbank options (``<features>/conf/fbank.yaml``). Everything later (resuming,
decoding, packing a model) reads the saved file instead of asking again for the tokenizer,
CMVN or front-end settings.
"""
from __future__ import annotations

import dataclasses
import json
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


# ---------------------------------------------------------------------- identity of an experiment


@dataclasses.dataclass
class ConfigDiff:
    """How a newly resolved experiment differs from the one stored in an experiment dir:
    ``changes`` every differing key as ``"section.key: old -> new"``; ``conflicts`` those that
    make it another model (its checkpoints would not be this model's): any ``model:`` key, and a
    changed parameter set (names or shapes, e.g. a loss term's head turned on or off)."""

    changes: list[str]
    conflicts: list[str]


def _plain(x: Any) -> Any:
    """``x`` as YAML/JSON would store it (tuples as lists), so that a list read back from
    config.yaml equals the tuple of the dataclass it came from."""
    return json.loads(json.dumps(x, default=str))


def _leaf_diffs(old: Any, new: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new), key=str):
            out += _leaf_diffs(old.get(k), new.get(k), f"{prefix}{k}.")
        return out
    return [] if old == new else [(prefix.rstrip("."), old, new)]


def compare_configs(old: Mapping[str, Any], new: Mapping[str, Any]) -> ConfigDiff:
    """Key-level comparison of two resolved config dicts (any task, e.g. the LM's): every
    differing key is a change, the ``model:`` ones are also conflicts."""
    diffs = _leaf_diffs(_plain(dict(old)), _plain(dict(new)))
    changes = [f"{k}: {a!r} -> {b!r}" for k, a, b in diffs]
    return ConfigDiff(changes, [c for c, (k, _, _) in zip(changes, diffs) if k.startswith("model.")])


def _parameter_shapes(d: Mapping[str, Any]) -> dict[str, tuple]:
    """Names and shapes of the model a config dict describes, built on the meta device (no memory)."""
    import torch

    from justkit.models.factory import model_from_config

    with torch.device("meta"):
        model = model_from_config(d)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def compare_to_stored(exp_dir: str | Path, new: Experiment) -> Optional[ConfigDiff]:
    """How ``new`` differs from ``<exp_dir>/config.yaml`` (None when there is none). A stored
    config this justkit cannot read as an experiment is one conflict that names the file."""
    path = Path(exp_dir) / CONFIG_NAME
    if not path.is_file():
        return None
    try:
        stored = Experiment.load(path).to_dict()
    except (ConfigError, OSError, ValueError) as e:
        return ConfigDiff([], [f"{path} cannot be read as an experiment config ({e})"])
    old, cur = stored, new.to_dict()
    keyed = compare_configs(old, cur)
    changes, conflicts = keyed.changes, list(keyed.conflicts)
    try:
        before, after = _parameter_shapes(old), _parameter_shapes(cur)
    except Exception as e:  # a config the model cannot be built from: nothing to load into
        conflicts.append(f"the model of {path} cannot be rebuilt ({type(e).__name__}: {e})")
    else:
        gone = sorted(set(before) - set(after))
        added = sorted(set(after) - set(before))
        reshaped = sorted(k for k in set(before) & set(after) if before[k] != after[k])
        for what, keys in (("parameters no longer in the model", gone), ("new parameters", added)):
            if keys:
                conflicts.append(f"{what}: {', '.join(keys[:4])}{' ...' if len(keys) > 4 else ''} ({len(keys)})")
        for k in reshaped[:4]:
            conflicts.append(f"parameter {k}: shape {before[k]} -> {after[k]}")
    return ConfigDiff(changes, conflicts)


def has_trained(exp_dir: str | Path) -> bool:
    """True when the experiment dir holds anything trained with its config.yaml: checkpoints or an
    averaged model."""
    d = Path(exp_dir)
    return (d / "model_avg.pt").exists() or any((d / "checkpoints").glob("ckpt-*.pt"))


def _stage3_fbank(features_dir: str | Path) -> Optional[dict]:
    """The ``fbank:`` options stage 3 used for ``features_dir`` (its ``conf/fbank.yaml``), or None."""
    if not features_dir:
        return None
    path = Path(features_dir) / "conf" / "fbank.yaml"
    if not path.is_file():
        return None
    return load_yaml(path).get("fbank")
