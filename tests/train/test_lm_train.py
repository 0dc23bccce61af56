"""LM training with the trainer (justkit.bin.train_lm, LMTask): dev perplexity falls, resume is exact,
the averaged LM loads for decoding."""
from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch
import yaml

from justkit.data.text import pack_text
from justkit.models.lm import load_lm
from justkit.text.tokenizer import TokenizerConfig, train_tokenizer
from justkit.train import checkpoint as C
from justkit.train.distributed import DistInfo
from justkit.train.lm_task import LMTask, perplexity
from justkit.train.trainer import Trainer

SUBJ = {"en": ["the cat", "a dog", "my father", "the girl"], "pl": ["kot", "pies", "mój ojciec", "dziewczyna"]}
VERB = {"en": ["sees", "reads", "eats"], "pl": ["widzi", "czyta", "je"]}
OBJ = {"en": ["the bread", "a book", "the fish"], "pl": ["chleb", "książkę", "rybę"]}


def _sentences(lang: str):
    return [f"{s} {v} {o}" for s in SUBJ[lang] for v in VERB[lang] for o in OBJ[lang]]


def _data_dir(d: Path, rows) -> Path:
    d.mkdir(parents=True)
    rows = sorted(rows)
    (d / "text").write_text("".join(f"{u} {t}\n" for u, _, t in rows), encoding="utf-8")
    (d / "utt2lang").write_text("".join(f"{u} {l}\n" for u, l, _ in rows), encoding="utf-8")
    return d


@pytest.fixture(scope="module")
def lm_data(tmp_path_factory):
    """A tiny templated text: 36 sentences per language; dev = every 6th of them, held out."""
    d = tmp_path_factory.mktemp("lmtrain")
    train, dev = [], []
    for lang in ("en", "pl"):
        for i, s in enumerate(_sentences(lang)):
            (dev if i % 6 == 0 else train).append((f"{lang}_{i:03d}", lang, s))
    tok = train_tokenizer({l: [(u, t) for u, ll, t in train + dev if ll == l] for l in ("en", "pl")},
                          d / "token", TokenizerConfig(vocab_size=60, hard_vocab_limit=False))
    for name, rows in (("train", train), ("dev", dev)):
        src = _data_dir(d / "data" / name, rows)
        pack_text(src / "text", src / "utt2lang", tok, d / "packed" / name)
    conf = d / "lm.yaml"
    conf.write_text(yaml.safe_dump({
        "model": {"arch": "lstm", "embed_dim": 32, "hidden_dim": 32, "num_layers": 1, "dropout": 0.0},
        "data": {"max_tokens": 120, "buckets": 2, "lang_alpha": 0.5, "seed": 0},
        "train": {"max_steps": 60, "max_epochs": 0, "log_interval": 10, "dev_interval": 20, "save_interval": 20,
                  "keep_last": 3, "average_last": 2, "best_metric": "loss", "dev_wer": False,
                  "grad_balance_interval": 0, "plots": False, "tensorboard": True,
                  "optim": {"peak_lr": 1e-2, "warmup_steps": 5}}}))
    return d


def _rows(exp: Path, split: str):
    with open(exp / "train.csv", encoding="utf-8") as f:
        return [r for r in csv.DictReader(f) if r["split"] == split]


def test_lm_training_lowers_dev_perplexity(lm_data, tmp_path):
    from justkit.bin.average import main as average
    from justkit.bin.train_lm import main as train_lm

    exp = tmp_path / "lm_tiny"
    args = ["--config", str(lm_data / "lm.yaml"), "--exp", str(exp), "--train_data", str(lm_data / "packed/train"),
            "--dev_data", str(lm_data / "packed/dev"), "--tokenizer", str(lm_data / "token/spm.model")]
    assert train_lm(args) == 0
    task = LMTask.load(exp)
    torch.manual_seed(task.train.seed)
    fresh = perplexity(task.build_model(), task.dev_loader(DistInfo()), "cpu")["dev_ppl"]
    dev = _rows(exp, "dev")
    assert int(dev[-1]["step"]) == 60 and len(dev) >= 3
    ppl = [float(r["dev_ppl"]) for r in dev]
    assert all(f"dev_ppl_{l}" in dev[0] for l in ("en", "pl"))
    assert ppl[-1] < ppl[0] < fresh and ppl[-1] < 0.5 * fresh, (fresh, ppl)
    assert all(float(r["dev_ppl_pl"]) > 1 for r in dev)
    # throughput is counted in tokens; every checkpoint holds the LM's config
    assert float(_rows(exp, "train")[-1]["frames_per_s"]) > 0
    ckpt = torch.load(C.list_checkpoints(exp / "checkpoints")[-1], weights_only=True)
    assert ckpt["config"]["task"] == "lm" and LMTask.from_dict(ckpt["config"]).config == task.config
    assert list((exp / "tensorboard").iterdir())
    # averaged by dev loss, loaded for decoding: better than the untrained LM on dev
    assert average(["--exp", str(exp), "--out", str(exp / "model_avg.pt"), "--by", "loss"]) == 0
    lm, _, _ = load_lm(exp, vocab_size=task.model_cfg.vocab_size)
    assert perplexity(lm, task.dev_loader(DistInfo()), "cpu")["dev_ppl"] < 0.5 * fresh
    # a dev sentence is more probable than the same words shuffled
    held = "the cat sees the bread"
    from justkit.text.tokenizer import Tokenizer

    tok = Tokenizer(lm_data / "token/spm.model")
    good, bad = lm.sequence_logprob([tok.encode(held), tok.encode("bread the sees cat the")], eos=True).tolist()
    assert good > bad
    # another LM in this trained experiment is refused before anything is written
    from justkit.config import ConfigError

    before = sorted((p, p.stat().st_mtime_ns) for p in exp.rglob("*") if p.is_file())
    with pytest.raises(ConfigError, match=r"model\.hidden_dim: 32 -> 48.*Nothing was written"):
        train_lm.__wrapped__(args + ["--model.hidden_dim", "48"])  # the undecorated main: the error itself
    assert sorted((p, p.stat().st_mtime_ns) for p in exp.rglob("*") if p.is_file()) == before


@pytest.mark.parametrize("arch", ["lstm", "transformer"])
def test_lm_resume_is_exact(lm_data, tmp_path, arch):
    """N steps straight == N/2 steps, stop, resume (the text loader's position and the RNGs restored)."""
    def task(max_steps: int) -> LMTask:
        return LMTask.resolve(lm_data / "lm.yaml", [
            "--train.max_steps", str(max_steps), "--train.save_interval", "3", "--train.dev_interval", "0",
            "--train.tensorboard", "false", "--model.arch", arch, "--model.num_heads", "2", "--model.ffn_dim", "32",
            "--model.dropout", "0.1"],
            {"train": str(lm_data / "packed/train"), "dev": str(lm_data / "packed/dev"),
             "tokenizer": str(lm_data / "token/spm.model")})

    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    Trainer(task(6), straight, DistInfo()).train()
    Trainer(task(3), resumed, DistInfo()).train()
    Trainer(task(6), resumed, DistInfo()).train()
    a, b = _rows(straight, "train"), _rows(resumed, "train")
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for x, y in zip(a, b):
        assert math.isclose(float(x["loss"]), float(y["loss"]), rel_tol=1e-6), (x, y)
    wa = C.load_latest_checkpoint(straight / "checkpoints")[0]["model"]
    wb = C.load_latest_checkpoint(resumed / "checkpoints")[0]["model"]
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-6, atol=1e-7, msg=k)
