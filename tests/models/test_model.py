"""Tests for justkit.models.just: the contract API, modes, gradients, padding, overfitting."""
from __future__ import annotations

import pytest
import torch

from justkit.config import ConfigError
from justkit.losses.terms import LossConfig
from justkit.models.just import JUSTConfig, JUSTModel

torch.set_num_threads(1)
V = 12   # the vocabulary of conftest's tiny_cfg



def make_batch(seed: int = 0, labelled=(True, True), smooth: bool = False) -> dict:
    """Two utterances (90 and 70 frames). ``smooth``: slow sinusoids instead of white noise,
    so that masked frames are predictable from their context (white noise is not)."""
    g = torch.Generator().manual_seed(seed)
    feat_lens = torch.tensor([90, 70][: len(labelled)])
    b = len(labelled)
    feats = torch.randn(b, 90, 80, generator=g)
    if smooth:
        freq = 0.02 + 0.15 * torch.rand(80, generator=g)
        phase = 6.28 * torch.rand(b, 1, 80, generator=g)
        feats = 2 * torch.sin(torch.arange(90.0)[:, None] * freq + phase)
    for i, n in enumerate(feat_lens.tolist()):
        feats[i, n:] = 0.0
    token_lens = torch.tensor([5, 3][:b])
    tokens = torch.randint(1, V, (b, 5), generator=g)
    tokens[1:, 3:] = 0
    return {
        "feats": feats, "feat_lens": feat_lens, "tokens": tokens, "token_lens": token_lens,
        "labelled": torch.tensor(labelled), "langs": ["en", "pl"][:b], "utts": ["a", "b"][:b],
    }


KEYS = {"loss", "rnnt", "ctc", "contrastive", "diversity", "mlm", "num_frames", "codebook_perplexity", "gumbel_temperature",
        "contrastive_acc", "mlm_acc"}


@pytest.mark.parametrize("mode", ["supervised", "pretrain", "just"])
def test_forward_contract(mode, tiny_cfg):
    torch.manual_seed(0)
    model = JUSTModel(tiny_cfg(mode))
    out = model(make_batch(), step=5)
    assert set(out) >= KEYS and set(out.logged()) >= KEYS
    assert all(v.dim() == 0 for v in out.logged().values())
    assert torch.allclose(sum(out.weighted.values()), out["loss"])
    assert out["loss"].requires_grad and torch.isfinite(out["loss"])
    assert not any(out[k].requires_grad for k in KEYS - {"loss"})
    assert not any(v.requires_grad for v in out.logged().values())
    assert out["num_frames"].item() == 21 + 16  # ((90-3)//2+1-3)//2+1, ((70-3)//2+1-3)//2+1
    assert (out["rnnt"] > 0) == (mode != "pretrain")
    assert (out["contrastive"] > 0) == (mode != "supervised")
    assert (out["mlm"] > 0) == (mode != "supervised")
    cfg = model.loss_cfg
    expect = out["rnnt"] + cfg.w_u * (out["contrastive"] + cfg.w_div * out["diversity"] + cfg.w_mlm * out["mlm"])
    assert out["loss"].item() == pytest.approx(expect.item(), rel=1e-5)
    assert model.blank_id == 0


def test_encode_predictor_joint_api_and_padding_invariance(tiny_cfg):
    torch.manual_seed(0)
    model = JUSTModel(tiny_cfg("supervised")).eval()
    b = make_batch()
    enc, lens = model.encode(b["feats"], b["feat_lens"])
    assert enc.shape == (2, 21, 32) and lens.tolist() == [21, 16]
    alone, _ = model.encode(b["feats"][1:, :70], b["feat_lens"][1:])
    assert torch.allclose(alone[0], enc[1, :16], atol=1e-5)
    padded = torch.cat([b["feats"], 7 * torch.randn(2, 33, 80)], dim=1)
    enc2, _ = model.encode(padded, b["feat_lens"])
    assert torch.allclose(enc2[0, :21], enc[0], atol=1e-5) and torch.allclose(enc2[1, :16], enc[1, :16], atol=1e-5)
    pred, state = model.predictor(torch.zeros(2, 1, dtype=torch.long))
    pred2, _ = model.predictor(torch.ones(2, 1, dtype=torch.long), state)
    logits = model.joint(enc[:, :1], pred2)
    assert logits.shape == (2, 1, V)


def test_local_attention_model_padding_invariance(tiny_cfg):
    torch.manual_seed(0)
    cfg = tiny_cfg("just")
    cfg.conformer.attention = "local"
    model = JUSTModel(cfg).eval()
    b = make_batch()
    enc, _ = model.encode(b["feats"], b["feat_lens"])
    alone, _ = model.encode(b["feats"][1:, :70], b["feat_lens"][1:])
    assert torch.allclose(alone[0], enc[1, :16], atol=1e-5)


def _grads(model: JUSTModel, batch: dict) -> dict[str, float]:
    model.zero_grad(set_to_none=True)
    model(batch, step=0)["loss"].backward()
    return {n: (p.grad.abs().sum().item() if p.grad is not None else None) for n, p in model.named_parameters()}


UNSUP = ("masker.", "quantizer.", "contrastive_proj.", "target_proj.", "mlm_head.")
RNNT = ("predictor.", "joint.")


@pytest.mark.parametrize("mode", ["supervised", "pretrain", "just"])
def test_gradients_reach_exactly_the_trained_parameters(mode, tiny_cfg):
    torch.manual_seed(0)
    model = JUSTModel(tiny_cfg(mode))
    names = [n for n, _ in model.named_parameters()]
    assert any(n.startswith(UNSUP) for n in names) == (mode != "supervised")
    assert any(n.startswith(RNNT) for n in names) == (mode != "pretrain")
    grads = _grads(model, make_batch())
    missing = [n for n, g in grads.items() if not g]
    assert not missing, f"{mode}: no gradient for {missing}"


def test_rnnt_branch_does_not_train_unsupervised_parts(tiny_cfg, tiny_loss):
    # w_u = 0: only the RNN-T loss, on the unmasked pass, so the quantizer, mask
    # embedding and unsupervised heads get zero gradient while the encoder trains.
    torch.manual_seed(0)
    model = JUSTModel(tiny_cfg("just"), tiny_loss(w_u=0.0))
    grads = _grads(model, make_batch())
    assert all(g == 0 for n, g in grads.items() if n.startswith(UNSUP))
    assert all(g for n, g in grads.items() if n.startswith(RNNT + ("frontend.", "mlm_blocks.")))
    # the unsupervised loss alone never touches the RNN-T decoder
    model = JUSTModel(tiny_cfg("just"))
    grads = _grads(model, make_batch(labelled=(False, False)))
    assert all(g == 0 for n, g in grads.items() if n.startswith(RNNT))  # zero, not None (DDP)
    assert all(grads[n] for n in grads if n.startswith(UNSUP))


def test_unlabelled_rows_contribute_only_unsupervised_terms(tiny_cfg):
    torch.manual_seed(0)
    model = JUSTModel(tiny_cfg("supervised")).eval()
    both = model(make_batch(labelled=(True, False)))["rnnt"]
    b = make_batch()
    first = {k: v[:1] for k, v in b.items()}
    alone = model(first)["rnnt"]
    assert both.item() == pytest.approx(alone.item(), rel=1e-5)
    none = model(make_batch(labelled=(False, False)))
    assert none["rnnt"].item() == 0.0 and none["loss"].item() == 0.0
    none["loss"].backward()  # every parameter gets a (zero) gradient: DDP needs no unused-parameter search
    assert all(p.grad is not None and not p.grad.any() for p in model.parameters())
    # a labelled row with an empty transcript (U = 0) is a valid RNN-T target
    empty = make_batch()
    empty["token_lens"] = torch.tensor([0, 0])
    assert torch.isfinite(model(empty)["rnnt"]) and model(empty)["rnnt"] > 0


@pytest.mark.parametrize("on_masked", [False, True])
@pytest.mark.parametrize("with_sup", [False, True])
def test_feats_sup_and_single_pass_flag(on_masked, with_sup, tiny_cfg, tiny_model_config):
    # just mode: the RNN-T branch runs a second (unmasked) pass through the conformer
    # blocks, reading feats_sup when given, unless rnnt_on_masked makes it one pass
    torch.manual_seed(0)
    conformer = {**tiny_model_config()["conformer"], "conv_norm": "layer"}
    model = JUSTModel(tiny_cfg("just", rnnt_on_masked=on_masked, conformer=conformer))
    front, blocks = [], []
    model.frontend.conv.register_forward_hook(lambda m, i, o: front.append(i[0].squeeze(1)))
    model.contrastive_blocks.register_forward_hook(lambda m, i, o: blocks.append(i[0]))
    b = make_batch()
    if with_sup:
        b["feats_sup"] = b["feats"] * 0.5
    model(b)
    assert len(blocks) == (1 if on_masked else 2)
    assert torch.equal(front[0], b["feats"])
    if with_sup and not on_masked:  # the unmasked pass reads feats_sup, on the labelled rows only
        assert len(front) == 2 and torch.equal(front[1], b["feats_sup"][b["labelled"]])
    else:
        assert len(front) == 1
    if not on_masked:  # the second pass reads unmasked frames
        emb = model.masker.embedding
        assert (blocks[0] == emb).all(-1).any() and not (blocks[1] == emb).all(-1).any()


def test_load_pretrained_encoder_for_finetuning(tiny_cfg):
    torch.manual_seed(0)
    pre = JUSTModel(tiny_cfg("pretrain"))
    sup = JUSTModel(tiny_cfg("supervised"))
    pred_before = {k: v.clone() for k, v in sup.predictor.state_dict().items()}
    loaded = sup.load_pretrained_encoder({"model": {"module." + k: v for k, v in pre.state_dict().items()}})
    assert loaded and all(not k.startswith(UNSUP + RNNT) for k in loaded)
    assert set(loaded) == {k for k in sup.state_dict() if not k.startswith(RNNT)}
    for k, v in sup.predictor.state_dict().items():
        assert torch.equal(v, pred_before[k])
    pre.eval(), sup.eval()
    b = make_batch()
    assert torch.allclose(pre.encode(b["feats"], b["feat_lens"])[0], sup.encode(b["feats"], b["feat_lens"])[0])
    just = JUSTModel(tiny_cfg("just"))
    loaded = just.load_pretrained_encoder(pre.state_dict())
    assert any(k.startswith("quantizer.") for k in loaded)
    bigger = JUSTModel(tiny_cfg("supervised", d_model=48))
    with pytest.raises(ValueError, match="does not fit"):
        bigger.load_pretrained_encoder(pre.state_dict())
    with pytest.raises(ValueError, match="no encoder weight"):
        sup.load_pretrained_encoder({"foo": torch.zeros(1)})


def test_config_errors_and_param_count(tiny_cfg):
    with pytest.raises(ConfigError, match="unknown"):
        JUSTConfig.from_dict({"d_modle": 3})
    with pytest.raises(ValueError, match="mode"):
        JUSTConfig.from_dict({"mode": "semi"})
    with pytest.raises(ConfigError, match="loss.rnnt.backend"):
        LossConfig.from_dict({"rnnt": {"backend": "warp"}})
    # loss keys of an earlier justkit under model: say where they live now
    with pytest.raises(ConfigError, match=r"model.w_u is now loss.w_u.*model.rnnt_norm is now loss.rnnt.norm"):
        JUSTConfig.from_dict({"w_u": 0.3, "rnnt_norm": "frame"})
    for bad in ({"w_u": -1}, {"w_ctc": float("nan")}, {"w_div": "x"}, {"w_mlm": float("inf")}):
        with pytest.raises(ConfigError, match=f"loss.{next(iter(bad))}"):
            LossConfig.from_dict(bad)
    with pytest.raises(ValueError, match="num_mlm_blocks"):
        JUSTConfig.from_dict({"mode": "pretrain", "num_mlm_blocks": 0})
    model = JUSTModel(tiny_cfg("just"))
    counts = model.num_parameters()
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    assert counts["total"] == sum(v for k, v in counts.items() if k != "total")


@pytest.mark.parametrize("mode", ["supervised", "pretrain", "just"])
def test_overfits_a_fixed_batch(mode, tiny_cfg):
    # Fixed batch *and* fixed randomness (the RNG is re-seeded before every step, so the
    # span mask, Gumbel noise and distractors repeat): every mode must fit it.
    torch.manual_seed(0)
    model = JUSTModel(tiny_cfg(mode))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    batch = make_batch(smooth=True)
    hist = []
    for step in range(50):
        torch.manual_seed(1234)
        out = model(batch, step=step)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        hist.append({k: out[k].item() for k in ("loss", "rnnt", "contrastive", "mlm")})
    first = {k: sum(h[k] for h in hist[:5]) / 5 for k in hist[0]}
    last = {k: sum(h[k] for h in hist[-5:]) / 5 for k in hist[0]}
    assert last["loss"] < 0.7 * first["loss"], f"{mode}: {first} -> {last}"
    terms = {"supervised": ["rnnt"], "pretrain": ["contrastive", "mlm"], "just": ["rnnt", "contrastive", "mlm"]}
    for k in terms[mode]:
        assert last[k] < 0.8 * first[k], f"{mode}: {k} {first[k]:.3f} -> {last[k]:.3f}"


@pytest.mark.parametrize("mode", ["supervised", "just"])
def test_auxiliary_ctc_head(mode, tiny_cfg, tiny_loss):
    """w_ctc > 0 adds w_ctc * CTC(encoder) to the loss; the head gets gradient, is skipped by
    load_pretrained_encoder, and absent (no parameters, ctc term 0) when w_ctc = 0."""
    torch.manual_seed(0)
    batch = make_batch()
    plain = JUSTModel(tiny_cfg(mode))
    assert plain.ctc_head is None and float(plain(batch)["ctc"]) == 0.0
    torch.manual_seed(0)
    model = JUSTModel(tiny_cfg(mode), tiny_loss(w_ctc=0.5))
    model.eval()  # no dropout/masking randomness between the two evaluations below
    out = model(batch, step=0)
    enc, lens = model.encode(batch["feats"], batch["feat_lens"])
    logp = model.ctc_head(enc).log_softmax(-1).transpose(0, 1)
    ref = torch.nn.functional.ctc_loss(logp, batch["tokens"], lens, batch["token_lens"], reduction="sum") / lens.sum()
    assert torch.allclose(out["ctc"], ref, atol=1e-4)  # rnnt_norm: frame
    expected = out["rnnt"] + 0.5 * out["ctc"]
    if mode == "just":
        expected = expected + (out["contrastive"] + 0.1 * out["diversity"] + out["mlm"])
    assert torch.allclose(out["loss"], expected, atol=1e-4)
    model.train()
    grads = _grads(model, batch)
    assert grads["ctc_head.weight"] and grads["frontend.proj.weight"]
    donor = JUSTModel(tiny_cfg(mode), tiny_loss(w_ctc=0.5))
    assert not any(k.startswith("ctc_head.") for k in model.load_pretrained_encoder(donor.state_dict()))


def _running_stats(model: JUSTModel) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if "running_" in k}


def test_masked_pass_leaves_batch_norm_running_statistics_alone(tiny_cfg):
    """JUST's masked pass must not move the running statistics that decoding uses: after a
    training-mode JUST forward they equal those of the unmasked pass alone (tiny.yaml has
    no dropout, so JUST's unmasked RNN-T pass is exactly encode() in training mode)."""
    torch.manual_seed(0)
    just = JUSTModel(tiny_cfg("just"))
    ref = JUSTModel(tiny_cfg("just"))
    ref.load_state_dict(just.state_dict())
    b = make_batch()
    for _ in range(3):
        just(b, step=0)
        ref.encode(b["feats"], b["feat_lens"])
    got, want = _running_stats(just), _running_stats(ref)
    assert got and all(torch.allclose(got[k], want[k], atol=1e-6) for k in want)
    # ... and the eval-mode encoder output of the two models is the same
    just.eval(), ref.eval()
    assert torch.allclose(just.encode(b["feats"], b["feat_lens"])[0], ref.encode(b["feats"], b["feat_lens"])[0], atol=1e-5)
    # Pre-training has no unmasked pass: there the masked pass keeps the statistics moving.
    pre = JUSTModel(tiny_cfg("pretrain"))
    before = _running_stats(pre)
    pre(b, step=0)
    assert any(not torch.equal(before[k], v) for k, v in _running_stats(pre).items())


def test_rnnt_on_masked_with_batch_norm_is_refused(tiny_cfg):
    with pytest.raises(ValueError, match="conv_norm: layer"):
        tiny_cfg("just", rnnt_on_masked=True)


@pytest.mark.parametrize("norm", ["frame", "token", "utterance"])
def test_rnnt_normalisation(norm, tiny_cfg, tiny_loss):
    """rnnt_norm divides the summed RNN-T NLL of the labelled rows by their encoder frames,
    tokens or number; the unsupervised terms stay per-masked-frame means."""
    torch.manual_seed(0)
    model = JUSTModel(tiny_cfg("supervised"), tiny_loss(rnnt={"norm": norm})).eval()
    b = make_batch()
    out = model(b)
    enc, lens = model.encode(b["feats"], b["feat_lens"])
    pred, _ = model.predictor(torch.cat([torch.zeros(2, 1, dtype=torch.long), b["tokens"]], 1))
    from justkit.losses.rnnt import rnnt_loss
    nll = rnnt_loss(model.joint(enc[:, :, None], pred[:, None]), b["tokens"], lens, b["token_lens"], reduction="sum")
    n = {"frame": lens.sum(), "token": b["token_lens"].sum(), "utterance": 2}[norm]
    assert out["rnnt"].item() == pytest.approx((nll / n).item(), rel=1e-5)


def test_contrastive_targets_are_projected(tiny_cfg):
    """Quantized targets pass through their own projection (fairseq project_q) before the cosine."""
    torch.manual_seed(0)
    model = JUSTModel(tiny_cfg("pretrain", contrastive_dim=24))
    assert model.target_proj.in_features == model.cfg.quantizer.code_dim
    assert model.target_proj.out_features == model.contrastive_proj.out_features == 24
    model.zero_grad()
    model(make_batch(), step=0)["loss"].backward()
    assert model.target_proj.weight.grad.abs().sum() > 0


def test_finetuning_continues_the_gumbel_temperature_schedule(tiny_cfg):
    torch.manual_seed(0)
    pre = JUSTModel(tiny_cfg("pretrain"))
    t_end = pre.quantizer.temperature(5000)
    just = JUSTModel(tiny_cfg("just"))
    assert just.quantizer.temperature(0) == pre.cfg.quantizer.temp_max
    just.load_pretrained_encoder({"model": pre.state_dict(), "step": 5000})
    assert just.quantizer.temperature(0) == pytest.approx(t_end)
    # the offset travels in the state dict (checkpoints, resume, a second fine-tuning)
    again = JUSTModel(tiny_cfg("just"))
    again.load_state_dict(just.state_dict())
    assert again.quantizer.temperature(10) == pytest.approx(pre.quantizer.temperature(5010))
    again.load_pretrained_encoder({"model": just.state_dict(), "step": 100})
    assert again.quantizer.temperature(0) == pytest.approx(pre.quantizer.temperature(5100))


def test_analytic_flops_of_a_conformer_block_match_a_hand_count(tiny_cfg):
    """One block's forward FLOPs: the formula of justkit.models.flops against torch's counter
    (exact for the forward of these ops) and against the hand count for d=8, ffn=16, K=3, T=10."""
    from torch.utils.flop_counter import FlopCounterMode

    from justkit.models.flops import conformer_block_flops, training_flops
    from justkit.nn.conformer import ConformerBlock, ConformerConfig, lengths_to_valid

    d, ffn, k, t = 8, 16, 3, 10
    # hand count: FFNs 2 x (2*t*d*ffn*2) = 10240; q,k,v,o 2*t*d*4d = 5120; QK^T, AV 4*t*t*d = 3200;
    # conv: pointwise 2*t*d*2d = 2560, depthwise 2*t*d*k = 480, pointwise 2*t*d*d = 1280
    assert conformer_block_flops(t, d, ffn, k) == 10240 + 5120 + 3200 + 2560 + 480 + 1280
    cfg = ConformerConfig(num_heads=2, ffn_dim=ffn, conv_kernel=k, dropout=0.0, attention_dropout=0.0, pos_enc="none")
    block = ConformerBlock(d, cfg).eval()
    x = torch.randn(1, t, d)
    valid = lengths_to_valid(torch.tensor([t]), t)
    from justkit.nn.conformer import attention_allowed

    with FlopCounterMode(display=False) as fc:
        block(x, valid, attention_allowed(valid, cfg))
    # torch's counter has no rule for the CPU attention kernel: all but Q K^T and A V match
    assert fc.get_total_flops() == conformer_block_flops(t, d, ffn, k) - 4 * t * t * d
    # a whole training step: JUST runs the blocks twice, so about twice the supervised count
    sup, just = tiny_cfg("supervised"), tiny_cfg("just")
    assert 1.6 < training_flops(just, 1500, 30) / training_flops(sup, 1500, 30) < 2.4


def test_training_step_reads_nothing_from_the_device(monkeypatch, tiny_cfg, tiny_loss):
    """JUST with the pruned RNN-T loss (the paper config's path): the forward and backward
    read no tensor value on the host, so on a GPU nothing waits (HostSyncCounter flags what
    would; the loss's device path is forced on the CPU)."""
    from justkit.data.loader import Collate
    from justkit.losses import rnnt_pruned
    from justkit.train.host_sync import HostSyncCounter

    from justkit.nn.subsampling import Conv2dSubsampling

    monkeypatch.setattr(rnnt_pruned, "_device_path", lambda x: True)
    # lengths on a GPU are checked on the host before the copy (Trainer), not in the forward
    monkeypatch.setattr(Conv2dSubsampling, "check_lengths", lambda *a: None)
    torch.manual_seed(0)
    model = JUSTModel(tiny_cfg("just"), tiny_loss(w_ctc=0.0, rnnt={"type": "pruned", "s_range": 3, "warm_step": 0}))
    g = torch.Generator().manual_seed(0)
    items = [{"utt": f"u{i}", "feats": torch.randn(n, 80, generator=g).numpy(), "tokens": [1, 2, 3][: 1 + i % 3],
              "lang": "en", "labelled": i % 2 == 0} for i, n in enumerate((90, 70, 64, 81))]
    batch = Collate()(items)
    assert batch["num_labelled"] == 2 and batch["labelled"].tolist() == [True, True, False, False]
    with HostSyncCounter() as c:
        out = model(batch, step=3)
        out["loss"].backward()
    assert c.count == 0, dict(c.sites)
    assert torch.isfinite(out["loss"]) and out["rnnt"] > 0 and out["contrastive"] > 0
    # the counter does see reads: the boolean-row fallback (no num_labelled) is one
    del batch["num_labelled"]
    with HostSyncCounter() as c:
        model(batch, step=3)
    assert c.count >= 1 and any("just.py" in s for s in c.sites), dict(c.sites)
