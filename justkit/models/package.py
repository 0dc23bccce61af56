"""A self-contained model directory: everything inference needs, in one place (stage 8 writes one).

```
<dir>/model.pt      weights only: {"model": averaged state dict, "config": experiment dict, "step", ...}
<dir>/config.yaml   the resolved experiment (its model section rebuilds the network)
<dir>/spm.model     the tokenizer
<dir>/cmvn.ark      global CMVN statistics (absent when the experiment used none)
<dir>/fbank.yaml    the front end (fbank: section; 16 kHz input)
<dir>/README.md     the model card: languages, data, configuration, results, revision, usage
<dir>/onnx/         encoder.onnx, decoder.onnx, joiner.onnx, tokens.txt (justkit.models.onnx)
```
``justkit.decode.transcribe.Speech2Text.from_dir`` and ``justkit.bin.transcribe`` read it; an
experiment directory (``exp/<tag>``, with ``config.yaml`` and ``model_avg.pt``) works too.
"""
from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from justkit.config import ConfigError, dump_yaml, load_yaml
from justkit.errors import JustkitError
from justkit.fileio import atomic_open, atomic_torch_save, atomic_write_text
from justkit.models.factory import CheckpointError, load_checkpoint
from justkit.provenance import git_revision

log = logging.getLogger(__name__)

FILES = ("model.pt", "config.yaml", "spm.model", "fbank.yaml")


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


def _copy(src: Path, dst: Path) -> None:
    with open(src, "rb") as fi, atomic_open(dst, "wb", encoding=None) as fo:
        shutil.copyfileobj(fi, fo)


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
        return ModelFiles(d / "model.pt", cfg, d / "spm.model", _named_cmvn(d, cfg), fb["fbank"], d / "config.yaml")
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


def _data_summary(jsonl: str) -> dict:
    """Hours and utterances per language, labelled and all, of a packed training set."""
    out: dict = {}
    p = Path(jsonl)
    if not jsonl or not p.is_file():
        return out
    with open(p, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            e = json.loads(line)
            s = out.setdefault(e["lang"], {"utts": 0, "hours": 0.0, "labelled_utts": 0, "labelled_hours": 0.0})
            h = e["num_frames"] / 100 / 3600
            s["utts"] += 1
            s["hours"] += h
            if e.get("labelled"):
                s["labelled_utts"] += 1
                s["labelled_hours"] += h
    return out


def model_card(exp_dir: Path, config: dict, num_params: int, revision: str, name: str) -> str:
    """README.md of a packed model."""
    m, paths = config["model"], config.get("paths", {})
    data = _data_summary(paths.get("train", ""))
    langs = sorted(data)
    lines = [f"# {name}\n",
             f"A justkit RNN-T model (`model.mode: {m['mode']}`), {num_params / 1e6:.2f}M parameters, "
             f"vocabulary {m['vocab_size']} word pieces.\n",
             "## Languages and training data\n"]
    if data:
        lines.append("| language | utterances | hours | labelled utterances | labelled hours |\n|---|---|---|---|---|\n")
        for lang in langs:
            s = data[lang]
            lines.append(f"| {lang} | {s['utts']} | {s['hours']:.2f} | {s['labelled_utts']} | {s['labelled_hours']:.2f} |\n")
        tot = {k: sum(data[l][k] for l in langs) for k in ("utts", "hours", "labelled_utts", "labelled_hours")}
        lines.append(f"| all | {tot['utts']} | {tot['hours']:.2f} | {tot['labelled_utts']} | {tot['labelled_hours']:.2f} |\n")
        lines.append(f"\nTraining set: `{paths.get('train')}` (packed by stage 5).\n")
    else:
        lines.append("The training set's packed file was not found when this model was packed.\n")
    lines.append("\n## Configuration\n\n")
    lines.append(f"Experiment `{exp_dir}`, config `{paths.get('config', '?')}` (resolved in `config.yaml`): "
                 f"d_model {m['d_model']}, {m['num_contrastive_blocks']} + {m['num_mlm_blocks']} conformer blocks, "
                 f"attention {m['conformer']['attention']}, w_u {m['w_u']}, RNN-T normalised per {m['rnnt_norm']}.\n")
    results = exp_dir / "RESULTS.md"
    if results.is_file():
        text = results.read_text(encoding="utf-8")
        i, j = text.find("## WER"), text.find("## CER")
        lines.append("\n## Results (from RESULTS.md)\n\n" + (text[i:j].replace("## WER", "Test WER (%):") if i >= 0 else ""))
    lines.append(f"\n## Provenance\n\njustkit revision `{revision}`.\n")
    lines.append(
        "\n## Use\n\n"
        "```sh\n"
        "python -m justkit.bin.transcribe --model_dir <this dir> audio.wav other.flac  # any rate soundfile reads\n"
        "python -m justkit.bin.transcribe --model_dir <this dir> --wav_scp wav.scp --out hyp.txt --method beam\n"
        "```\n\n"
        "```python\n"
        "from justkit.decode.transcribe import Speech2Text\n"
        "s2t = Speech2Text.from_dir(\"<this dir>\")\n"
        "text = s2t(waveform, sample_rate)      # 1-D float samples in [-1, 1]\n"
        "```\n\n"
        "`onnx/` holds the same model for ONNX Runtime (`justkit.models.onnx.OnnxTransducer`).\n")
    return "".join(lines)


def pack_model(exp_dir: str | Path, out_dir: str | Path, weights: str | Path | None = None,
               onnx: bool = False) -> Path:
    """Write the model directory of experiment ``exp_dir`` (its ``model_avg.pt`` unless
    ``weights``) to ``out_dir``; with ``onnx`` also export ``out_dir/onnx/``. Returns ``out_dir``."""
    from justkit.experiment import Experiment
    from justkit.models.factory import build_model

    exp_dir, out = Path(exp_dir), Path(out_dir)
    exp = Experiment.load(exp_dir)
    wpath = Path(weights) if weights else exp_dir / "model_avg.pt"
    ckpt = load_checkpoint(wpath)
    if exp.model.mode == "pretrain":
        raise ModelDirError(f"{exp_dir}: a pre-training (w2v-BERT) model has no RNN-T decoder to transcribe with")
    tok = Path(exp.paths.tokenizer)
    if not tok.is_file():
        raise ModelDirError(f"{exp_dir}/config.yaml: paths.tokenizer {tok} not found (run from the recipe directory)")
    fb = exp.frontend_config()
    if fb is None:
        raise ConfigError(f"{exp_dir}/config.yaml: paths.features has no conf/fbank.yaml (stage 3's options)")
    model = build_model(exp.model)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise CheckpointError(f"{wpath}: weights do not fit the model of {exp_dir}/config.yaml: {e}") from e
    out.mkdir(parents=True, exist_ok=True)
    config = exp.to_dict()
    atomic_torch_save({"model": model.state_dict(), "config": config, "step": ckpt.get("step", 0),
                       "epoch": ckpt.get("epoch", 0), "averaged_from": ckpt.get("averaged_from", []),
                       "fbank": dict(fb)},  # the front end trained with: transcribe checks fbank.yaml against it
                      out / "model.pt")
    dump_yaml(config, out / "config.yaml")
    _copy(tok, out / "spm.model")
    if exp.paths.cmvn:
        _copy(Path(exp.paths.cmvn), out / "cmvn.ark")
    elif (out / "cmvn.ark").exists() or (out / "cmvn.ark").is_symlink():
        (out / "cmvn.ark").unlink()  # an earlier pack's: this model has no CMVN
    dump_yaml({"fbank": fb}, out / "fbank.yaml")
    n = sum(p.numel() for p in model.parameters())
    atomic_write_text(out / "README.md", model_card(exp_dir, config, n, git_revision(), exp_dir.name))
    old_onnx = out / "onnx"
    if not onnx and (old_onnx.exists() or old_onnx.is_symlink()):
        old_onnx.unlink() if old_onnx.is_symlink() or not old_onnx.is_dir() else shutil.rmtree(old_onnx)  # an earlier pack's export (maybe another vocabulary): never beside this model
        log.info("%s: removed the onnx/ export of an earlier pack (pass --onnx to export this model)", out)
    if onnx:
        from justkit.models.onnx import export_onnx

        export_onnx(out, out / "onnx")
    log.info("packed %s (%s) -> %s", exp_dir, wpath.name, out)
    return out
