"""The loss-term registry (justkit.losses.terms), the loss: section, and the trainer's contract
(justkit.train.unit): a new term through the registry alone, a model the trainer knows nothing of."""
from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from justkit.config import ConfigError, load_yaml
from justkit.experiment import Experiment
from justkit.losses import terms as reg
from justkit.losses.output import LossOutput
from justkit.models.factory import build_model, model_from_config
from justkit.models.flops import training_flops
from justkit.models.just import JUSTConfig, migrate_legacy_config
from justkit.train.curves import TrainCurves

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[2]
TINY = load_yaml(ROOT / "egs/TEMPLATE/conf/model/tiny.yaml")


def tiny_batch(labelled=(True, False)) -> dict:
    g = torch.Generator().manual_seed(0)
    b = len(labelled)
    return {"feats": torch.randn(b, 80, 80, generator=g), "feat_lens": torch.tensor([80, 60][:b]),
            "tokens": torch.randint(1, 12, (b, 4), generator=g), "token_lens": torch.tensor([4, 2][:b]),
            "labelled": torch.tensor(labelled), "utts": ["a", "b"][:b]}


@pytest.fixture
def toy_term():
    """A term added through the registry alone: a head on the masked context, its own weight key."""
    def compute(inp: reg.TermInputs):
        m = inp.masked
        value = (inp.model.toy_head(m.context).pow(2).mean(-1) * m.mask).sum() / m.mask.sum().clamp(min=1)
        return value, {"toy_frames": m.mask.sum().float().detach()}

    term = reg.register(reg.LossTerm(
        "toy", reg.UNSUPERVISED, compute, scale=lambda w: w["w_u"] * w["w_toy"],
        weights=(reg.Weight("w_toy", 0.0, lo=0.0, hi=10.0),),
        heads={"toy_head": lambda cfg, loss: nn.Linear(cfg.d_model, 3)},
        metrics=("toy_frames",), enabled=lambda loss: loss.w_toy > 0,
        flops=lambda cfg, loss, t, u: 2.0 * t * cfg.d_model * 3, doc="a test's toy term"))
    yield term
    reg.unregister("toy")


def test_a_new_term_needs_the_registry_and_a_config_key_only(toy_term, tmp_path):
    model_d = {**TINY["model"], "mode": "just", "vocab_size": 12}
    exp = Experiment.from_dict({"model": model_d, "loss": {**TINY["loss"], "w_toy": 0.5},
                                "train": {"max_steps": 1}})
    assert exp.loss.w_toy == 0.5 and exp.to_dict()["loss"]["w_toy"] == 0.5
    torch.manual_seed(0)
    model = build_model(exp.model, exp.loss)
    assert isinstance(model.toy_head, nn.Linear) and "toy_head" in model.num_parameters()
    out = model(tiny_batch(), step=0)
    assert isinstance(out, LossOutput)
    assert out["toy"] > 0 and out["toy_frames"] > 0 and "toy" in out.weighted
    assert torch.allclose(out.weighted["toy"], exp.loss.w_u * 0.5 * out["toy"])
    assert torch.allclose(sum(out.weighted.values()), out.loss)
    out.loss.backward()
    assert model.toy_head.weight.grad is not None and model.toy_head.weight.grad.abs().sum() > 0
    # the decoder side never copies it as "encoder": it is an unsupervised head
    assert "toy_head." not in model.decoder_parameter_prefixes()
    # FLOPs count it; the curves plot it
    off = build_model(exp.model, {**TINY["loss"]})
    assert off.toy_head is None and float(off(tiny_batch())["toy"]) == 0.0
    on_f = training_flops(exp.model, 400, 10, loss=exp.loss)
    off_f = training_flops(exp.model, 400, 10, loss=off.loss_cfg)
    t = (((400 - 3) // 2 + 1 - 3) // 2 + 1)
    assert on_f - off_f == pytest.approx(3 * 2.0 * t * exp.model.d_model * 3)
    curves = TrainCurves(tmp_path / "train.csv", tmp_path / "plots")
    curves.add({"split": "train", "step": 1, "loss": 2.0, "toy": 0.5})
    curves.add({"split": "train", "step": 2, "loss": 1.0, "toy": 0.25})
    assert "toy" in curves.terms() and (tmp_path / "plots/toy.png") in curves.plot()
    # a weight out of its declared range is refused, naming the key
    with pytest.raises(ConfigError, match=r"loss.w_toy must lie in \[0.0, 10.0\]"):
        reg.LossConfig.from_dict({"w_toy": 11})


def test_registry_refuses_duplicates_and_unknown_keys():
    with pytest.raises(ValueError, match="registered already"):
        reg.register(reg.TERMS["mlm"])
    with pytest.raises(ValueError, match="declared already"):
        reg.register(reg.LossTerm("other", reg.SUPERVISED, lambda i: (None, {}), scale=lambda w: 1.0,
                                  weights=(reg.Weight("w_u", 1.0),)))
    assert "other" not in reg.TERMS
    with pytest.raises(ConfigError, match=r"loss: unknown key\(s\) \['w_x'\]"):
        reg.LossConfig.from_dict({"w_x": 1.0})
    assert list(reg.TERMS) == ["contrastive", "diversity", "mlm", "rnnt", "ctc"]


def test_docs_list_every_registered_term_and_weight():
    """docs/interfaces.md's "Loss terms" table names every term of the registry and its weight keys."""
    text = (ROOT / "docs/interfaces.md").read_text(encoding="utf-8")
    section = text[text.index("### Loss terms"):]
    section = section[: section.index("\n### ", 5)]
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| `(\w+)` \| [^|]+ \| ([^|]*) \|", section, re.M)}
    assert set(rows) == set(reg.TERMS), rows
    for name, term in reg.TERMS.items():
        for w in term.weights:
            assert f"`{w.key}`" in rows[name], (name, w.key)


def test_old_configs_are_refused_with_the_new_keys_and_old_checkpoints_migrate(tmp_path):
    old = {"model": {**TINY["model"], "mode": "supervised", "vocab_size": 12, "w_u": 0.3, "w_ctc": 0.5,
                     "rnnt_backend": "numba", "rnnt_norm": "token", "rnnt_loss": {"type": "full", "chunk_utts": 2}},
           "train": {"max_steps": 1}}
    with pytest.raises(ConfigError, match="model.w_u is now loss.w_u.*model.rnnt_loss is now loss.rnnt"):
        Experiment.from_dict(old)
    new, moved = migrate_legacy_config(old)
    assert sorted(m for m in moved if not m.startswith("quantizer")) == sorted(
        ["w_u", "w_ctc", "rnnt_backend", "rnnt_norm", "rnnt_loss"])
    assert new["loss"] == {"w_u": 0.3, "w_ctc": 0.5, "rnnt": {"type": "full", "chunk_utts": 2, "backend": "numba",
                                                               "norm": "token"}}
    assert "w_u" in old["model"]  # the caller's dict is left alone
    model = model_from_config(old)
    assert model.ctc_head is not None and model.loss_cfg.rnnt.backend == "numba"
    assert migrate_legacy_config(new) == (new, [])


def test_feat_dim_comes_from_the_fbank_options(tmp_path):
    feats = tmp_path / "fbank"
    (feats / "conf").mkdir(parents=True)
    (feats / "conf/fbank.yaml").write_text("fbank: {num_mel_bins: 40, use_energy: true}\n")
    cfg = tmp_path / "exp.yaml"
    cfg.write_text("model: {mode: supervised, d_model: 32, num_contrastive_blocks: 1, num_mlm_blocks: 1}\n"
                   "train: {max_steps: 1}\n")
    exp = Experiment.resolve(cfg, [], {"features": str(feats)})
    assert exp.model.feat_dim == 41
    with pytest.raises(ConfigError, match="model.feat_dim 80 disagrees.*gives 41-dim"):
        Experiment.resolve(cfg, ["--model.feat_dim", "80"], {"features": str(feats)})
    assert Experiment.resolve(cfg, ["--model.feat_dim", "41"], {"features": str(feats)}).model.feat_dim == 41
    assert Experiment.resolve(cfg, []).model.feat_dim == JUSTConfig().feat_dim  # no stage 3 dir: the config's


def test_trainer_source_asks_the_model_nothing():
    """The trainer reads the model through the contract only: no getattr/hasattr probes, no model imports."""
    src = (ROOT / "justkit/train/trainer.py").read_text(encoding="utf-8")
    assert not re.search(r"\b(getattr|hasattr)\(", src)
    assert "justkit.models" not in src and "justkit.decode" not in src and "justkit.data" not in src
    assert len(src.splitlines()) < 400


class _Toy(nn.Module):
    """Not a JUST model: a linear map of the features whose squared output is the loss."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(80, 1)

    def forward(self, batch, step: int = 0) -> LossOutput:
        loss = self.lin(batch["feats"]).pow(2).mean()
        return LossOutput(loss, terms={"sq": loss.detach()}, weighted={"sq": loss},
                          num_frames=batch["feat_lens"].sum())

    def shared_parameters(self):
        return list(self.lin.parameters())


def _rows(exp, split: str = "train") -> list[dict]:
    with open(exp / "train.csv", encoding="utf-8") as f:
        return [r for r in csv.DictReader(f) if r["split"] == split]


def test_the_trainer_trains_any_model_of_the_contract(tmp_path, make_packed):
    from justkit.train.asr import ASRTask
    from justkit.train.trainer import Trainer

    class ToyTask(ASRTask):
        def build_model(self):
            return _Toy()

        def batch_frames(self, batch):
            return int(batch["feat_lens"].sum())

        def dev_metrics(self, model, device):
            return {"dev_toy": 1.0}

        def plot_references(self):
            return {}

    packed = make_packed(tmp_path / "data", n=12)
    cfg = {"model": {**TINY["model"], "vocab_size": 12}, "data": {"max_frames": 300, "buckets": 2},
           "train": {"max_steps": 4, "log_interval": 1, "plots": False, "tensorboard": False, "num_threads": 1,
                     "grad_balance_interval": 2, "optim": {"peak_lr": 1e-2, "warmup_steps": 1}},
           "paths": {"train": str(packed), "dev": str(packed)}}
    Trainer(ToyTask(cfg), tmp_path / "exp").train()
    rows = _rows(tmp_path / "exp")
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    assert float(rows[-1]["sq"]) < float(rows[0]["sq"])
    assert any(r.get("gshare_sq") == "1" for r in rows)
    dev = _rows(tmp_path / "exp", "dev")
    assert dev and dev[-1]["dev_toy"] == "1" and float(dev[-1]["sq"]) > 0
