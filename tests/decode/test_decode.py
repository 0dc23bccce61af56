"""Greedy and beam RNN-T search on a tiny JUST model trained briefly on one fixed batch."""
from __future__ import annotations

import math

import pytest
import torch
import yaml

from justkit.decode.beam import BeamConfig, beam_search
from justkit.decode.decoder import DecodeConfig, make_batches
from justkit.decode.greedy import GreedyConfig, greedy_search
from justkit.losses.rnnt import rnnt_loss
from justkit.models.just import JUSTConfig, JUSTModel

B, T, F, V = 4, 24, 20, 10


@pytest.fixture(scope="session")
def model_config(tiny_model_config):
    """``() -> dict``: the tiny supervised model with this file's vocabulary and feature size."""
    return lambda: tiny_model_config("supervised", vocab_size=V, feat_dim=F)


@pytest.fixture(scope="module")
def trained(model_config):
    """A tiny supervised model after 20 Adam steps on one fixed batch (seconds on a CPU)."""
    torch.manual_seed(0)
    model = JUSTModel(JUSTConfig.from_dict(model_config()))
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(B, T, F, generator=g)
    lens = torch.tensor([24, 21, 16, 12])
    tokens = torch.randint(1, V, (B, 5), generator=g)
    token_lens = torch.tensor([5, 4, 3, 2])
    batch = dict(feats=feats, feat_lens=lens, tokens=tokens, token_lens=token_lens,
                 labelled=torch.ones(B, dtype=torch.bool), langs=["en"] * B, utts=list("abcd"))
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    first = None
    for step in range(20):
        loss = model(batch, step=step)["loss"]
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    assert loss.item() < first, "the tiny model did not learn; the decode tests would be meaningless"
    with torch.no_grad():
        enc, enc_lens = model.encode(feats, lens)
    return model, feats, lens, enc, enc_lens


def _log_likelihood(model, enc, enc_len, tokens) -> float:
    """log P(tokens | x) summed over all alignments: minus the RNN-T loss of the model."""
    y = torch.tensor([tokens], dtype=torch.long).view(1, -1)
    with torch.no_grad():
        pred, _ = model.predictor(torch.cat([torch.zeros(1, 1, dtype=torch.long), y], 1))
        logits = model.joint(enc[None, :enc_len].unsqueeze(2), pred.unsqueeze(1))
        loss = rnnt_loss(logits.float(), y.int(), torch.tensor([enc_len]), torch.tensor([len(tokens)]),
                         reduction="sum")
    return -loss.item()


def test_graves_beam_at_least_as_good_as_greedy(trained):
    """Same topology as the loss: rescore both outputs with the model's RNN-T loss (log P(y|x))."""
    model, _, _, enc, enc_lens = trained
    greedy = greedy_search(model, enc, enc_lens, GreedyConfig(max_symbols_per_frame=3))
    beam = beam_search(model, enc, enc_lens, BeamConfig(beam_size=4, nbest=4, algorithm="graves", length_norm=False))
    assert any(h.tokens for h in greedy), "greedy found only empty hypotheses: model untrained"
    for b in range(B):
        n = int(enc_lens[b])
        g = _log_likelihood(model, enc[b], n, greedy[b].tokens)
        bb = _log_likelihood(model, enc[b], n, beam[b].tokens)
        assert bb >= g - 1e-4, f"utt {b}: beam {beam[b].tokens} ({bb:.4f}) < greedy {greedy[b].tokens} ({g:.4f})"
        _check_nbest(beam[b])
        # merged alignments of the best hypothesis: at most the sum over all alignments
        assert beam[b].score <= bb + 1e-4


def test_modified_beam_at_least_as_good_as_greedy(trained):
    """One label per frame: compare with greedy under the same topology (one label per
    frame), both scored by the searches themselves (greedy: its path; beam: merged paths)."""
    model, _, _, enc, enc_lens = trained
    greedy = greedy_search(model, enc, enc_lens, GreedyConfig(max_symbols_per_frame=1))
    beam = beam_search(model, enc, enc_lens, BeamConfig(beam_size=4, nbest=4, algorithm="modified", length_norm=False))
    for b in range(B):
        assert beam[b].score >= greedy[b].score - 1e-6, f"utt {b}: {beam[b]} < {greedy[b]}"
        _check_nbest(beam[b])


def _check_nbest(h) -> None:
    scores = [x.score for x in h.nbest]
    assert scores == sorted(scores, reverse=True) and h.score == scores[0]
    assert all(0 not in x.tokens for x in h.nbest)
    assert len({tuple(x.tokens) for x in h.nbest}) == len(h.nbest), "n-best not merged"


def test_greedy_score_is_one_path_of_the_hypothesis(trained):
    """Greedy's score is the log-prob of one alignment of its output: at most log P(y|x)."""
    model, _, _, enc, enc_lens = trained
    # A generous symbol limit, so that every frame ends with blank (a proper RNN-T path).
    hyps = greedy_search(model, enc, enc_lens, GreedyConfig(max_symbols_per_frame=10))
    for b, h in enumerate(hyps):
        ll = _log_likelihood(model, enc[b], int(enc_lens[b]), h.tokens)
        assert math.isfinite(h.score) and h.score <= ll + 1e-4


def test_batched_greedy_equals_unbatched(trained):
    model, feats, lens, enc, enc_lens = trained
    cfg = GreedyConfig(max_symbols_per_frame=3)
    batched = greedy_search(model, enc, enc_lens, cfg)
    for b in range(B):
        with torch.no_grad():
            e1, l1 = model.encode(feats[b : b + 1, : lens[b]], lens[b : b + 1])
        single = greedy_search(model, e1, l1, cfg)[0]
        assert single.tokens == batched[b].tokens
        assert single.score == pytest.approx(batched[b].score, abs=1e-4)


def test_sync_free_greedy_equals_greedy_and_reads_once(trained):
    """The device path (no host read per frame) gives the same labels, frames and scores;
    its host reads do not grow with the number of frames."""
    from justkit.train.host_sync import HostSyncCounter

    model, _, _, enc, enc_lens = trained
    cfg = GreedyConfig(max_symbols_per_frame=3)
    ref = greedy_search(model, enc, enc_lens, cfg, sync_free=False)
    assert sum(len(h.tokens) for h in ref) > 0
    counts = []
    for pad in (0, enc.size(1)):
        e = torch.cat([enc, torch.randn(enc.size(0), pad, enc.size(2))], 1)
        with HostSyncCounter() as c:
            got = greedy_search(model, e, enc_lens, cfg, sync_free=True)
        counts.append(c.count)
        for h, r in zip(got, ref):
            assert h.tokens == r.tokens and h.frames == r.frames
            assert h.score == pytest.approx(r.score, abs=1e-9)
    assert counts[0] == counts[1], counts


@pytest.mark.parametrize("algorithm", ["graves", "modified"])
def test_batched_beam_equals_unbatched(trained, algorithm):
    model, _, _, enc, enc_lens = trained
    cfg = BeamConfig(beam_size=3, algorithm=algorithm)
    batched = beam_search(model, enc, enc_lens, cfg)
    for b in range(B):
        n = int(enc_lens[b])
        single = beam_search(model, enc[b : b + 1, :n], enc_lens[b : b + 1], cfg)[0]
        assert single.tokens == batched[b].tokens
        assert single.score == pytest.approx(batched[b].score, abs=1e-4)


def test_beam_size_one_is_greedy_with_one_symbol_per_frame(trained):
    model, _, _, enc, enc_lens = trained
    g = greedy_search(model, enc, enc_lens, GreedyConfig(max_symbols_per_frame=1))
    b1 = beam_search(model, enc, enc_lens, BeamConfig(beam_size=1, algorithm="modified", length_norm=False))
    for x, y in zip(g, b1):
        # Beam 1 takes the single best output of each frame and moves on, as greedy does
        # with one label per frame: same path, same score.
        assert x.tokens == y.tokens
        assert x.score == pytest.approx(y.score, abs=1e-4)


def test_bad_settings_rejected(trained):
    model, _, _, enc, enc_lens = trained
    with pytest.raises(ValueError, match="max_symbols_per_frame"):
        greedy_search(model, enc, enc_lens, GreedyConfig(0))
    for algorithm in ("graves", "modified"):
        with pytest.raises(ValueError, match="beam_size"):
            beam_search(model, enc, enc_lens, BeamConfig(0, algorithm=algorithm))
    with pytest.raises(ValueError, match="algorithm"):
        BeamConfig(algorithm="alsd")
    with pytest.raises(ValueError, match="unknown"):
        DecodeConfig.from_dict({"methods": ["viterbi"]})


def test_make_batches_limits():
    lengths = [5, 100, 30, 30, 60, 1]
    batches = make_batches(lengths, batch_size=2, max_batch_frames=100)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert len(b) <= 2 and max(lengths[i] for i in b) * len(b) <= 100 or len(b) == 1


def test_decode_cli_writes_decode_dirs(tmp_path, model_config):
    """Stage 7 as run.sh calls it: every method x set dir with hyp/ref/scores/utt2lang/rtf."""
    import json

    import kaldiio
    import numpy as np

    from justkit.bin.decode import main
    from justkit.frontend.cmvn import accumulate, write_cmvn
    from justkit.fileio import atomic_torch_save
    from justkit.text.tokenizer import TokenizerConfig, train_tokenizer

    texts = {"en": [("en1", "the cat sat"), ("en2", "a dog ran")], "pl": [("pl1", "kot i pies")]}
    tok = train_tokenizer(texts, tmp_path / "token",
                          TokenizerConfig(vocab_size=24, hard_vocab_limit=False, model_type="bpe"))
    rng = np.random.default_rng(0)
    feats = {u: rng.standard_normal((n, F)).astype(np.float32) for u, n in (("en1", 40), ("en2", 31), ("pl1", 25))}
    kaldiio.save_ark(str(tmp_path / "feats.ark"), feats, scp=str(tmp_path / "feats.scp"))
    scp = dict(line.split(maxsplit=1) for line in (tmp_path / "feats.scp").read_text().splitlines())
    write_cmvn(tmp_path / "cmvn.ark", accumulate(feats.values()))
    lang_of = {u: lang for lang, items in texts.items() for u, _ in items}
    text_of = {u: t for items in texts.values() for u, t in items}
    for set_name, utts in (("test_en", ["en1", "en2"]), ("test_pl", ["pl1"])):
        with open(tmp_path / f"{set_name}.jsonl", "w") as f:
            for u in utts:
                f.write(json.dumps({"utt": u, "feats": scp[u], "num_frames": len(feats[u]),
                                    "tokens": tok.encode(text_of[u]), "lang": lang_of[u],
                                    "labelled": True, "text": text_of[u]}) + "\n")
    cfg = model_config()
    cfg["vocab_size"] = tok.vocab_size
    torch.manual_seed(0)
    model = JUSTModel(JUSTConfig.from_dict(cfg))
    atomic_torch_save({"model": model.state_dict(), "config": {"model": cfg}}, tmp_path / "model_avg.pt")
    exp = tmp_path / "exp"
    # The tokenizer and CMVN come from the experiment's config.yaml, as stage 6 wrote it.
    from justkit.experiment import Experiment

    Experiment.from_dict({"model": cfg, "train": {"max_steps": 1}, "paths": {
        "tokenizer": str(tmp_path / "token/spm.model"), "cmvn": str(tmp_path / "cmvn.ark")}}).save(exp)
    rc = main(["--model", str(tmp_path / "model_avg.pt"), "--device", "cpu", "--exp", str(exp),
               str(tmp_path / "test_en.jsonl"), str(tmp_path / "test_pl.jsonl"),
               "--decode.beam.beam_size", "2", "--decode.greedy.max_symbols_per_frame=2"])
    assert rc == 0
    for method in ("greedy", "beam"):
        for set_name, utts in (("test_en", ["en1", "en2"]), ("test_pl", ["pl1"])):
            d = exp / f"decode_{method}_{set_name}"
            hyp = [line.split(maxsplit=1)[0] for line in (d / "hyp.txt").read_text().splitlines()]
            assert hyp == utts
            assert (d / "ref.txt").read_text().splitlines() == [f"{u} {text_of[u]}" for u in utts]
            scores = dict(line.split() for line in (d / "scores.txt").read_text().splitlines())
            assert sorted(scores) == utts and all(float(v) <= 0 for v in scores.values())
            assert (d / "utt2lang").read_text().split() == [x for u in utts for x in (u, lang_of[u])]
            assert float((d / "rtf.txt").read_text().split()[0]) > 0
    # with an LM (--lm_dir): beam search fused into decode_beamlm_<set>, rescoring into decode_beamlmresc_<set>;
    # the dev grid of tune_lm_weight picks the weight with the lowest dev WER
    from justkit.bin.tune_lm_weight import main as tune
    from justkit.models.lm import LMConfig, TokenLM

    lm = TokenLM(LMConfig(vocab_size=tok.vocab_size, embed_dim=8, hidden_dim=8, num_layers=1))
    (tmp_path / "lm").mkdir()
    atomic_torch_save({"model": lm.state_dict(), "config": {"task": "lm", "model": vars(lm.cfg)}, "step": 0,
                       "epoch": 0}, tmp_path / "lm" / "model_avg.pt")
    common = ["--model", str(tmp_path / "model_avg.pt"), "--exp", str(exp), str(tmp_path / "test_en.jsonl"),
              "--decode.beam.beam_size", "2", "--decode.methods", "[beam]"]
    assert main(common + ["--lm_dir", str(tmp_path / "lm"), "--decode.lm_weight", "0.3"]) == 0
    assert main(common + ["--lm_dir", str(tmp_path / "lm"), "--decode.lm_weight", "0.3", "--decode.lm_mode", "rescore"]) == 0
    for name in ("beamlm", "beamlmresc"):
        assert (exp / f"decode_{name}_test_en" / "hyp.txt").read_text().split()[0] == "en1"
    assert main(common + ["--decode.lm_weight", "0.3"]) == 2            # a weight but no LM
    assert main(common + ["--lm_dir", str(tmp_path / "lm"), "--decode.lm_weight", "-1"]) == 2
    assert tune(["--exp", str(exp), "--model", str(tmp_path / "model_avg.pt"), "--lm_dir", str(tmp_path / "lm"),
                 "--lm_weights", "0 0.5", "--decode.beam.beam_size", "2", str(tmp_path / "test_en.jsonl")]) == 0
    rows = [line.split() for line in (exp / "lm_tune_lm" / "wer.txt").read_text().splitlines()[1:]]
    assert [r[0] for r in rows] == ["0", "0.5"]
    best = yaml.safe_load((exp / "lm_tune_lm" / "best.yaml").read_text())["tune"]
    assert best["dev_wer"] == min(float(r[2]) for r in rows)
    # a bad packed file is a clear error naming it, and nothing is written for it
    (tmp_path / "test_bad.jsonl").write_text('{"utt": "x"}\n')
    rc = main(["--model", str(tmp_path / "model_avg.pt"), "--tokenizer", str(tmp_path / "token/spm.model"),
               "--cmvn", str(tmp_path / "cmvn.ark"), "--exp", str(exp), str(tmp_path / "test_bad.jsonl")])
    assert rc == 2 and not (exp / "decode_greedy_test_bad").exists()
    # a tokenizer of another size than the model's vocabulary is refused, naming both
    other = train_tokenizer(texts, tmp_path / "token2",
                            TokenizerConfig(vocab_size=20, hard_vocab_limit=False, model_type="bpe"))
    assert other.vocab_size != tok.vocab_size
    assert main(["--model", str(tmp_path / "model_avg.pt"), "--tokenizer", str(tmp_path / "token2/spm.model"),
                 "--exp", str(exp), str(tmp_path / "test_en.jsonl")]) == 2
    # a typo in an option or an override section is an argparse error, not a YAML key error
    with pytest.raises(SystemExit):
        main(["--devce", "cpu", "--exp", str(exp), str(tmp_path / "test_en.jsonl")])


def test_wide_graves_beam_finds_the_exhaustive_best(trained):
    """On the shortest utterance, every label sequence of up to 3 labels is scored exactly
    (RNN-T loss); a wide Graves beam must find one at least as likely as the best of them."""
    import itertools

    model, _, _, enc, enc_lens = trained
    b = int(enc_lens.argmin())
    n = int(enc_lens[b])
    seqs = [list(s) for k in range(4) for s in itertools.product(range(1, V), repeat=k)]
    best = max(_log_likelihood(model, enc[b], n, s) for s in seqs)
    hyp = beam_search(model, enc[b : b + 1, :n], enc_lens[b : b + 1],
                      BeamConfig(beam_size=16, algorithm="graves", max_symbols_per_frame=10, length_norm=False))[0]
    assert _log_likelihood(model, enc[b], n, hyp.tokens) >= best - 1e-4


def test_pretrain_model_cannot_be_decoded_with_a_clear_error(model_config):
    d = model_config()
    d.update(mode="pretrain")
    model = JUSTModel(JUSTConfig.from_dict(d)).eval()
    enc, lens = model.encode(torch.randn(1, 60, F), torch.tensor([60]))
    with pytest.raises(TypeError, match="no RNN-T decoder"):
        greedy_search(model, enc, lens, GreedyConfig())
    with pytest.raises(TypeError, match="no RNN-T decoder"):
        beam_search(model, enc, lens, BeamConfig())


class _TableModel:
    """An RNN-T stand-in whose output distribution depends only on (frame t, labels so far n):
    enc[:, t, 0] = t, the prediction network's output and state count the labels emitted."""

    blank_id = 0

    def __init__(self, table: dict):
        self.table = table  # {(t, n): [p(blank), p(1), p(2)]}

    def encode(self, feats, lens):
        return feats, lens

    def predictor(self, tokens, state):
        b = tokens.size(0)
        n = torch.zeros(1, b, 1) if state is None else state + (tokens != 0).float().view(1, b, 1)
        return n.view(b, 1, 1), n

    def joint(self, frame, pred):
        rows = [self.table.get((int(t), int(n)), [0.98, 0.01, 0.01])
                for t, n in zip(frame.reshape(-1).tolist(), pred.reshape(-1).tolist())]
        return torch.tensor(rows).log().view(frame.size(0), 1, 3)


# Two frames; the reference is "1 2". Its probability is a little below that of the shorter
# "1" (one label fewer to pay for), but per label it is the better hypothesis:
# p("1 2") > p("1") ** 1.5, i.e. log p / (1 + labels) ranks it first.
_COMMON = {(0, 0): [0.1, 0.8, 0.1], (1, 0): [0.5, 0.25, 0.25], (0, 1): [0.5, 0.05, 0.45],
           (0, 2): [0.9, 0.05, 0.05], (1, 2): [0.9, 0.05, 0.05]}
_TABLES = {
    # one label per frame: "1" = 1 then blank (0.8 * 0.5), "1 2" = 1 then 2 (0.8 * 0.45)
    "modified": {**_COMMON, (1, 1): [0.5, 0.05, 0.45]},
    # Graves: every frame ends with blank; "1" = 0.8 * 0.5 * 0.9 = 0.36, "1 2" = 0.31
    "graves": {**_COMMON, (1, 1): [0.9, 0.05, 0.05]},
}


@pytest.mark.parametrize("algorithm", ["graves", "modified"])
def test_beam_length_normalisation_keeps_the_longer_better_hypothesis(algorithm):
    model = _TableModel(_TABLES[algorithm])
    enc, lens = torch.arange(2.0).view(1, 2, 1), torch.tensor([2])
    raw = beam_search(model, enc, lens, BeamConfig(beam_size=4, nbest=4, algorithm=algorithm, length_norm=False))[0]
    assert raw.tokens == [1], "the unnormalised search should pick the shorter hypothesis here"
    p = {tuple(h.tokens): math.exp(h.score) for h in raw.nbest}
    assert p[(1, 2)] < p[(1,)] and p[(1, 2)] > p[(1,)] ** 1.5
    norm = beam_search(model, enc, lens, BeamConfig(beam_size=4, nbest=4, algorithm=algorithm))[0]
    assert norm.tokens == [1, 2]
    assert norm.score == pytest.approx(math.log(p[(1, 2)]))  # the score itself stays raw
    assert [tuple(h.tokens) for h in norm.nbest][:2] == [(1, 2), (1,)]
