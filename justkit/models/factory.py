"""The model factory: one config -> one model; reading model files (checkpoints, averaged models).

Decoding, export and training all build models here, so ``justkit.decode`` never imports
``justkit.train``.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

import torch

from justkit.errors import JustkitError
from justkit.losses.terms import LossConfig
from justkit.models.just import JUSTConfig, JUSTModel, migrate_legacy_config

logger = logging.getLogger(__name__)

# What every file written by the trainer or the averager holds (docs/interfaces.md).
REQUIRED_KEYS = ("model", "step", "epoch", "config")


class CheckpointError(JustkitError, RuntimeError):
    """A checkpoint file is missing, unreadable, or lacks required entries (message names it)."""


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", mmap: bool = False) -> dict:
    """Read one checkpoint (``weights_only``: tensors and plain containers only).

    ``mmap``: map the file instead of reading it; a tensor's bytes are read when it is first
    touched, so taking only ``["model"]`` never reads the optimizer state (checkpoint averaging).
    Raises CheckpointError naming the file when it cannot be read or lacks required keys.
    """
    path = Path(path)
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
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


def build_model(model_cfg: Mapping[str, Any] | JUSTConfig,
                loss_cfg: Mapping[str, Any] | LossConfig | None = None) -> JUSTModel:
    """The model a ``model:`` config section (or a :class:`JUSTConfig`) describes, with the heads
    of the loss terms its ``loss:`` section turns on (None: the defaults)."""
    cfg = model_cfg if isinstance(model_cfg, JUSTConfig) else JUSTConfig.from_dict(model_cfg)
    loss = loss_cfg if isinstance(loss_cfg, LossConfig) else LossConfig.from_dict(loss_cfg)
    return JUSTModel(cfg, loss)


def model_from_config(config: Mapping[str, Any], where: str = "config") -> JUSTModel:
    """The (untrained) model of an experiment config dict as stored in checkpoints, packed models
    and ``config.yaml`` (its ``model:`` and ``loss:`` sections). A config of an earlier justkit,
    with the loss keys under ``model:``, is read in today's shape (a warning names the keys)."""
    if not isinstance(config, Mapping) or not isinstance(config.get("model"), Mapping):
        raise CheckpointError(f"{where}: its config has no 'model' section")
    config, moved = migrate_legacy_config(config)
    if moved:
        logger.warning("%s: written by an earlier justkit; read in today's shape: model.%s",
                       where, ", model.".join(moved))
    return build_model(config["model"], config.get("loss"))


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[JUSTModel, dict]:
    """Rebuild the model from the config stored in checkpoint ``path`` and load its weights.

    Works for ``ckpt-<step>.pt`` and averaged ``model_avg.pt`` files. Returns (model in
    eval mode on ``device``, the experiment config dict stored with it, in today's shape).
    """
    ckpt = load_checkpoint(path, map_location="cpu")
    model = model_from_config(ckpt["config"], str(path))
    config, _ = migrate_legacy_config(ckpt["config"])
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit the model its config describes: {e}") from e
    model.to(device)
    model.eval()
    return model, config
