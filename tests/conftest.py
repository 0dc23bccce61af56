"""Shared tiny fixtures: the tiny model config (``conf/model/tiny.yaml``) and a packed training set.

Each fixture returns a function (session scope, so module-scoped fixtures can use them too):

- ``tiny_model_config(mode="just", vocab_size=12, **overrides) -> dict``: the ``model:`` section of
  ``egs/TEMPLATE/conf/model/tiny.yaml`` with ``mode``, ``vocab_size`` and any other keys replaced;
- ``tiny_cfg(mode="just", vocab_size=12, **overrides) -> JUSTConfig``: the same, built;
- ``tiny_loss(**overrides) -> LossConfig``: tiny.yaml's ``loss:`` section with ``overrides``
  (``rnnt=`` a dict merged into ``loss.rnnt``);
- ``make_packed(d, n=20, seed=0, tokenizer=None, vocab=12, nan_utts=()) -> Path``: random 80-dim
  fbank in a kaldiio ark and a stage-5 packed jsonl over it (``tiny_words``: its vocabulary).
"""
from __future__ import annotations

import json
from pathlib import Path

import kaldiio
import numpy as np
import pytest

from justkit.config import load_yaml
from justkit.losses.terms import LossConfig
from justkit.models.just import JUSTConfig

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


@pytest.fixture(scope="session")
def tiny_words():
    """The words ``make_packed``'s transcripts are drawn from."""
    return list(WORDS)
