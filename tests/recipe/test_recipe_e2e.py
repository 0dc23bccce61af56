"""egs/mls/run.sh stages 1-12 (9-12: --use_lm true) end to end on two languages of the embedded mini-MLS corpus.

The recipe is copied into tmp_path (so the checkout's egs/mls/{data,dump,exp} are left
alone) and run as a user runs it, with a tiny model trained for a few dozen steps: this
pins that every stage reads what the one before wrote, not the WER (see README for the
full mini run's figures).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import sys
import subprocess
from pathlib import Path

import numpy as np
import pytest

from justkit.datadir.tables import read_table
from justkit.datadir.validate import validate_data_dir
from justkit.experiment import Experiment

ROOT = Path(__file__).resolve().parents[2]

TINY_CONFIG = """\
include: [model/tiny.yaml]
model:
  mode: just
data:
  max_frames: 3000
  buckets: 4
  num_workers: 0
  seed: 0
train:
  max_epochs: 100
  max_steps: 24
  log_interval: 4
  save_interval: 8
  keep_last: 3
  average_last: 2
  seed: 0
  plots: true
  optim: {name: adam, peak_lr: 2.0e-3, warmup_steps: 8}
"""


def _recipe_copy(tmp_path: Path) -> Path:
    egs = tmp_path / "egs" / "mls"
    # The recipe shares files with egs/TEMPLATE through relative links: copy both.
    for name in ("mls", "TEMPLATE"):
        shutil.copytree(ROOT / "egs" / name, tmp_path / "egs" / name, symlinks=True,
                        ignore=shutil.ignore_patterns("data", "dump", "exp", "downloads"))
    (tmp_path / "utils").symlink_to(ROOT / "utils")  # where their utils links point
    (egs / "conf/train_e2e.yaml").write_text(TINY_CONFIG)
    (egs / "conf/pretrain_e2e.yaml").write_text(TINY_CONFIG.replace("mode: just", "mode: pretrain"))
    return egs


def _run(egs: Path, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    env = dict(os.environ, JUSTKIT_ROOT=str(ROOT), JUSTKIT_NO_INSTALL="1")
    return subprocess.run(["bash", "run.sh", *args], cwd=egs, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.slow
def test_run_sh_stages_1_to_8(tmp_path):
    egs = _recipe_copy(tmp_path)
    # Stored features as Kaldi compressed matrices (conf/fbank_compressed.yaml, full MLS's disk
    # option; float32 is what the stage tests and the raw test compare against).
    import yaml

    plain, small = (yaml.safe_load((egs / f"conf/{n}.yaml").read_text())["fbank"] for n in ("fbank", "fbank_compressed"))
    assert small.pop("storage") == "compressed" and plain.pop("storage") == "float32" and small == plain
    r = _run(egs, "--langs", "en pl", "--nj", "2", "--config", "conf/train_e2e.yaml",
             "--labelled_subset", "9h", "--fbank_config", "conf/fbank_compressed.yaml")
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-6000:]
    for s in range(1, 9):
        assert f"stage {s} done" in log, f"stage {s} did not report\n{log[-3000:]}"

    # stage 1: valid Kaldi data dirs with both languages in the combined train set
    assert validate_data_dir(egs / "data/train") == []
    assert set(read_table(egs / "data/train/utt2lang").values()) == {"en", "pl"}
    # stage 2: 16 kHz FLAC; stage 3: fbank of every set, CMVN
    wav = next(iter(read_table(egs / "dump/raw/test_pl/wav.scp").values()))
    import soundfile as sf

    assert sf.info(str(egs / wav)).samplerate == 16000
    for s in ("train", "dev", "test_en", "test_pl", "test_cs"):
        assert (egs / f"dump/fbank/{s}/feats.scp").is_file(), s
    assert (egs / "dump/fbank/train/cmvn.ark").is_file()
    assert "storage: compressed" in (egs / "dump/fbank/train/conf/fbank.yaml").read_text()
    frames = sum(int(v) for v in read_table(egs / "dump/fbank/train/utt2num_frames").values())
    ark_bytes = sum(p.stat().st_size for p in (egs / "dump/fbank/train/data").glob("feats.*.ark"))
    assert ark_bytes < 0.3 * frames * 80 * 4  # about a quarter of float32
    # stage 4-5: tokenizer; only the 9h lists stay labelled in train
    assert (egs / "data/token/spm.model").is_file()
    rows = [json.loads(x) for x in (egs / "dump/packed/train.jsonl").read_text().splitlines()]
    n_lab = sum(r["labelled"] for r in rows)
    n_9h = sum(len(read_table(egs / f"data/train_{l}_9h/text")) for l in ("en", "pl"))
    assert n_lab == n_9h and 0 < n_lab < len(rows)
    from justkit.data.manifest import PackedIndex

    idx = PackedIndex.open(egs / "dump/packed/train.jsonl")  # stage 5's index, mapped
    assert isinstance(idx.rows, np.memmap) and idx.lengths.tolist() == [r["num_frames"] for r in rows]
    # stage 6: checkpoints, csv, plots; every loss term logged
    exp = egs / "exp/train_e2e"
    assert sorted(p.name for p in (exp / "checkpoints").glob("ckpt-*.pt"))
    header = (exp / "train.csv").read_text().splitlines()[0]
    for term in ("rnnt", "contrastive", "diversity", "mlm", "lr"):
        assert term in header
    assert (exp / "plots/rnnt.png").is_file() and (exp / "plots/lr.png").is_file()
    # stage 7: averaged model and hypotheses for every test set incl. code-switching
    assert (exp / "model_avg.pt").is_file()
    for s in ("test_en", "test_pl", "test_cs"):
        hyp = read_table(exp / f"decode_greedy_{s}/hyp.txt", allow_empty_value=True)
        ref = read_table(exp / f"decode_greedy_{s}/ref.txt")
        assert set(hyp) == set(ref)
    # stage 8: per-language table and the paper layout
    results = (exp / "RESULTS.md").read_text()
    assert "| method | en | pl | avg | cs |" in results and "| greedy |" in results and "| beam |" in results
    assert "justkit revision: `" in results and "command: `" in results and "machine: " in results
    # the command as typed, shell-quoted: copying it reruns the same thing (the language list stays one word)
    import shlex

    cmd = re.search(r"^- command: `(.*)`$", results, re.M).group(1)
    assert shlex.split(cmd) == ["run.sh", "--langs", "en pl", "--nj", "2", "--config", "conf/train_e2e.yaml",
                                "--labelled_subset", "9h", "--fbank_config", "conf/fbank_compressed.yaml"]
    assert (exp / "paper_table.md").read_text().strip()
    # the console shows where the log is and a heartbeat per log interval
    assert "log: exp/train_e2e/log/train.log" in r.stdout
    assert re.search(r"\[train\] step 4 epoch \d+ \| loss [0-9.]+ \| lr ", r.stdout), r.stdout[-2000:]
    assert "[train] dev at step" in r.stdout and "\r" not in (exp / "log/decode.log").read_text()
    # TensorBoard events beside train.csv, readable, with the logged terms
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(exp / "tensorboard"))
    ea.Reload()
    tags = ea.Tags()["scalars"]
    assert {"train/loss", "train/rnnt", "train/lr", "dev/loss", "dev/dev_wer"} <= set(tags), tags
    assert [e.step for e in ea.Scalars("train/loss")] == [4, 8, 12, 16, 20, 24]
    assert (exp / "plots/overview.png").is_file() and (exp / "plots/dev_wer.png").is_file()

    # stage 8 packed the model: transcribing the test audio with it gives stage 7's greedy text
    model = exp / "model"
    for f in ("model.pt", "config.yaml", "spm.model", "cmvn.ark", "fbank.yaml", "README.md",
              "onnx/encoder.onnx", "onnx/decoder.onnx", "onnx/joiner.onnx", "onnx/tokens.txt"):
        assert (model / f).is_file(), f
    card = (model / "README.md").read_text()
    assert "| en |" in card and "| pl |" in card and "justkit revision" in card and "transcribe" in card
    wav = egs / "dump/raw/test_en/wav.scp"
    r = subprocess.run([sys.executable, "-m", "justkit.bin.transcribe", "--model_dir", str(model), "--wav_scp", str(wav),
                        "--out", str(tmp_path / "hyp.txt"), "--ctm", str(tmp_path / "hyp.ctm")], cwd=egs,
                       capture_output=True, text=True, timeout=300, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert r.returncode == 0, r.stderr
    got = read_table(tmp_path / "hyp.txt", allow_empty_value=True)
    assert got == read_table(exp / "decode_greedy_test_en/hyp.txt", allow_empty_value=True)
    assert "RTF" in r.stderr
    ctm = [line.split() for line in (tmp_path / "hyp.ctm").read_text().splitlines()]
    assert all(len(c) == 6 and float(c[2]) >= 0 and float(c[3]) > 0 for c in ctm)
    assert bool(ctm) == any(got.values()), (ctm, got)  # lines exactly when there are words (24 updates: maybe none)
    words: dict = {}
    for c in ctm:   # a word CTM: the words of each hypothesis, in order
        words.setdefault(c[0], []).append(c[4])
    assert {u: " ".join(w) for u, w in words.items()} == {u: " ".join(t.split()) for u, t in got.items() if t}
    # the same on 48 kHz originals (resampled as stage 2 does): the audio differs by the
    # 16-bit rounding of stage 2's FLAC only, so most utterances decode alike
    orig = read_table(egs / "data/test_en/wav.scp")
    from justkit.decode.transcribe import Speech2Text
    from justkit.frontend.audio import load_audio

    s2t = Speech2Text.from_dir(model)
    same = sum(s2t(*load_audio(orig[u])) == got[u] for u in list(orig)[:6])
    assert same >= 4, same
    # ONNX Runtime greedy search gives the PyTorch greedy tokens (raw fbank in: CMVN is inside)
    import kaldiio

    from justkit.models.onnx import OnnxTransducer
    from justkit.text.tokenizer import Tokenizer

    ort_model = OnnxTransducer(model / "onnx")
    tok = Tokenizer(model / "spm.model")
    feats = read_table(egs / "dump/fbank/test_en/feats.scp")
    utts = sorted(feats)[:8]
    hyps = ort_model.greedy_search([kaldiio.load_mat(str(egs / feats[u])) for u in utts])
    assert [tok.decode(h) for h in hyps] == [got[u] for u in utts]

    # --use_lm true: stages 9-12 (LM text without dev/test sentences, a tiny LM by the trainer, the
    # dev grid and the fused test decode, the packed model with its LM)
    r = _run(egs, "--langs", "en pl", "--stage", "9", "--use_lm", "true", "--config", "conf/train_e2e.yaml",
             "--lm_args", "--model.embed_dim 16 --model.hidden_dim 16 --model.num_layers 1 --train.max_epochs 0 "
             "--train.max_steps 6 --train.log_interval 2 --train.plots false",
             "--lm_weights", "0 0.4", "--decode_args", "--decode.beam.beam_size 2")
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-6000:]
    for s in range(9, 13):
        assert f"stage {s} done" in log, f"stage {s} did not report\n{log[-3000:]}"
    lm_text = set(read_table(egs / "data/lm_train/text").values())
    held = {t for d in ("dev", "test_en", "test_pl") for t in read_table(egs / f"data/{d}/text").values()}
    assert len(lm_text) > 500 and not lm_text & held
    assert (egs / "exp/lm_lstm_mini/model_avg.pt").is_file() and "dev_ppl_pl" in (egs / "exp/lm_lstm_mini/train.csv").read_text()
    tune = yaml.safe_load((exp / "lm_tune_lm_lstm_mini/best.yaml").read_text())["tune"]
    assert tune["lm_weight"] in (0, 0.4)
    assert (exp / "decode_beamlm_test_pl/hyp.txt").is_file() and "| beamlm |" in (exp / "RESULTS.md").read_text()
    assert (model / "lm/model.pt").is_file() and "## Language model" in (model / "README.md").read_text()
    r = subprocess.run([sys.executable, "-m", "justkit.bin.transcribe", "--model_dir", str(model), "--method", "beam",
                        "--beam_size", "2", "--wav_scp", str(wav), "--out", str(tmp_path / "hyp_lm.txt")], cwd=egs,
                       capture_output=True, text=True, timeout=300, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert r.returncode == 0, r.stderr
    assert sorted(read_table(tmp_path / "hyp_lm.txt", allow_empty_value=True)) == sorted(got)

    # w2v-BERT pre-training through the recipe: stage 7 averages and skips decoding, stage 8
    # skips scoring; then JUST+finetune from its model_avg.pt (--init) trains and decodes
    r = _run(egs, "--langs", "en pl", "--stage", "6", "--config", "conf/pretrain_e2e.yaml")
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert "nothing to decode" in r.stdout and (egs / "exp/pretrain_e2e/model_avg.pt").is_file()
    assert not list((egs / "exp/pretrain_e2e").glob("decode_*"))
    r = _run(egs, "--langs", "en pl", "--stage", "6", "--stop_stage", "7", "--config", "conf/train_e2e.yaml",
             "--tag", "just_ft", "--init", "exp/pretrain_e2e/model_avg.pt")
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert "initialised the encoder from exp/pretrain_e2e/model_avg.pt" in (egs / "exp/just_ft/log/train.log").read_text()
    assert (egs / "exp/just_ft/decode_beam_test_pl/hyp.txt").is_file()

    # re-running a finished stage is safe: stage 5 again gives byte-identical packs
    before = (egs / "dump/packed/train.jsonl").read_bytes()
    r = _run(egs, "--langs", "en pl", "--stage", "5", "--stop_stage", "5", "--labelled_subset", "9h")
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert (egs / "dump/packed/train.jsonl").read_bytes() == before

    # Experiment identity: --print_config prints the resolved config and writes nothing; a run that
    # would make another model in a trained exp dir is refused on the console before anything is
    # written; --train_args without --tag give their own exp dir (ESPnet's rule).
    stage6 = ("--langs", "en pl", "--stage", "6", "--stop_stage", "6", "--config", "conf/train_e2e.yaml")
    r = _run(egs, *stage6, "--print_config", "true", "--train_args", "--model.d_model 24")
    assert r.returncode == 0 and "d_model: 24" in r.stdout and "vocab_size:" in r.stdout, r.stderr[-2000:]
    assert not list((egs / "exp").glob("train_e2e_*"))
    cfg_before = (egs / "exp/train_e2e/config.yaml").read_bytes()
    log_before = (egs / "exp/train_e2e/log/train.log").read_bytes()
    r = _run(egs, *stage6, "--tag", "train_e2e", "--train_args", "--model.d_model 24")
    assert r.returncode != 0 and "model.d_model: 32 -> 24" in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert (egs / "exp/train_e2e/config.yaml").read_bytes() == cfg_before
    assert (egs / "exp/train_e2e/log/train.log").read_bytes() == log_before
    r = _run(egs, *stage6, "--train_args", "--model.d_model 24 --train.max_steps 2")
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    new = egs / "exp/train_e2e_model.d_model24_train.max_steps2"
    assert Experiment.load(new).model.d_model == 24 and (new / "checkpoints/ckpt-2.pt").is_file()

    # Languages come from the data: the same audio relabelled with two made-up codes (ISO 639's
    # local-use range) goes through stages 4-8 and gets its own columns and average.
    relabel = {"en": "qaa", "pl": "qab"}
    for d in ("data/train", "dump/fbank/train", "dump/fbank/dev"):
        u2l = read_table(egs / d / "utt2lang")
        (egs / d / "utt2lang").write_text("".join(f"{u} {relabel[l]}\n" for u, l in u2l.items()))
    for old, new in relabel.items():
        src, dst = egs / f"dump/fbank/test_{old}", egs / f"dump/fbank/test_{new}"
        shutil.copytree(src, dst)
        u2l = read_table(dst / "utt2lang")
        (dst / "utt2lang").write_text("".join(f"{u} {new}\n" for u in u2l))
    r = _run(egs, "--langs", "qaa qab", "--stage", "4", "--codeswitch", "false", "--config", "conf/train_e2e.yaml",
             "--tag", "relabelled", "--train_args", "--train.max_steps 3", "--decode_args", "--decode.methods [greedy]")
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    exp = egs / "exp/relabelled"
    assert "| method | qaa | qab | avg |" in (exp / "RESULTS.md").read_text()
    assert json.loads((exp / "results.json").read_text())["average"]["greedy"]["langs"] == ["qaa", "qab"]
    assert not list(exp.glob("decode_beam_*"))  # --decode_args reached the decoder
    assert Experiment.load(exp).train.max_steps == 3  # --train_args reached the trainer


@pytest.mark.slow
def test_run_sh_feats_type_raw(tmp_path):
    """--feats_type raw: stage 3 stores no features (frame counts and CMVN from on-the-fly fbank in
    dump/onthefly/), stage 5 packs audio entries, stages 6-7 compute fbank in the loader, stage 8
    scores and packs a model whose transcribe gives stage 7's greedy text."""
    egs = _recipe_copy(tmp_path)
    r = _run(egs, "--langs", "en pl", "--nj", "2", "--config", "conf/train_e2e.yaml", "--feats_type", "raw",
             "--codeswitch", "false", "--paper_table", "false", "--train_args", "--train.max_steps 8",
             "--decode_args", "--decode.methods [greedy]")
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-6000:]
    for s in range(1, 9):
        assert f"stage {s} done" in log, f"stage {s} did not report\n{log[-3000:]}"
    assert not (egs / "dump/fbank").exists()
    for s in ("train", "dev", "test_en", "test_pl"):
        d = egs / "dump/onthefly" / s
        assert not (d / "feats.scp").exists(), s
        assert [p.name for p in d.glob("*.ark")] == (["cmvn.ark"] if s == "train" else []), s
        assert not (d / "data").exists(), s
        frames = read_table(d / "utt2num_frames")
        assert frames and set(frames) == set(read_table(d / "wav.scp")), s
    rows = [json.loads(x) for x in (egs / "dump/packed/test_en.jsonl").read_text().splitlines()]
    assert rows and all(r["feats"] is None and r["audio"].startswith("dump/raw/test_en/") for r in rows)
    exp = egs / "exp/train_e2e_train.max_steps8"  # --train_args are part of the default tag
    assert (exp / "fbank.yaml").is_file() and (exp / "model/fbank.yaml").is_file()
    results = json.loads((exp / "results.json").read_text())
    assert results["average"]["greedy"]["langs"] == ["en", "pl"]
    assert 0.0 <= results["average"]["greedy"]["wer"] <= 100.0  # 8 steps: a WER, not a good one
    assert "| greedy |" in (exp / "RESULTS.md").read_text()
    wav = egs / "dump/raw/test_en/wav.scp"
    r = subprocess.run([sys.executable, "-m", "justkit.bin.transcribe", "--model_dir", str(exp / "model"),
                        "--wav_scp", str(wav), "--out", str(tmp_path / "hyp.txt")], cwd=egs,
                       capture_output=True, text=True, timeout=300, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert r.returncode == 0, r.stderr
    got = read_table(tmp_path / "hyp.txt", allow_empty_value=True)
    want = read_table(exp / "decode_greedy_test_en/hyp.txt", allow_empty_value=True)
    assert got == want


def test_run_sh_rejects_unknown_option(tmp_path):
    egs = _recipe_copy(tmp_path)
    r = _run(egs, "--no_such_option", "1", timeout=120)
    assert r.returncode != 0
    assert "unknown option --no_such_option" in r.stderr
