"""External LM in the beam searches: shallow fusion, internal-LM subtraction, n-best rescoring, LM files."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from justkit.decode.beam import BeamConfig, beam_search
from justkit.decode.fusion import Fusion, FusionError, ilm_sequence_logprob, rescore_nbest
from justkit.fileio import atomic_torch_save
from justkit.models.just import JUSTConfig, JUSTModel
from justkit.models.lm import LMConfig, LMError, TokenLM, load_lm

ROOT = Path(__file__).resolve().parents[2]
B, T, F, V = 5, 30, 20, 9
ALGOS = ("graves", "modified")


@pytest.fixture(scope="module")
def setup():
    """A tiny transducer with a decisive output layer (it emits labels) and a tiny random LSTM LM."""
    d = yaml.safe_load((ROOT / "egs/mls/conf/model/tiny.yaml").read_text())["model"]
    d.update(mode="supervised", vocab_size=V, feat_dim=F)
    torch.manual_seed(0)
    model = JUSTModel(JUSTConfig.from_dict(d)).eval()
    with torch.no_grad():
        model.joint.out.weight.mul_(6.0)
        model.joint.out.bias[0] = -1.0
    lm = TokenLM(LMConfig(vocab_size=V, embed_dim=16, hidden_dim=16, num_layers=2, dropout=0.0)).eval()
    with torch.no_grad():
        lm.out.weight.mul_(8.0)
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(B, T, F, generator=g)
    lens = torch.tensor([30, 26, 21, 15, 9])
    with torch.no_grad():
        enc, enc_lens = model.encode(feats, lens)
    return model, lm, enc, enc_lens


def _ilm_direct(model, tokens) -> float:
    """The internal LM's log P(tokens), step by step from its definition."""
    with torch.no_grad():
        pred, _ = model.predictor(torch.tensor([[0] + list(tokens)]))
        logits = model.joint.out(torch.tanh(model.joint.pred_proj(pred)))[0]   # [U+1, V]
        total = 0.0
        for u, y in enumerate(tokens):
            lab = logits[u, 1:].log_softmax(-1)      # blank (id 0) is not a label
            total += float(lab[y - 1])
    return total


@pytest.mark.parametrize("algorithm", ALGOS)
def test_weight_zero_equals_plain_beam_search(setup, algorithm):
    model, lm, enc, enc_lens = setup
    cfg = BeamConfig(beam_size=4, nbest=4, algorithm=algorithm)
    plain = beam_search(model, enc, enc_lens, cfg)
    fused = beam_search(model, enc, enc_lens, cfg, Fusion(lm, 0.0, 0.0))
    assert any(h.tokens for h in plain), "the tiny model emits nothing: the test would be vacuous"
    for p, f in zip(plain, fused):
        assert [h.tokens for h in f.nbest] == [h.tokens for h in p.nbest]
        assert [h.score for h in f.nbest] == [h.score for h in p.nbest]   # exactly
        assert [h.fused for h in f.nbest] == [h.score for h in p.nbest]
        assert all(h.lm_score != 0.0 for h in f.nbest if h.tokens)      # the LM did run


@pytest.mark.parametrize("algorithm", ALGOS)
@pytest.mark.parametrize("ilm_weight", [0.0, 0.3])
def test_fused_choice_maximises_the_fused_score_over_its_nbest(setup, algorithm, ilm_weight):
    model, lm, enc, enc_lens = setup
    cfg = BeamConfig(beam_size=4, nbest=4, algorithm=algorithm)
    fusion = Fusion(lm, 0.7, ilm_weight)
    plain = beam_search(model, enc, enc_lens, cfg)
    out = beam_search(model, enc, enc_lens, cfg, fusion)
    changed = False
    for p, h in zip(plain, out):
        changed |= [x.tokens for x in h.nbest] != [x.tokens for x in p.nbest]
        seqs = [x.tokens for x in h.nbest]
        lm_brute = lm.sequence_logprob(seqs).tolist()      # one teacher-forced pass, not the search's steps
        for x, ref in zip(h.nbest, lm_brute):
            assert x.lm_score == pytest.approx(ref, abs=1e-4)
            assert x.ilm_score == pytest.approx(_ilm_direct(model, x.tokens) if ilm_weight else 0.0, abs=1e-4)
            assert x.fused == pytest.approx(x.score + 0.7 * ref - ilm_weight * x.ilm_score, abs=1e-6)
        brute = max(h.nbest, key=lambda x: (x.score + 0.7 * lm.sequence_logprob([x.tokens]).item()
                                            - ilm_weight * _ilm_direct(model, x.tokens)) / (1 + len(x.tokens)))
        assert h.tokens == brute.tokens
    assert changed, "an LM of weight 0.7 changed no n-best list: the fusion is not reaching the search"


def test_ilm_subtraction_matches_a_direct_computation(setup):
    model, lm, enc, enc_lens = setup
    out = beam_search(model, enc, enc_lens, BeamConfig(beam_size=3, nbest=3, algorithm="modified"),
                      Fusion(None, 0.0, 0.5))
    seqs = [x.tokens for h in out for x in h.nbest]
    assert any(seqs)
    batch = ilm_sequence_logprob(model, seqs).tolist()
    for x, b in zip([x for h in out for x in h.nbest], batch):
        direct = _ilm_direct(model, x.tokens)
        assert x.ilm_score == pytest.approx(direct, abs=1e-4)
        assert b == pytest.approx(direct, abs=1e-4)
        assert x.fused == pytest.approx(x.score - 0.5 * direct, abs=1e-4)


def test_nbest_rescoring_reranks_by_the_fused_score(setup):
    model, lm, enc, enc_lens = setup
    hyps = beam_search(model, enc, enc_lens, BeamConfig(beam_size=4, nbest=4, algorithm="modified"))
    fusion = Fusion(lm, 1.5, 0.2)
    out = rescore_nbest(model, hyps, fusion)
    for h, r in zip(hyps, out):
        assert sorted(map(tuple, (x.tokens for x in r.nbest))) == sorted(map(tuple, (x.tokens for x in h.nbest)))
        want = max(h.nbest, key=lambda x: (x.score + 1.5 * lm.sequence_logprob([x.tokens]).item()
                                           - 0.2 * _ilm_direct(model, x.tokens)) / (1 + len(x.tokens)))
        assert r.tokens == want.tokens and r.score == want.score


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf"), "x"])
def test_bad_weights_are_one_line_errors(setup, bad):
    lm = setup[1]
    for kw in ("lm_weight", "ilm_weight"):
        with pytest.raises(FusionError, match=kw) as e:
            Fusion(lm, **{kw: bad})
        assert "\n" not in str(e.value)
    with pytest.raises(FusionError, match="no LM"):
        Fusion(None, 0.3)


def _save_lm(lm: TokenLM, path: Path) -> None:
    cfg = {"task": "lm", "model": vars(lm.cfg), "train": {}, "data": {}, "paths": {}}
    atomic_torch_save({"model": lm.state_dict(), "config": cfg, "step": 1, "epoch": 0}, path)


def test_load_lm_refuses_other_vocabularies_truncated_files_and_asr_models(setup, tmp_path):
    from justkit.models.factory import CheckpointError

    lm = setup[1]
    d = tmp_path / "lm_x"
    d.mkdir()
    _save_lm(lm, d / "model_avg.pt")
    got, cfg, path = load_lm(d, vocab_size=V)
    assert path == d / "model_avg.pt" and cfg["task"] == "lm"
    assert all(torch.equal(v, lm.state_dict()[k]) for k, v in got.state_dict().items())
    with pytest.raises(LMError, match=rf"{V} pieces.*ASR model's 50"):
        load_lm(d, vocab_size=50)
    data = (d / "model_avg.pt").read_bytes()
    (d / "model_avg.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="unreadable"):
        load_lm(d)
    atomic_torch_save({"model": {}, "config": {"model": {}}, "step": 0, "epoch": 0}, d / "model_avg.pt")
    with pytest.raises(LMError, match="not a language model"):
        load_lm(d)
    with pytest.raises(LMError, match="no such LM directory"):
        load_lm(tmp_path / "missing")


@pytest.mark.parametrize("algorithm", ALGOS)
def test_transformer_lm_step_scores_equal_its_sentence_scores(setup, algorithm):
    """The transformer LM step by step in the search (history re-read each step) scores each
    hypothesis as one teacher-forced pass over the sentence does."""
    model, _, enc, enc_lens = setup
    torch.manual_seed(2)
    tlm = TokenLM(LMConfig(arch="transformer", vocab_size=V, embed_dim=16, hidden_dim=16, num_layers=2,
                           num_heads=2, ffn_dim=32, dropout=0.0)).eval()
    out = beam_search(model, enc, enc_lens, BeamConfig(beam_size=3, nbest=3, algorithm=algorithm), Fusion(tlm, 0.5))
    seqs = [x.tokens for h in out for x in h.nbest]
    assert any(seqs)
    for x, ref in zip([x for h in out for x in h.nbest], tlm.sequence_logprob(seqs).tolist()):
        assert x.lm_score == pytest.approx(ref, abs=1e-4)
