"""Shared tiny fixtures: the tiny model config (``conf/model/tiny.yaml``) and a packed training set.

Each fixture returns a function (session scope, so module-scoped fixtures can use them too):

- ``tiny_model_config(mode="just", vocab_size=12, **overrides) -> dict``: the ``model:`` section of
  ``egs/TEMPLATE/conf/model/tiny.yaml`` with ``mode``, ``vocab_size`` and any other keys replaced;
- ``tiny_cfg(mode="just", vocab_size=12, **overrides) -> JUSTConfig``: the same, built;
- ``tiny_loss(**overrides) -> LossConfig``: tiny.yaml's ``loss:`` section with ``overrides``
  (``rnnt=`` a dict merged into ``loss.rnnt``);
- ``make_packed(d, n=20, seed=0, tokenizer=None, vocab=12, nan_utts=()) -> Path``: random 80-dim
  fbank in a kaldiio ark and a stage-5 packed jsonl over it (``tiny_words``: its vocabulary);
- ``experiment`` (module scope): a tiny supervised ``exp/<tag>`` as stages 3-7 leave it (config.yaml,
  model_avg.pt, tokenizer, CMVN, 16 kHz FLAC audio), for the tests of using a trained model;
- ``speech_signal(seed, seconds, sr=16000) -> float32 samples``: speech-like test audio.
"""
from __future__ import annotations

import json
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import soundfile as sf
import torch

from justkit.config import dump_yaml, load_yaml
from justkit.experiment import Experiment
from justkit.fileio import atomic_torch_save
from justkit.frontend.cmvn import accumulate, write_cmvn
from justkit.frontend.fbank import FbankConfig, compute_fbank
from justkit.losses.terms import LossConfig
from justkit.models.just import JUSTConfig, JUSTModel
from justkit.text.tokenizer import TokenizerConfig, train_tokenizer

ROOT = Path(__file__).resolve().parents[1]
TINY_MODEL = ROOT / "egs" / "TEMPLATE" / "conf" / "model" / "tiny.yaml"
WORDS = ["ab", "cd", "ef", "gab", "hed", "fac", "bag", "dace", "cab", "be"]


def _tiny_model_config(mode: str = "just", vocab_size: int = 12, **over) -> dict:
    d = load_yaml(TINY_MODEL)["model"]
    d.update(mode=mode, vocab_size=vocab_size, **over)
    return d


def _tiny_loss(**over) -> LossConfig:
    d = load_yaml(TINY_MODEL)["loss"]
    d["rnnt"] = {**d["rnnt"], **over.pop("rnnt", {})}
    d.update(over)
    return LossConfig.from_dict(d)


def _make_packed(d: Path, n: int = 20, seed: int = 0, tokenizer=None, vocab: int = 12,
                 nan_utts: tuple[str, ...] = ()) -> Path:
    """Random 80-dim fbank in a kaldiio ark + a stage-5 style packed jsonl (some rows unlabelled)."""
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    mats, texts = {}, {}
    for i in range(n):
        utt = f"u{i:03d}"
        x = rng.standard_normal((int(rng.integers(40, 100)), 80)).astype(np.float32)
        if utt in nan_utts:
            x[5, 3] = np.nan
        mats[utt] = x
        texts[utt] = " ".join(rng.choice(WORDS, size=int(rng.integers(1, 3))))
    kaldiio.save_ark(str(d / "feats.ark"), mats, scp=str(d / "feats.scp"))
    scp = dict(line.split(None, 1) for line in (d / "feats.scp").read_text().splitlines())
    with open(d / "packed.jsonl", "w", encoding="utf-8") as f:
        for i, (utt, x) in enumerate(mats.items()):
            if tokenizer is not None:
                toks = tokenizer.encode(texts[utt])
            else:
                toks = rng.integers(2, vocab, size=int(rng.integers(2, 6))).tolist()
            f.write(json.dumps({"utt": utt, "feats": scp[utt].strip(), "num_frames": int(x.shape[0]),
                                "tokens": toks, "lang": "en" if i % 2 else "de",
                                "labelled": i % 5 != 0, "text": texts[utt]}) + "\n")
    return d / "packed.jsonl"


@pytest.fixture(scope="session")
def tiny_model_config():
    """``(mode="just", vocab_size=12, **overrides) -> dict``: the tiny model section."""
    return _tiny_model_config


@pytest.fixture(scope="session")
def tiny_cfg():
    """``(mode="just", vocab_size=12, **overrides) -> JUSTConfig``: the tiny model's config."""
    return lambda mode="just", **over: JUSTConfig.from_dict(_tiny_model_config(mode, **over))


@pytest.fixture(scope="session")
def tiny_loss():
    """``(**overrides) -> LossConfig``: the tiny model's loss section (``rnnt=`` merged into loss.rnnt)."""
    return _tiny_loss


@pytest.fixture(scope="session")
def make_packed():
    """``(d, n=20, seed=0, tokenizer=None, vocab=12, nan_utts=()) -> packed.jsonl path``."""
    return _make_packed


def _recipe_dir(r: Path) -> Path:
    """``r`` laid out as a recipe's stages 2-3 expect: ``utils`` -> the repository's, the mini
    recipe's ``conf/fbank.yaml``; the audio and data dirs are the caller's."""
    import shutil

    r.mkdir(parents=True, exist_ok=True)
    (r / "utils").symlink_to(ROOT / "utils")
    (r / "conf").mkdir()
    shutil.copy(ROOT / "egs/mls/conf/fbank.yaml", r / "conf/fbank.yaml")
    (r / "corpus").mkdir()
    return r


@pytest.fixture(scope="session")
def recipe_dir():
    """``(path) -> path``: a recipe-like dir (utils link, conf/fbank.yaml, an empty corpus/)."""
    return _recipe_dir


@pytest.fixture(scope="session")
def tiny_words():
    """The words ``make_packed``'s transcripts are drawn from."""
    return list(WORDS)


USE_TEXTS = {"en": [("en1", "the cat sat"), ("en2", "a dog ran"), ("en3", "the dog sat")],
         "pl": [("pl1", "kot i pies"), ("pl2", "pies i kot")]}


def _speech_signal(seed: int, seconds: float, sr: int = 16000) -> np.ndarray:
    """Speech-like test audio: a few harmonics with a slow envelope and a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = rng.uniform(100, 220)
    x = sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6)) / k for k in range(1, 6))
    x = x * (0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(1, 4) * t)) + 0.01 * rng.standard_normal(len(t))
    return (0.3 * x / np.abs(x).max()).astype(np.float32)


@pytest.fixture(scope="module")
def experiment(tmp_path_factory, tiny_model_config):
    """exp/<tag> as stages 3-7 leave it: config.yaml with paths, model_avg.pt; audio in 16 kHz FLAC."""
    d = tmp_path_factory.mktemp("use")
    tok = train_tokenizer(USE_TEXTS, d / "token", TokenizerConfig(vocab_size=20, hard_vocab_limit=False, model_type="bpe"))
    fb = FbankConfig()
    (d / "fbank/conf").mkdir(parents=True)
    dump_yaml({"fbank": fb.__dict__}, d / "fbank/conf/fbank.yaml")
    (d / "fbank/feat_dim").write_text("80\n")
    audio, feats = {}, {}
    for i, (u, _) in enumerate(x for v in USE_TEXTS.values() for x in v):
        audio[u] = d / "audio" / f"{u}.flac"
        audio[u].parent.mkdir(exist_ok=True)
        sf.write(audio[u], _speech_signal(i, 1.0 + 0.2 * i), 16000, subtype="PCM_16")
        x, sr = sf.read(audio[u], dtype="float32")
        feats[u] = compute_fbank(x, fb, sr, u)
    write_cmvn(d / "fbank/cmvn.ark", accumulate(feats.values()))
    kaldiio.save_ark(str(d / "fbank/feats.ark"), feats, scp=str(d / "fbank/feats.scp"))
    model_cfg = tiny_model_config("supervised", vocab_size=tok.vocab_size)
    exp = Experiment.from_dict({"model": model_cfg, "train": {"max_steps": 1}, "paths": {
        "tokenizer": str(d / "token/spm.model"), "cmvn": str(d / "fbank/cmvn.ark"), "features": str(d / "fbank")}})
    torch.manual_seed(0)
    model = JUSTModel(exp.model)
    with torch.no_grad():  # a decisive output layer, so that the searches emit tokens
        model.joint.out.weight.mul_(8.0)
        model.joint.out.bias[0] = -2.0
    exp_dir = d / "exp"
    exp.save(exp_dir)
    atomic_torch_save({"model": model.state_dict(), "config": exp.to_dict(), "step": 1, "epoch": 0},
                      exp_dir / "model_avg.pt")
    return {"dir": d, "exp": exp_dir, "audio": audio, "feats": feats, "model": model.eval(), "texts": USE_TEXTS}


@pytest.fixture(scope="session")
def speech_signal():
    """``(seed, seconds, sr=16000) -> float32 samples``: speech-like test audio."""
    return _speech_signal
