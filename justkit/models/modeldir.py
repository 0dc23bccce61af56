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
    config_path: Optional[Path] = None  # the config.yaml read
    lm: Optional[Path] = None   # a packed LM (lm/model.pt) and the fusion weights it came with
    fusion: Optional[dict] = None


def _read_config(path: Path) -> dict:
    cfg = load_yaml(path)
    if not isinstance(cfg, dict) or not isinstance(cfg.get("model"), dict):
        raise ModelDirError(f"{path}: empty, or without a model: section (not a justkit experiment config)")
    return cfg


def _named_cmvn(d: Path, cfg: dict) -> Optional[Path]:
    """The packed dir's cmvn.ark when its config names CMVN statistics (an error when it is
    missing or not a plain file: decoding without the CMVN the model was trained with would
    silently give wrong results), else None."""
    named = (cfg.get("paths") or {}).get("cmvn")
    p = d / "cmvn.ark"
    if not named:
        return None
    if p.is_symlink() or not p.is_file():
        what = "a symbolic link" if p.is_symlink() else "missing"
        raise ModelDirError(f"{p}: {what}, but {d / 'config.yaml'} says the model was trained with CMVN "
                            f"({named}); a packed model dir holds its own copy (re-run justkit.bin.pack_model)")
    return p


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
        cfg = _read_config(d / "config.yaml")
        fb = load_yaml(d / "fbank.yaml")
        if not isinstance(fb, dict) or not isinstance(fb.get("fbank"), dict):
            raise ModelDirError(f"{d / 'fbank.yaml'}: expected an fbank: section")
        lm = d / "lm" / "model.pt"
        fusion = None
        if lm.is_file():
            fusion = (load_yaml(d / "lm" / FUSION_FILE).get("fusion") or {}) if (d / "lm" / FUSION_FILE).is_file() else {}
        return ModelFiles(d / "model.pt", cfg, d / "spm.model", _named_cmvn(d, cfg), fb["fbank"], d / "config.yaml",
                          lm if lm.is_file() else None, fusion)
    if (d / "config.yaml").is_file():
        # Read as a plain dict: the experiment's paths are all decoding needs.
        cfg = _read_config(d / "config.yaml")
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
        cmvn = Path(paths["cmvn"]) if paths.get("cmvn") else None
        if cmvn is not None and not cmvn.is_file():
            raise ModelDirError(f"{d}/config.yaml: paths.cmvn {cmvn} not found (run from the recipe directory)")
        return ModelFiles(weights, cfg, Path(tok), cmvn, fbank, d / "config.yaml")
    raise ModelDirError(f"{d}: neither a packed model (model.pt) nor an experiment (config.yaml) directory")


FRONTEND_KEYS = ("sample_frequency", "frame_length_ms", "frame_shift_ms", "num_mel_bins", "low_freq", "high_freq")


def check_frontend(files: ModelFiles, fbank, feat_dim: int, cmvn=None, recorded: Optional[dict] = None) -> None:
    """The front end must be the one the model was trained on: fbank's mel bins = the model's
    input dim = the CMVN dim, and (when the weights record it, as packed models do) the same
    rate and framing as training. Raises ModelDirError naming the file."""
    where = files.config_path.parent / "fbank.yaml" if files.config_path and files.weights.name == "model.pt" \
        else "the experiment's conf/fbank.yaml"
    if fbank.num_mel_bins != feat_dim:
        raise ModelDirError(f"{where}: num_mel_bins {fbank.num_mel_bins} but the model takes {feat_dim}-dim features")
    if cmvn is not None and cmvn[0].shape[0] != feat_dim:
        raise ModelDirError(f"{files.cmvn}: CMVN statistics of dim {cmvn[0].shape[0]}, the model takes {feat_dim}")
    if recorded:
        diff = [k for k in FRONTEND_KEYS if k in recorded and float(recorded[k]) != float(getattr(fbank, k))]
        if diff:
            k = diff[0]
            raise ModelDirError(f"{where}: {k} {getattr(fbank, k):g} but the model was trained with "
                                f"{float(recorded[k]):g} ({files.weights})")
