"""A self-contained model directory: everything inference needs, in one place (stage 8 writes one).

```
<dir>/model.pt      weights only: {"model": averaged state dict, "config": experiment dict, "step", ...}
<dir>/config.yaml   the resolved experiment (its model section rebuilds the network)
<dir>/spm.model     the tokenizer
<dir>/cmvn.ark      global CMVN statistics (absent when the experiment used none)
<dir>/fbank.yaml    the front end (fbank: section; 16 kHz input)
<dir>/README.md     the model card: languages, data, configuration, results, revision, usage
<dir>/onnx/         encoder.onnx, decoder.onnx, joiner.onnx, tokens.txt (justkit.models.onnx)
<dir>/lm/           with --lm_dir: model.pt (the LM, justkit.models.lm), fusion.yaml (the weights beam search uses)
```
``justkit.decode.transcribe.Speech2Text.from_dir`` and ``justkit.bin.transcribe`` read it (through
``justkit.models.modeldir.locate``); an experiment directory (``exp/<tag>``, with ``config.yaml`` and
``model_avg.pt``) works too.
"""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from justkit.config import ConfigError, dump_yaml
from justkit.experiment import Experiment
from justkit.fileio import atomic_open, atomic_torch_save, atomic_write_text
from justkit.models.factory import CheckpointError, build_model, load_checkpoint
from justkit.models.lm import check_weight, load_lm
from justkit.models.modeldir import (FILES, FUSION_FILE, ModelDirError, ModelFiles,  # noqa: F401 (importable from here too)
                                     check_frontend, locate)
from justkit.models.onnx import export_onnx
from justkit.provenance import git_revision

log = logging.getLogger(__name__)


def _copy(src: Path, dst: Path) -> None:
    with open(src, "rb") as fi, atomic_open(dst, "wb", encoding=None) as fo:
        shutil.copyfileobj(fi, fo)


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


def lm_card(lm_path: Path, lm_config: dict, num_params: int, fusion: dict) -> str:
    """The model card's section on the packed LM: which LM, and the weights its results used."""
    m = lm_config.get("model", {})
    paths = lm_config.get("paths", {})
    return ("\n## Language model\n\n"
            f"`lm/model.pt`: a token-level {m.get('arch', '?').upper()} LM (`justkit.models.lm`), "
            f"{num_params / 1e6:.2f}M parameters, {m.get('num_layers')} x {m.get('hidden_dim')}, over the same "
            f"{m.get('vocab_size')} word pieces; from `{lm_path}`, trained on `{paths.get('train', '?')}` "
            f"(dev `{paths.get('dev', '') or 'none'}`). Beam search fuses it with `lm_weight` "
            f"{fusion['lm_weight']:g} and internal-LM weight {fusion['ilm_weight']:g} (`lm/{FUSION_FILE}`; "
            "chosen on dev); the `beamlm` results above used it with these weights (other `beamlm*` rows, "
            "if any, with their own), `greedy` and `beam` did not.\n")


def model_card(exp_dir: Path, config: dict, num_params: int, revision: str, name: str, lm_section: str = "") -> str:
    """README.md of a packed model (``lm_section``: :func:`lm_card` of a packed LM)."""
    m, paths = config["model"], config.get("paths", {})
    loss = config.get("loss") or {}
    rnnt = loss.get("rnnt") or {}
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
                 f"attention {m['conformer']['attention']}, w_u {loss.get('w_u')}, RNN-T loss {rnnt.get('type')} "
                 f"normalised per {rnnt.get('norm')}.\n")
    results = exp_dir / "RESULTS.md"
    if results.is_file():
        text = results.read_text(encoding="utf-8")
        i, j = text.find("## WER"), text.find("## CER")
        lines.append("\n## Results (from RESULTS.md)\n\n" + (text[i:j].replace("## WER", "Test WER (%):") if i >= 0 else ""))
    if lm_section:
        lines.append(lm_section)
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
        "`onnx/` (when packed with `--onnx`) holds the same model for ONNX Runtime, with the same front door: "
        "`justkit.models.onnx.OnnxTransducer.from_dir(\"<this dir>\")(waveform, sample_rate)`, or "
        "`transcribe --backend onnx` (greedy search, CPU).\n")
    return "".join(lines)


def pack_model(exp_dir: str | Path, out_dir: str | Path, weights: str | Path | None = None,
               onnx: bool = False, lm_dir: str | Path | None = None, lm_weight: float = 0.0,
               ilm_weight: float = 0.0) -> Path:
    """Write the model directory of experiment ``exp_dir`` (its ``model_avg.pt`` unless
    ``weights``) to ``out_dir``; with ``onnx`` also export ``out_dir/onnx/``; with ``lm_dir`` (an
    LM over the same vocabulary) also ``out_dir/lm/`` and the fusion weights. Returns ``out_dir``."""
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
    model = build_model(exp.model, exp.loss)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise CheckpointError(f"{wpath}: weights do not fit the model of {exp_dir}/config.yaml: {e}") from e
    lm_section = ""
    if lm_dir:
        fusion = {"lm_weight": check_weight("lm_weight", lm_weight), "ilm_weight": check_weight("ilm_weight", ilm_weight)}
        lm, lm_config, lm_path = load_lm(lm_dir, vocab_size=exp.model.vocab_size)
        lm_section = lm_card(lm_path, lm_config, sum(p.numel() for p in lm.parameters()), fusion)
    out.mkdir(parents=True, exist_ok=True)
    if lm_dir:
        (out / "lm").mkdir(exist_ok=True)
        atomic_torch_save({"model": lm.state_dict(), "config": lm_config, "step": 0, "epoch": 0}, out / "lm" / "model.pt")
        dump_yaml({"fusion": {**fusion, "lm": str(lm_path)}}, out / "lm" / FUSION_FILE)
    elif (out / "lm").is_dir():   # an LM packed before into this directory is not this model's any more
        shutil.rmtree(out / "lm")
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
    atomic_write_text(out / "README.md", model_card(exp_dir, config, n, git_revision(), exp_dir.name, lm_section))
    old_onnx = out / "onnx"
    if not onnx and (old_onnx.exists() or old_onnx.is_symlink()):
        old_onnx.unlink() if old_onnx.is_symlink() or not old_onnx.is_dir() else shutil.rmtree(old_onnx)  # an earlier pack's export (maybe another vocabulary): never beside this model
        log.info("%s: removed the onnx/ export of an earlier pack (pass --onnx to export this model)", out)
    if onnx:
        export_onnx(out, out / "onnx")
    log.info("packed %s (%s) -> %s", exp_dir, wpath.name, out)
    return out
