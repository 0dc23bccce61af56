"""Where a model's parts are: a packed model directory or an experiment directory (``locate``).

``justkit.models.package`` writes a packed directory; ``justkit.decode.transcribe`` and the ONNX
export (``justkit.models.onnx``) read one through ``locate``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from justkit.config import load_yaml
from justkit.errors import JustkitError

FILES = ("model.pt", "config.yaml", "spm.model", "fbank.yaml")
FUSION_FILE = "fusion.yaml"   # lm/fusion.yaml: the fusion weights a packed LM came with


class ModelDirError(JustkitError, ValueError):
    """A model directory is incomplete or does not fit together; names the file."""


@dataclass
class ModelFiles:
    """Where a model's parts are (a packed model directory or an experiment directory)."""

    weights: Path
    config: dict            # the experiment dict (model, data, train, paths)
    tokenizer: Path
    cmvn: Optional[Path]
    fbank: dict             # FbankConfig fields
    lm: Optional[Path] = None   # a packed LM (lm/model.pt) and the fusion weights it came with
    fusion: Optional[dict] = None


def locate(path: str | Path) -> ModelFiles:
    """The parts of the model in ``path``: a packed directory (``model.pt``) or an experiment
    directory (``config.yaml`` + ``model_avg.pt``, tokenizer/CMVN/front end from its paths)."""
    d = Path(path)
    if not d.is_dir():
        raise ModelDirError(f"{d}: not a directory (a packed model dir or exp/<tag>)")
    if (d / "model.pt").is_file():
        missing = [f for f in FILES if not (d / f).is_file()]
        if missing:
            raise ModelDirError(f"{d}: packed model directory lacks {missing}")
        cfg = load_yaml(d / "config.yaml")
        lm = d / "lm" / "model.pt"
        fusion = None
        if lm.is_file():
            fusion = (load_yaml(d / "lm" / FUSION_FILE).get("fusion") or {}) if (d / "lm" / FUSION_FILE).is_file() else {}
        return ModelFiles(d / "model.pt", cfg, d / "spm.model",
                          d / "cmvn.ark" if (d / "cmvn.ark").is_file() else None,
                          load_yaml(d / "fbank.yaml").get("fbank") or {},
                          lm if lm.is_file() else None, fusion)
    if (d / "config.yaml").is_file():
        # Read as a plain dict: the experiment's paths are all decoding needs.
        cfg = load_yaml(d / "config.yaml")
        paths = cfg.get("paths") or {}
        weights = d / "model_avg.pt"
        if not weights.is_file():
            raise ModelDirError(f"{weights}: not found (stage 7 averages the checkpoints into it)")
        tok = paths.get("tokenizer") or ""
        if not tok or not Path(tok).is_file():
            raise ModelDirError(f"{d}/config.yaml: paths.tokenizer {tok!r} not found "
                                "(run from the recipe directory, or pack the model: justkit.bin.pack_model)")
        fb = Path(paths.get("features") or "") / "conf" / "fbank.yaml"
        fbank = (load_yaml(fb).get("fbank") or {}) if paths.get("features") and fb.is_file() else {}
        return ModelFiles(weights, cfg, Path(tok), Path(paths["cmvn"]) if paths.get("cmvn") else None, fbank)
    raise ModelDirError(f"{d}: neither a packed model (model.pt) nor an experiment (config.yaml) directory")
