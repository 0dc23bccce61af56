"""Every shipped recipe config builds its dataclasses (unknown keys are errors) and the mini models build."""
from __future__ import annotations

from pathlib import Path

import pytest

from justkit.config import from_dict, load_section, load_yaml
from justkit.data.loader import DataConfig
from justkit.decode.decoder import DecodeConfig
from justkit.losses.terms import LossConfig
from justkit.models.just import JUSTConfig, JUSTModel
from justkit.text.tokenizer import TokenizerConfig
from justkit.train.config import TrainConfig

ROOT = Path(__file__).resolve().parents[2]
TRAIN_CONFIGS = sorted([*ROOT.glob("egs/*/conf/train_*.yaml"), *ROOT.glob("egs/*/conf/paper_mini/*.yaml"),
                        *ROOT.glob("egs/*/conf/paper_lowlabel/*.yaml")])


def test_there_are_configs():
    names = {p.name for p in TRAIN_CONFIGS}
    for mode in ("baseline", "pretrain", "finetune", "just", "just_finetune", "just_local"):
        for size in ("mini", "paper"):
            assert f"train_{mode}_{size}.yaml" in names


@pytest.mark.parametrize("path", TRAIN_CONFIGS, ids=lambda p: f"{p.parts[-3]}/{p.name}")
def test_train_config_builds(path):
    cfg = load_yaml(path)
    model_cfg = JUSTConfig.from_dict({**cfg["model"], "vocab_size": 64})
    loss_cfg = LossConfig.from_dict(cfg.get("loss"))
    train_cfg = from_dict(TrainConfig, cfg.get("train"), "train")
    from_dict(DataConfig, cfg.get("data"), "data")
    assert train_cfg.max_epochs > 0 or train_cfg.max_steps > 0
    if "paper" not in path.name:  # the paper model is 0.6B parameters: config check only
        model = JUSTModel(model_cfg, loss_cfg)
        assert model.num_parameters()["total"] < 5_000_000


LM_CONFIGS = sorted(ROOT.glob("egs/*/conf/lm/*.yaml"))


@pytest.mark.parametrize("path", LM_CONFIGS, ids=lambda p: f"{p.parts[-4]}/{p.name}")
def test_lm_config_builds(path):
    from justkit.train.lm_task import LMTask

    raw = load_yaml(path)
    task = LMTask.from_dict({**raw, "model": {**raw["model"], "vocab_size": 64}}, str(path))
    assert task.train.best_metric == "loss" and not task.train.dev_wer
    if "paper" not in path.name:
        assert sum(p.numel() for p in task.build_model().parameters()) < 2_000_000
    assert {p.name for p in LM_CONFIGS} >= {"lstm_mini.yaml", "lstm_paper.yaml"}


@pytest.mark.parametrize("path", sorted(ROOT.glob("egs/*/conf/decode.yaml")), ids=lambda p: p.parts[-3])
def test_decode_config_builds(path):
    DecodeConfig.from_dict(load_section(path, "decode"))


@pytest.mark.parametrize("path", sorted(ROOT.glob("egs/*/conf/tokenizer*.yaml")), ids=lambda p: f"{p.parts[-3]}/{p.name}")
def test_tokenizer_config_builds(path):
    from_dict(TokenizerConfig, load_section(path, "tokenizer"), str(path))


def test_numbers_given_as_strings_are_parsed_for_every_config():
    """YAML 1.1 reads ``3e-3`` as a string: from_dict parses int/float fields in any section."""
    cfg = from_dict(TrainConfig, {"max_epochs": "2", "optim": {"peak_lr": "3e-3"}}, "train")
    assert cfg.max_epochs == 2 and cfg.optim.peak_lr == 0.003
    assert from_dict(DataConfig, {"lang_alpha": "5e-1"}, "data").lang_alpha == 0.5
    from justkit.config import ConfigError

    with pytest.raises(ConfigError, match=r"train\.optim\.peak_lr: expected a number, got 'fast'"):
        from_dict(TrainConfig, {"optim": {"peak_lr": "fast"}}, "train")
    with pytest.raises(ConfigError, match=r"train\.max_epochs: expected an integer"):
        from_dict(TrainConfig, {"max_epochs": 2.5}, "train")


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def test_paper_configs_share_train_paper_yaml_and_differ_only_where_they_say():
    """The six train_*_paper.yaml include conf/train/paper.yaml and differ from JUST only in these keys."""
    conf = ROOT / "egs" / "mls" / "conf"
    finetune = {"train.max_steps": 200000, "train.init": "exp/train_pretrain_paper/model_avg.pt",
                "train.optim.peak_lr": 5.0e-4, "train.optim.warmup_steps": 5000}
    differs = {
        "just": {},
        "baseline": {"model.mode": "supervised"},
        "pretrain": {"model.mode": "pretrain", "data.specaug.enabled": False},
        "finetune": {"model.mode": "supervised", **finetune},
        "just_finetune": finetune,
        "just_local": {"model.conformer.attention": "local"},
    }
    just = _flat(load_yaml(conf / "train_just_paper.yaml"))
    assert just["model.mode"] == "just" and just["train.max_steps"] == 500000
    for name, diff in differs.items():
        path = conf / f"train_{name}_paper.yaml"
        assert "train/paper.yaml" in path.read_text(encoding="utf-8")
        cfg = _flat(load_yaml(path))
        got = {k: v for k, v in cfg.items() if just.get(k, object()) != v}
        assert got == diff, path
        assert set(just) - set(cfg) == set(), path
