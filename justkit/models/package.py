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
from justkit.models.modeldir import FILES, ModelDirError, ModelFiles, locate  # noqa: F401 (importable from here too)
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


def model_card(exp_dir: Path, config: dict, num_params: int, revision: str, name: str) -> str:
    """README.md of a packed model."""
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
    out.mkdir(parents=True, exist_ok=True)
    config = exp.to_dict()
    atomic_torch_save({"model": model.state_dict(), "config": config, "step": ckpt.get("step", 0),
                       "epoch": ckpt.get("epoch", 0), "averaged_from": ckpt.get("averaged_from", [])},
                      out / "model.pt")
    dump_yaml(config, out / "config.yaml")
    _copy(tok, out / "spm.model")
    if exp.paths.cmvn:
        _copy(Path(exp.paths.cmvn), out / "cmvn.ark")
    dump_yaml({"fbank": fb}, out / "fbank.yaml")
    n = sum(p.numel() for p in model.parameters())
    atomic_write_text(out / "README.md", model_card(exp_dir, config, n, git_revision(), exp_dir.name))
    if onnx:
        export_onnx(out, out / "onnx")
    log.info("packed %s (%s) -> %s", exp_dir, wpath.name, out)
    return out
