"""JUST's quantized targets (the quantizer's input, their quality statistics), short utterances
and the masker, the labelled-only unmasked pass, and the gradient-alignment monitor."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from justkit.config import load_yaml
from justkit.losses.terms import LossConfig
from justkit.models.just import JUSTConfig, JUSTModel, migrate_legacy_config
from justkit.nn.masking import MaskingConfig, span_mask
from justkit.nn.quantizer import GumbelVectorQuantizer, target_quality

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[2]
MINI = load_yaml(ROOT / "egs/TEMPLATE/conf/model/mini.yaml")


def mini_model(mode: str = "just", **quantizer) -> JUSTModel:
    d = {**MINI["model"], "mode": mode, "vocab_size": 32}
    d["quantizer"] = {**d["quantizer"], **quantizer}
    return JUSTModel(JUSTConfig.from_dict(d), LossConfig.from_dict(MINI["loss"]))


def speechlike(b: int = 4, t: int = 300, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """CMVN-like fbank: a slowly varying spectral envelope per utterance plus frame noise."""
    g = torch.Generator().manual_seed(seed)
    env = torch.cumsum(torch.randn(b, t, 80, generator=g) * 0.3, dim=1) / 10
    return env + torch.randn(b, t, 80, generator=g), torch.tensor([t, t - 40, t - 90, t - 150][:b])


def empirical_agreement(q: GumbelVectorQuantizer, x: torch.Tensor, valid: torch.Tensor, n: int = 20) -> float:
    q.train()
    hits = tot = 0.0
    for i in range(n):
        torch.manual_seed(i)
        out = q(x, valid, step=0)
        with torch.no_grad():
            xn = q.norm(x) if q.norm is not None else x
            hard = q.logits(xn).view(*x.shape[:2], q.cfg.groups, q.cfg.entries).argmax(-1)
        m = valid[..., None].expand_as(hard)
        hits += float(((out.ids == hard) & m).sum())
        tot += float(m.sum())
    return hits / tot


def test_quantizer_reads_normalised_features_and_its_targets_are_not_noise():
    """At initialisation, on the mini model: the quantizer's input is layer-normalised (per frame mean
    0, variance 1), its per-frame code entropy is far below ln V, and the Gumbel sample is the
    argmax code on most frames (the un-normalised input of before gave ~0.1)."""
    torch.manual_seed(0)
    model = mini_model()
    feats, lens = speechlike()
    x, out_lens, conv, proj = model.frontend.forward_all(feats, lens)
    valid = torch.arange(x.size(1))[None] < out_lens[:, None]
    q = model.quantizer
    assert q.cfg.input == "features" and conv.size(-1) == q.logits.in_features == model.frontend.proj.in_features
    normed = q.norm(conv)[valid]
    assert normed.mean(-1).abs().max() < 1e-4 and (normed.var(-1, unbiased=False) - 1).abs().max() < 1e-2
    agree = empirical_agreement(q, conv, valid)
    assert agree > 0.6, agree
    out = q(conv, valid, step=0)
    assert float(out.code_agreement) == pytest.approx(agree, abs=0.05)  # the analytic expectation
    assert float(out.code_entropy) < 0.5 * torch.log(torch.tensor(float(q.cfg.entries)))
    # the same quantizer without the LayerNorm, on the projected features: the noise of before
    torch.manual_seed(0)
    old = mini_model(input="proj", input_norm=False)
    x_old, *_ = old.frontend.forward_all(feats, lens)
    assert empirical_agreement(old.quantizer, x_old, valid) < 0.3


def test_target_quality_is_exact_on_hand_cases():
    logits = torch.tensor([[[[0.0, 0.0, 0.0, 0.0]], [[10.0, 0.0, 0.0, 0.0]]]])  # [1, 2, 1, 4]
    valid = torch.tensor([[True, True]])
    ent, agree = target_quality(logits, valid)
    p = torch.tensor([10.0, 0, 0, 0]).softmax(-1)
    assert float(ent) == pytest.approx((torch.log(torch.tensor(4.0)) - (p * p.log()).sum()).item() / 2, rel=1e-5)
    assert float(agree) == pytest.approx((0.25 + p.max().item()) / 2, rel=1e-5)
    ent, agree = target_quality(logits, torch.tensor([[True, False]]))  # padded frames do not count
    assert float(agree) == pytest.approx(0.25)


def test_the_forward_logs_the_target_statistics():
    torch.manual_seed(0)
    model = mini_model()
    feats, lens = speechlike(2)
    out = model({"feats": feats, "feat_lens": lens[:2], "labelled": torch.tensor([False, False]),
                 "tokens": torch.zeros(2, 1, dtype=torch.long), "token_lens": torch.zeros(2, dtype=torch.long)})
    assert 0 < float(out["code_entropy"]) < 4.86 and 0 < float(out["code_agreement"]) <= 1
    sup = mini_model("supervised")
    assert float(sup({"feats": feats, "feat_lens": lens[:2], "labelled": torch.tensor([True, True]),
                      "tokens": torch.ones(2, 2, dtype=torch.long), "token_lens": torch.tensor([2, 2])})
                 ["code_agreement"]) == 0.0


def test_old_checkpoints_keep_their_quantizer():
    """A stored config of a justkit before quantizer.input/input_norm/init reads as what it was."""
    cfg = {"model": {**MINI["model"], "mode": "just", "vocab_size": 32}, "loss": MINI["loss"]}
    cfg["model"]["quantizer"] = {k: v for k, v in cfg["model"]["quantizer"].items()
                                 if k not in ("input", "input_norm", "init")}
    new, moved = migrate_legacy_config(cfg)
    assert new["model"]["quantizer"]["input"] == "proj" and new["model"]["quantizer"]["input_norm"] is False
    assert "quantizer.input" in " ".join(moved)
    from justkit.models.factory import model_from_config

    model = model_from_config(cfg)
    assert model.quantizer.norm is None and model.quantizer.logits.in_features == model.cfg.d_model


def test_short_utterances_are_never_masked_whole():
    """An utterance of at most `span` encoder frames gets no mask (and so no contrastive/MLM loss)
    instead of being replaced by the mask embedding end to end."""
    cfg = MaskingConfig(span_start_prob=0.065, span=10, min_spans=1)
    lens = torch.tensor([5, 10, 11, 40])
    for seed in range(20):
        m = span_mask(lens, 40, cfg, torch.Generator().manual_seed(seed))
        assert not m[0].any() and not m[1].any()
        assert m[2].any() and m[3].any() and not m[2, 11:].any()
    torch.manual_seed(0)
    model = mini_model("pretrain")
    feats = torch.randn(2, 60, 80)
    out = model({"feats": feats, "feat_lens": torch.tensor([45, 40]), "labelled": torch.tensor([False, False])})
    assert float(out["contrastive"]) == 0.0 and float(out["mlm"]) == 0.0  # 10 and 9 encoder frames


@pytest.mark.parametrize("rows", ["slice", "mask"])
def test_unmasked_pass_on_labelled_rows_only_gives_the_same_loss(rows):
    """JUST's unmasked pass runs on the labelled rows only: with layer norm in the conv module
    (rows independent) the loss and every gradient equal those of a pass over all rows."""
    d = {**MINI["model"], "mode": "just", "vocab_size": 32}
    d["conformer"] = {**d["conformer"], "conv_norm": "layer", "dropout": 0.0, "attention_dropout": 0.0}
    d["subsampling"] = {**d["subsampling"], "dropout": 0.0}
    d["predictor"] = {**d["predictor"], "dropout": 0.0}
    torch.manual_seed(0)
    model = JUSTModel(JUSTConfig.from_dict(d), LossConfig.from_dict(MINI["loss"]))
    feats, lens = speechlike(4, 200)
    g = torch.Generator().manual_seed(1)
    batch = {"feats": feats, "feat_lens": lens, "tokens": torch.randint(1, 32, (4, 6), generator=g),
             "token_lens": torch.tensor([6, 4, 0, 0]), "labelled": torch.tensor([True, True, False, False])}
    if rows == "slice":
        batch["num_labelled"] = 2

    def run(all_rows: bool):
        model.zero_grad()
        model.unmasked_all_rows = all_rows
        torch.manual_seed(5)
        out = model(batch, step=3)
        out.loss.backward()
        return out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    new, g_new = run(False)
    old, g_old = run(True)
    for k in ("rnnt", "ctc", "contrastive", "mlm", "loss"):
        assert torch.allclose(new[k], old[k], rtol=1e-5, atol=1e-6), k
    assert g_new.keys() == g_old.keys()
    for n in g_new:
        torch.testing.assert_close(g_new[n], g_old[n], rtol=1e-4, atol=1e-6)


def _tiny_config(mode: str, **train) -> dict:
    """tiny.yaml (model and loss) for a few logged steps of the trainer."""
    cfg = load_yaml(ROOT / "egs/TEMPLATE/conf/model/tiny.yaml")
    cfg["model"].update(mode=mode, vocab_size=12)
    cfg["train"] = {"max_steps": 6, "log_interval": 1, "keep_last": 0, "plots": False, "num_threads": 1,
                    "optim": {"peak_lr": 2e-3, "warmup_steps": 3}, **train}
    cfg["data"] = {"max_frames": 300, "buckets": 2}
    return cfg


def test_alignment_monitor_in_training_and_as_a_command(tmp_path, make_packed):
    """A tiny JUST run with the monitor on: train.csv holds galign_/gdev_ per term and the target
    statistics, the plots show them; the command measures every checkpoint of the run."""
    import csv

    from justkit.bin import grad_alignment
    from justkit.experiment import Experiment
    from justkit.train.asr import ASRTask
    from justkit.train.trainer import Trainer

    packed = make_packed(tmp_path / "data", n=16)
    cfg = _tiny_config("just", max_steps=4, save_interval=2, grad_alignment_interval=2, grad_alignment_batches=2,
                       grad_balance_interval=2, plots=True)
    cfg["paths"] = {"train": str(packed), "dev": str(packed)}
    exp = tmp_path / "exp"
    Experiment.from_dict(cfg).save(exp)
    Trainer(ASRTask(cfg), exp).train()
    rows = [r for r in csv.DictReader(open(exp / "train.csv")) if r["split"] == "train"]
    measured = [r for r in rows if r.get("galign_rnnt")]
    assert [int(r["step"]) for r in measured] == [1, 3]  # measured before updates 1 and 3, logged with them
    for r in measured:
        for term in ("rnnt", "contrastive", "mlm", "diversity"):
            assert -1.0 <= float(r[f"galign_{term}"]) <= 1.0 and r[f"gdev_{term}"] != ""
        assert float(r["galign_rnnt"]) > 0  # the same loss on other data: never opposed on a fit this small
    assert all(0 < float(r["code_agreement"]) <= 1 and float(r["code_entropy"]) > 0 for r in rows)
    assert (exp / "plots/grad_alignment.png").is_file() and (exp / "plots/code_agreement.png").is_file()
    out = tmp_path / "align.json"
    assert grad_alignment.main(["--exp", str(exp), "--train_batches", "2", "--dev_batches", "2",
                                "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert [r["step"] for r in res["rows"]] == [2, 4]
    assert all(-1 <= r["galign_contrastive"] <= 1 and "gdev_rnnt" in r for r in res["rows"])
    # a pre-training model has no recognition loss to align with: a one-line error
    pre = _tiny_config("pretrain", max_steps=1)
    pre["paths"] = {"train": str(packed), "dev": str(packed)}
    Experiment.from_dict(pre).save(tmp_path / "pre")
    Trainer(ASRTask(pre), tmp_path / "pre").train()
    assert grad_alignment.main(["--exp", str(tmp_path / "pre"), "--train_batches", "1"]) == 2
