"""The model factory: one config -> one model; reading model files (checkpoints, averaged models).

Decoding, export and training all build models here, so ``justkit.decode`` never imports
``justkit.train``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch

from justkit.errors import JustkitError
from justkit.models.just import JUSTConfig, JUSTModel

# What every file written by the trainer or the averager holds (docs/interfaces.md).
REQUIRED_KEYS = ("model", "step", "epoch", "config")


class CheckpointError(JustkitError, RuntimeError):
    """A checkpoint file is missing, unreadable, or lacks required entries (message names it)."""


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Read one checkpoint (``weights_only``: tensors and plain containers only).

    Raises CheckpointError naming the file when it cannot be read or lacks required keys.
    """
    path = Path(path)
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: checkpoint not found") from None
    except Exception as e:  # truncated zip, bad pickle, ...: all mean "unreadable"
        raise CheckpointError(f"{path}: unreadable checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: not a justkit checkpoint (top level is {type(obj).__name__})")
    missing = [k for k in ("model", "config") if k not in obj]
    if missing:
        raise CheckpointError(f"{path}: not a justkit checkpoint, missing {missing}")
    return obj


def build_model(model_cfg: Mapping[str, Any] | JUSTConfig) -> JUSTModel:
    """The model a ``model:`` config section (or a :class:`JUSTConfig`) describes."""
    cfg = model_cfg if isinstance(model_cfg, JUSTConfig) else JUSTConfig.from_dict(model_cfg)
    return JUSTModel(cfg)


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[JUSTModel, dict]:
    """Rebuild the model from the config stored in checkpoint ``path`` and load its weights.

    Works for ``ckpt-<step>.pt`` and averaged ``model_avg.pt`` files. Returns (model in
    eval mode on ``device``, the experiment config dict stored with it).
    """
    ckpt = load_checkpoint(path, map_location="cpu")
    config = ckpt["config"]
    if not isinstance(config, Mapping) or "model" not in config:
        raise CheckpointError(f"{path}: its config has no 'model' section")
    model = build_model(config["model"])
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit the model its config describes: {e}") from e
    model.to(device)
    model.eval()
    return model, config
