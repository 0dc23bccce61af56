"""Tests of the training data loader: sampler, dataset, SpecAugment, collate, resume, DDP split."""
from __future__ import annotations

import json
import logging
import re
from collections import Counter

import kaldiio
import numpy as np
import pytest
import torch

from justkit.config import from_dict
from justkit.data.dataset import PackedDataError, PackedDataset
from justkit.data.loader import DataConfig, build_loader
from justkit.data.sampler import BucketBatchSampler, greedy_batches, padding_fraction
from justkit.data.specaug import SpecAugConfig, spec_augment

DIM = 8


def write_packed(tmp_path, rows, name="train"):
    """rows: (utt, lang, num_frames, labelled, tokens). Writes an ark/scp and a packed jsonl."""
    rng = np.random.default_rng(0)
    ark, scp = tmp_path / f"{name}.ark", tmp_path / f"{name}.scp"
    with kaldiio.WriteHelper(f"ark,scp:{ark},{scp}") as w:
        for utt, _, n, _, _ in rows:
            w(utt, (rng.standard_normal((n, DIM)) * 2 + 3).astype(np.float32))
    rx = dict(line.split(maxsplit=1) for line in scp.read_text().splitlines())
    path = tmp_path / f"{name}.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for utt, lang, n, lab, toks in sorted(rows):
            f.write(json.dumps({"utt": utt, "feats": rx[utt], "num_frames": n, "tokens": toks,
                                "lang": lang, "labelled": lab, "text": "x"}) + "\n")
    return path


def cmvn_identity():
    return np.zeros(DIM, np.float32), np.ones(DIM, np.float32)


def small_rows(n=40, seed=0):
    rng = np.random.default_rng(seed)
    langs = ["en"] * (n // 2) + ["pl"] * (n // 4) + ["de"] * (n - n // 2 - n // 4)
    return [(f"{l}_{i:03d}", l, int(rng.integers(20, 120)), i % 3 != 0,
             [int(t) for t in rng.integers(2, 50, size=int(rng.integers(1, 9)))])
            for i, l in enumerate(langs)]


def collect(loader):
    return [b["utts"] for b in loader]


# -- sampler --------------------------------------------------------------------------------
def mls_like_lengths(n, seed=0):
    return np.random.default_rng(seed).integers(1000, 2000, size=n)  # 10-20 s at 10 ms


def test_frame_budget_counts_padding():
    lengths = mls_like_lengths(500)
    s = BucketBatchSampler(lengths, ["en"] * 500, max_frames=8000, num_buckets=8)
    batches = list(s)
    assert batches
    for b in batches:
        assert len(b) * lengths[b].max() <= 8000
    assert sum(len(b) for b in batches) == 500  # epoch_size 0 = every utterance's worth


def test_buckets_reduce_padding_vs_random():
    lengths = mls_like_lengths(2000)
    s = BucketBatchSampler(lengths, ["en"] * 2000, max_frames=20000, num_buckets=20)
    bucketed = s.padding_fraction()
    rnd = greedy_batches(np.random.default_rng(1).permutation(2000), lengths, 20000)
    unsorted = padding_fraction(rnd, lengths)
    assert bucketed < 0.05
    assert bucketed < unsorted / 3


@pytest.mark.parametrize("alpha", [1.0, 0.3])
def test_language_ratio_follows_temperature(alpha):
    counts = {"en": 800, "de": 150, "pl": 50}
    langs = [l for l, c in counts.items() for _ in range(c)]
    lengths = np.random.default_rng(0).integers(50, 100, size=len(langs))
    s = BucketBatchSampler(lengths, langs, max_frames=1000, lang_alpha=alpha, epoch_size=2000)
    seen = Counter()
    for epoch in range(3):
        s.set_epoch(epoch)
        for b in s:
            seen.update(langs[i] for i in b)
    total = sum(seen.values())
    w = {l: c ** alpha for l, c in counts.items()}
    for l in counts:
        expect = w[l] / sum(w.values())
        assert abs(seen[l] / total - expect) < 0.01, (l, seen[l] / total, expect)
    if alpha < 1:  # polish is boosted well above its natural 5 %
        assert seen["pl"] / total > 0.15


def test_labelled_share_draws_labelled_and_unlabelled_apart():
    """A small labelled set in a big unlabelled pool: with labelled_share 0.5, an epoch is one
    pass over the labelled utterances (each exactly once) and as many unlabelled draws."""
    rng = np.random.default_rng(0)
    n = 1000
    langs = ["en"] * 700 + ["pl"] * 300
    labelled = [i % 10 == 0 for i in range(n)]  # 100 labelled: 70 en, 30 pl
    lengths = rng.integers(50, 100, size=n)
    s = BucketBatchSampler(lengths, langs, max_frames=1000, lang_alpha=1.0, labelled=labelled, labelled_share=0.5)
    drawn = [i for b in s for i in b]
    lab = [i for i in drawn if labelled[i]]
    assert sorted(lab) == [i for i in range(n) if labelled[i]]  # every labelled one, once
    assert len(drawn) == 200 and len(lab) == 100
    # temperature sampling applies within each part
    s2 = BucketBatchSampler(lengths, langs, max_frames=1000, lang_alpha=0.0, labelled=labelled,
                            labelled_share=0.25, epoch_size=4000)
    seen = Counter()
    for b in s2:
        seen.update((labelled[i], langs[i]) for i in b)
    assert sum(v for (l, _), v in seen.items() if l) == 1000
    assert seen[(True, "pl")] == seen[(True, "en")] == 500 and seen[(False, "pl")] == seen[(False, "en")] == 1500
    with pytest.raises(ValueError, match="labelled flag"):
        BucketBatchSampler(lengths, langs, max_frames=1000, labelled_share=0.5)


def test_deterministic_given_seed_and_epoch():
    lengths = mls_like_lengths(300)
    langs = ["en", "pl", "fr"] * 100
    a = BucketBatchSampler(lengths, langs, max_frames=6000, seed=3, lang_alpha=0.5)
    b = BucketBatchSampler(lengths, langs, max_frames=6000, seed=3, lang_alpha=0.5)
    c = BucketBatchSampler(lengths, langs, max_frames=6000, seed=4, lang_alpha=0.5)
    assert [list(x) for x in a] == [list(x) for x in b]
    assert [list(x) for x in a] != [list(x) for x in c]
    a.set_epoch(1)
    assert [list(x) for x in a] != [list(x) for x in b]


def test_ddp_split_disjoint_and_equal():
    lengths = mls_like_lengths(400)
    langs = ["en", "de"] * 200
    full = BucketBatchSampler(lengths, langs, max_frames=5000, seed=1).all_batches(0)
    ranks = [list(BucketBatchSampler(lengths, langs, max_frames=5000, seed=1, rank=r, world_size=3))
             for r in range(3)]
    assert len({len(r) for r in ranks}) == 1
    assert len(ranks[0]) == len(full) // 3
    ids = [id_ for r in ranks for b in r for id_ in [tuple(b)]]
    assert len(ids) == len(set(ids))  # no batch twice
    flat = [tuple(b) for b in full]
    assert set(ids) <= set(flat)


def test_fewer_batches_than_ranks_is_an_error():
    s = BucketBatchSampler([100, 100], ["en", "en"], max_frames=1000, rank=1, world_size=4)
    with pytest.raises(ValueError, match="fewer batches than ranks"):
        list(s)


def test_overlong_utterance_skipped_with_warning(caplog):
    lengths = [100, 200, 5000, 150]
    with caplog.at_level(logging.WARNING):
        s = BucketBatchSampler(lengths, ["en"] * 4, max_frames=1000, utts=["a", "b", "long", "c"])
    assert "long" in caplog.text and "max_frames=1000" in caplog.text
    seen = [i for b in s for i in b]
    assert 2 not in seen and sorted(set(seen)) == [0, 1, 3]
    with pytest.raises(ValueError, match="no utterance fits"):
        BucketBatchSampler([5000], ["en"], max_frames=1000)


# -- dataset, loader ------------------------------------------------------------------------
def test_batch_contract_and_cmvn(tmp_path):
    rows = small_rows()
    path = write_packed(tmp_path, rows)
    mean, std = np.full(DIM, 3.0, np.float32), np.full(DIM, 2.0, np.float32)
    cfg = from_dict(DataConfig, {"max_frames": 400, "buckets": 3})
    loader = build_loader(cfg, path, (mean, std), seed=0)
    by_utt = {r[0]: r for r in rows}
    raw = PackedDataset(path, cmvn=None)
    n = 0
    for batch in loader:
        b = len(batch["utts"])
        assert batch["feats"].dtype == torch.float32 and batch["feats"].shape[0] == b
        assert batch["feats"].shape[1] * b <= 400
        assert batch["feats"].shape[2] == DIM and "feats_sup" not in batch
        for i, utt in enumerate(batch["utts"]):
            _, lang, nf, lab, toks = by_utt[utt]
            assert batch["feat_lens"][i] == nf and batch["langs"][i] == lang
            assert bool(batch["labelled"][i]) == lab
            assert torch.all(batch["feats"][i, nf:] == 0)
            j = raw.utts.index(utt)
            expect = (raw.load_feats(j) - 3.0) / 2.0
            assert torch.allclose(batch["feats"][i, :nf], torch.from_numpy(expect))
            if lab:
                assert batch["token_lens"][i] == len(toks)
                assert batch["tokens"][i, : len(toks)].tolist() == toks
            else:
                assert batch["token_lens"][i] == 0
            assert torch.all(batch["tokens"][i, batch["token_lens"][i]:] == 0)
        n += b
    assert n == len(rows)
    assert loader.epoch == 1


def test_loader_deterministic_with_workers(tmp_path):
    path = write_packed(tmp_path, small_rows())
    cfg = DataConfig(max_frames=300, buckets=2, lang_alpha=0.5, num_workers=0,
                     specaug=SpecAugConfig(enabled=True, freq_width=3, time_width=10, time_ratio=0.2))
    a = list(build_loader(cfg, path, cmvn_identity(), seed=7))
    cfg.num_workers = 2
    b = list(build_loader(cfg, path, cmvn_identity(), seed=7))
    assert [x["utts"] for x in a] == [x["utts"] for x in b]
    for x, y in zip(a, b):
        assert torch.equal(x["feats_sup"], y["feats_sup"])
    seeds = [x.seed for x in build_loader(cfg, path, cmvn_identity(), seed=7).batch_sampler.epoch_batches()]
    assert len(set(seeds)) == len(seeds)  # each batch its own augmentation RNG, carried to workers
    c = list(build_loader(cfg, path, cmvn_identity(), seed=8))
    assert [x["utts"] for x in a] != [x["utts"] for x in c]


def test_resume_mid_epoch_gives_remaining_batches(tmp_path):
    path = write_packed(tmp_path, small_rows(60))
    cfg = DataConfig(max_frames=300, buckets=3, lang_alpha=0.5)
    ref = build_loader(cfg, path, cmvn_identity(), seed=5)
    epoch0, epoch1 = collect(ref), collect(ref)
    assert len(epoch0) > 4 and epoch0 != epoch1

    run = build_loader(cfg, path, cmvn_identity(), seed=5)
    it = iter(run)
    got = [next(it)["utts"] for _ in range(3)]
    state = run.state_dict()
    assert state["epoch"] == 0 and state["position"] == 3
    resumed = build_loader(cfg, path, cmvn_identity(), seed=5)
    resumed.load_state_dict(state)
    assert len(resumed) == len(epoch0) - 3
    assert got + collect(resumed) == epoch0
    assert collect(resumed) == epoch1  # and the next epoch is the same as uninterrupted


def test_specaug_only_labelled_rows_feats_untouched(tmp_path):
    rows = small_rows(30)
    path = write_packed(tmp_path, rows)
    spec = SpecAugConfig(enabled=True, time_warp=0, freq_masks=2, freq_width=4,
                         time_masks=2, time_width=20, time_ratio=0.3)
    cfg = DataConfig(max_frames=600, buckets=1, specaug=spec)
    plain = {u: f for b in build_loader(DataConfig(max_frames=600, buckets=1), path, cmvn_identity())
             for u, f in zip(b["utts"], b["feats"])}
    n_lab = 0
    for batch in build_loader(cfg, path, cmvn_identity()):
        for i, utt in enumerate(batch["utts"]):
            n = int(batch["feat_lens"][i])
            assert torch.equal(batch["feats"][i, :n], plain[utt][:n])  # feats never augmented
            if batch["labelled"][i]:
                n_lab += 1
                sup = batch["feats_sup"][i, :n]
                assert (sup == 0).any() and not torch.equal(sup, batch["feats"][i, :n])
            else:
                assert torch.equal(batch["feats_sup"][i], batch["feats"][i])
    assert n_lab > 0


def test_specaug_mask_widths_and_time_warp():
    x = np.random.default_rng(0).standard_normal((200, 80)).astype(np.float32) + 5
    cfg = SpecAugConfig(enabled=True, freq_masks=1, freq_width=10, time_masks=1,
                        time_width=100, time_ratio=0.05)
    for s in range(20):
        y = spec_augment(x, cfg, np.random.default_rng(s))
        zero_cols = np.nonzero((y == 0).all(axis=0))[0]
        zero_rows = np.nonzero((y == 0).all(axis=1))[0]
        assert len(zero_cols) <= 10 and len(zero_rows) <= 10  # min(100, 0.05 * 200)
    assert not np.any(x == 0)  # input untouched
    warp = SpecAugConfig(time_warp=20, freq_masks=0, time_masks=0)
    outs = [spec_augment(x, warp, np.random.default_rng(s)) for s in range(5)]
    assert all(w.shape == x.shape for w in outs)
    assert sum(not np.allclose(w, x) for w in outs) >= 3  # a zero shift (p = 1/41) leaves x as is
    assert all(np.allclose(w[0], x[0], atol=1e-4) for w in outs)  # the ends stay in place


def test_missing_feats_file_names_utt_and_path(tmp_path):
    path = write_packed(tmp_path, small_rows(6))
    (tmp_path / "train.ark").unlink()
    ds = PackedDataset(path)
    with pytest.raises(PackedDataError, match=rf"utt {ds.utts[0]}: feats file .*train\.ark not found"):
        ds[0]


def test_bad_jsonl_names_line_and_utt(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"utt": "u1", "feats": "a.ark:1", "num_frames": 3}\n', encoding="utf-8")
    with pytest.raises(PackedDataError, match=r"bad\.jsonl:1: utt u1: missing key"):
        PackedDataset(p)


def test_data_config_from_yaml_dict():
    cfg = from_dict(DataConfig, {"max_frames": 1000, "lang_alpha": 0.3,
                                 "specaug": {"enabled": True, "time_warp": 5}})
    assert cfg.specaug.enabled and cfg.specaug.time_warp == 5
    with pytest.raises(ValueError, match="unknown key"):
        from_dict(DataConfig, {"max_frame": 1})


def test_cmvn_from_kaldi_stats_file(tmp_path):
    from justkit.frontend.cmvn import write_cmvn

    path = write_packed(tmp_path, small_rows(12))
    raw = PackedDataset(path)
    x = np.concatenate([raw.load_feats(i) for i in range(len(raw))]).astype(np.float64)
    stats = np.zeros((2, DIM + 1))
    stats[0, :DIM], stats[0, DIM], stats[1, :DIM] = x.sum(0), len(x), (x * x).sum(0)
    write_cmvn(tmp_path / "cmvn.ark", stats)
    batches = list(build_loader(DataConfig(max_frames=10000, buckets=1), path, tmp_path / "cmvn.ark",
                                train=False))
    y = torch.cat([b["feats"][i, : b["feat_lens"][i]] for b in batches for i in range(len(b["utts"]))])
    assert y.shape[0] == len(x)
    assert torch.allclose(y.mean(0), torch.zeros(DIM), atol=1e-4)
    assert torch.allclose(y.std(0, unbiased=False), torch.ones(DIM), atol=1e-3)


# -- stage 5: pack CLI ------------------------------------------------------------------------
PACK_TEXTS = {
    "en": ["The black horse.", "My father's book", "a well-known man"],
    "de": ["Die Straße ist größer", "Über dem Fluss"],
    "pl": ["Zażółć gęślą jaźń", "Łódź i źdźbło"],
    "fr": ["L'élève à l'hôtel", "Où êtes-vous, garçon ?"],
}


@pytest.fixture(scope="module")
def spm_model(tmp_path_factory):
    from justkit.text.normalize import normalize
    from justkit.text.tokenizer import TokenizerConfig, train_tokenizer

    items = {l: [(f"{l}{i}", normalize(t, l)) for i, t in enumerate(v)] for l, v in PACK_TEXTS.items()}
    out = tmp_path_factory.mktemp("token")
    train_tokenizer(items, out, TokenizerConfig(vocab_size=80, hard_vocab_limit=False))
    return out / "spm.model"


def make_fbank_dir(root, name="train"):
    """A dump/fbank/<set>-like dir: text, utt2lang, feats.scp (kaldiio ark), utt2num_frames."""
    d = root / "dump" / "fbank" / name
    d.mkdir(parents=True)
    rng = np.random.default_rng(1)
    # Sorted by id, as every stage writes a data dir's tables (stage 5 joins them in one pass).
    rows = sorted((f"{l}_spk_{i:03d}", l, t) for l, v in PACK_TEXTS.items() for i, t in enumerate(v))
    with kaldiio.WriteHelper(f"ark,scp:{d}/feats.1.ark,{d}/feats.scp") as w:
        for utt, _, _ in rows:
            # 3-9 s: long enough for their transcripts (stage 5 drops more tokens than encoder frames)
            w(utt, rng.standard_normal((int(rng.integers(300, 900)), DIM)).astype(np.float32))
    nf = {u: kaldiio.load_mat(rx).shape[0] for u, rx in
          (l.split(maxsplit=1) for l in (d / "feats.scp").read_text().splitlines())}
    for name_, table in (("text", {u: t for u, _, t in rows}), ("utt2lang", {u: l for u, l, _ in rows}),
                         ("utt2num_frames", nf)):
        (d / name_).write_text("".join(f"{k} {v}\n" for k, v in sorted(table.items())), encoding="utf-8")
    return d, rows


def run_pack(args):
    from justkit.bin import pack_examples

    return pack_examples.main([str(a) for a in args])


def test_pack_cli_with_labelled_subset(tmp_path, spm_model):
    from justkit.text.tokenizer import Tokenizer

    d, rows = make_fbank_dir(tmp_path)
    subsets = []
    for lang in ("en", "pl"):  # as run.sh: data/train_<lang>_9h/text
        s = tmp_path / "data" / f"train_{lang}_9h"
        s.mkdir(parents=True)
        first = [u for u, l, t in rows if l == lang][:1]
        (s / "text").write_text("".join(f"{u} x\n" for u in first), encoding="utf-8")
        subsets.append(s)
    out = tmp_path / "dump" / "packed" / "train.jsonl"
    opts = [w for s in subsets for w in ("--labelled_subset", s)]
    assert run_pack(["--tokenizer", spm_model, *opts, d, out]) == 0
    lines = [json.loads(l) for l in out.read_text(encoding="utf-8").splitlines()]
    assert [e["utt"] for e in lines] == sorted(u for u, _, _ in rows)
    tok = Tokenizer(spm_model)
    scp = dict(l.split(maxsplit=1) for l in (d / "feats.scp").read_text().splitlines())
    for e in lines:
        assert set(e) == {"utt", "feats", "num_frames", "tokens", "lang", "labelled", "text"}
        assert e["feats"] == scp[e["utt"]] and kaldiio.load_mat(e["feats"]).shape[0] == e["num_frames"]
        assert tok.decode(e["tokens"]) == e["text"]
        assert e["labelled"] == (e["utt"] in {"en_spk_000", "pl_spk_000"})
    pl = next(e for e in lines if e["utt"] == "pl_spk_000")
    assert pl["text"] == "zażółć gęślą jaźń" and pl["lang"] == "pl"
    # without subsets everything is labelled, and the loader reads the packed file
    assert run_pack(["--tokenizer", spm_model, d, out]) == 0
    assert all(json.loads(l)["labelled"] for l in out.read_text(encoding="utf-8").splitlines())
    batches = list(build_loader(DataConfig(max_frames=1000), out, cmvn_identity()))
    assert sum(len(b["utts"]) for b in batches) == len(rows)


@pytest.mark.parametrize("breakage,message", [
    ("no_feats", r"feats\.scp: utt de_spk_001 has no feats entry"),
    ("empty_text", r"text: utt de_spk_001: empty transcript"),
    ("unk_only", r"text: utt de_spk_001: transcript .* encodes to <unk> only"),
    ("no_lang", r"utt2lang: utt de_spk_001 has no language"),
])
def test_pack_bad_input_names_utterance(tmp_path, spm_model, capfd, breakage, message):
    d, rows = make_fbank_dir(tmp_path)
    bad = "de_spk_001"

    def rewrite(name, fn):
        lines = (d / name).read_text(encoding="utf-8").splitlines()
        (d / name).write_text("".join(fn(l) for l in lines), encoding="utf-8")

    if breakage == "no_feats":
        rewrite("feats.scp", lambda l: "" if l.startswith(bad) else l + "\n")
    elif breakage == "empty_text":
        rewrite("text", lambda l: f"{bad} ?!\n" if l.startswith(bad) else l + "\n")
    elif breakage == "unk_only":
        rewrite("text", lambda l: f"{bad} ЖЖЖ\n" if l.startswith(bad) else l + "\n")
    else:
        rewrite("utt2lang", lambda l: "" if l.startswith(bad) else l + "\n")
    out = tmp_path / "train.jsonl"
    out.write_text("previous\n", encoding="utf-8")
    assert run_pack(["--tokenizer", spm_model, d, out]) == 2  # the CLI logs one line to stderr
    err = capfd.readouterr().err
    assert re.search(message, err), err
    assert out.read_text(encoding="utf-8") == "previous\n"  # nothing produced earlier is corrupted


def test_pack_unlabelled_pool_without_transcripts(tmp_path):
    """--unlabelled: audio only; no text file needed, every example unlabelled without tokens."""
    d, rows = make_fbank_dir(tmp_path)
    (d / "text").unlink()
    out = tmp_path / "pool.jsonl"
    assert run_pack(["--unlabelled", d, out]) == 0
    lines = [json.loads(l) for l in out.read_text(encoding="utf-8").splitlines()]
    assert len(lines) == len(rows) and not any(e["labelled"] or e["tokens"] or e["text"] for e in lines)
    assert run_pack([d, tmp_path / "x.jsonl"]) == 2  # labelled packing needs a tokenizer (and text)


# -- the packed index and the vectorised epoch plan ---------------------------------------------
def reference_all_batches(s, epoch):
    """The sampler's epoch plan as the per-bucket Python loop wrote it before the flat plan."""
    from justkit.data.sampler import _batch_seed, _greedy_cuts_py

    def cut(order):
        return [b.tolist() for b in np.split(np.asarray(order), _greedy_cuts_py(np.asarray(order), s.lengths,
                                                                                s.max_frames))]

    rng = np.random.default_rng((s.seed, epoch))
    if not s.shuffle:
        batches = cut(np.argsort(s.lengths, kind="stable"))
    else:
        drawn = s._draw_epoch(rng)
        bucket_of = np.searchsorted(s.bucket_edges, s.lengths[drawn], side="left")
        batches = []
        for b in range(len(s.bucket_edges) + 1):
            members = drawn[bucket_of == b]
            if len(members):
                batches.extend(cut(rng.permutation(members)))
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return [(b, _batch_seed(s.seed, epoch, n)) for n, b in enumerate(batches)]


@pytest.mark.parametrize("shuffle,share,world", [(True, 0.0, 1), (True, 0.3, 3), (False, 0.0, 2)])
def test_flat_plan_equals_the_per_bucket_loop(shuffle, share, world):
    # 30k utterances: buckets of > 4096, so the numba cut runs, not only its Python twin.
    n = 30000
    rng = np.random.default_rng(5)
    lengths = np.clip(rng.lognormal(np.log(1200), 0.5, size=n), 50, 3500).astype(np.int32)
    langs = rng.choice(["en", "de", "pl"], p=[0.8, 0.15, 0.05], size=n)
    labelled = rng.random(n) < 0.2
    for epoch in (0, 3):
        sub = [BucketBatchSampler(lengths, list(langs), max_frames=20000, num_buckets=4, lang_alpha=0.5,
                                  seed=2, shuffle=shuffle, labelled=labelled, labelled_share=share,
                                  rank=r, world_size=world) for r in range(world)]
        ref = reference_all_batches(sub[0], epoch)
        plan = sub[0].all_batches(epoch)
        assert [(list(b), b.seed) for b in plan] == ref
        if shuffle:
            ref = ref[: len(ref) // world * world]
        for r, s in enumerate(sub):
            mine = s.epoch_batches(epoch)
            assert [(list(b), b.seed) for b in mine] == ref[r::world]
            assert mine.padding_fraction() == pytest.approx(padding_fraction([b for b, _ in ref[r::world]], lengths))


def test_greedy_cuts_numba_equals_python():
    from justkit.data.sampler import _greedy_cuts_py, greedy_cuts

    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 3000, size=50000).astype(np.int32)
    order = rng.permutation(50000)
    for budget in (2500, 20000, 1):  # 1: every item over budget, one batch each
        assert np.array_equal(greedy_cuts(order, lengths, budget), _greedy_cuts_py(order, lengths, budget))


def test_sampler_takes_language_codes():
    lengths = mls_like_lengths(300)
    names = ["de", "en"]
    codes = np.array([1, 0, 1] * 100, dtype=np.uint8)
    a = BucketBatchSampler(lengths, codes, max_frames=6000, seed=3, lang_alpha=0.5, lang_names=names)
    b = BucketBatchSampler(lengths, [names[c] for c in codes], max_frames=6000, seed=3, lang_alpha=0.5)
    assert [list(x) for x in a] == [list(x) for x in b]


def test_stage5_writes_an_index_the_loader_maps(tmp_path, spm_model):
    from justkit.data.manifest import PackedIndex, index_paths

    d, rows = make_fbank_dir(tmp_path)
    out = tmp_path / "dump" / "packed" / "train.jsonl"
    assert run_pack(["--tokenizer", spm_model, d, out]) == 0
    npy, meta = index_paths(out)
    assert npy.is_file() and meta.is_file()
    idx = PackedIndex.open(out)
    assert isinstance(idx.rows, np.memmap)  # mapped, not read
    lines = [json.loads(l) for l in out.read_text(encoding="utf-8").splitlines()]
    assert [idx[i] for i in range(len(idx))] == lines
    assert idx.lengths.tolist() == [e["num_frames"] for e in lines]
    assert [idx.lang_names[c] for c in idx.lang_codes] == [e["lang"] for e in lines]
    assert idx.num_tokens.tolist() == [len(e["tokens"]) for e in lines]
    # The dataset over the index and over the dicts give the same items.
    a, b = PackedDataset(out), PackedDataset(lines)
    assert a.lengths.tolist() == b.lengths.tolist() and a.langs == b.langs
    assert all(np.array_equal(a[i]["feats"], b[i]["feats"]) and a[i]["tokens"] == b[i]["tokens"]
               for i in range(len(a)))
    # Workers read their lines on their own descriptors: the same batches with 0 and 2 workers.
    cfg = DataConfig(max_frames=2000, buckets=2, seed=1)  # utterances are 300-900 frames
    one = collect(build_loader(cfg, out, cmvn_identity()))
    cfg.num_workers = 2
    assert collect(build_loader(cfg, out, cmvn_identity())) == one


def test_stale_index_is_not_trusted(tmp_path, caplog):
    from justkit.data.manifest import write_index

    path = write_packed(tmp_path, small_rows(12))
    write_index(path)
    rows = small_rows(12)
    rows[0] = (rows[0][0], rows[0][1], rows[0][2] + 1000, rows[0][3], rows[0][4])
    write_packed(tmp_path, rows)  # the jsonl changes, the index beside it does not
    with caplog.at_level(logging.WARNING):
        ds = PackedDataset(path)
    assert "does not match" in caplog.text
    i = sorted(r[0] for r in rows).index(rows[0][0])  # the jsonl is sorted by utterance
    assert ds.lengths[i] == rows[0][2] and ds[i]["utt"] == rows[0][0]


def test_index_pointing_at_a_rewritten_line_names_it(tmp_path):
    from justkit.data.manifest import write_index

    path = write_packed(tmp_path, small_rows(12))
    write_index(path)
    text = path.read_bytes()
    lines = text.split(b"\n")
    lines[3] = b"x" * len(lines[3])  # same size: the index still matches the file's length
    path.write_bytes(b"\n".join(lines))
    ds = PackedDataset(path)
    with pytest.raises(PackedDataError, match=r"train\.jsonl:4: not valid JSON .*re-run stage 5"):
        ds[3]


def test_pack_refuses_unsorted_tables_naming_the_line(tmp_path, spm_model):
    from justkit.data.pack import PackError, pack_examples
    from justkit.text.tokenizer import Tokenizer

    d, _ = make_fbank_dir(tmp_path)
    lines = (d / "utt2lang").read_text(encoding="utf-8").splitlines()
    lines[1], lines[2] = lines[2], lines[1]
    (d / "utt2lang").write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(PackError, match=r"utt2lang: utt \S+ has no language \(line 2 is .*not sorted"):
        pack_examples(d, Tokenizer(spm_model))
    lines[1], lines[2] = lines[2], lines[1]
    (d / "utt2lang").write_text("\n".join(lines) + "\n", encoding="utf-8")
    text = (d / "text").read_text(encoding="utf-8").splitlines()
    text[1], text[2] = text[2], text[1]  # the table that drives the join: every line is read in turn
    (d / "text").write_text("\n".join(text) + "\n", encoding="utf-8")
    with pytest.raises(PackError, match=r"text:3: id \S+: not sorted .*fix_data_dir"):
        pack_examples(d, Tokenizer(spm_model))


def test_labelled_only_keeps_the_index(tmp_path):
    from justkit.data.manifest import PackedIndex, write_index

    rows = small_rows(30)
    path = write_packed(tmp_path, rows)
    write_index(path)
    loader = build_loader(DataConfig(max_frames=400, buckets=2), path, cmvn_identity(), labelled_only=True)
    ds = loader.dataset
    assert isinstance(ds.entries, PackedIndex)
    assert len(ds) == sum(r[3] for r in rows) and ds.labelled.all()
    assert sorted(u for b in collect(loader) for u in b) <= sorted(r[0] for r in rows if r[3])


# -- features on the fly (stage 3 --feats_type raw) ----------------------------------------
def speechy(n, seed, rate=16000):
    rng = np.random.default_rng(seed)
    t = np.arange(n) / rate
    f0 = rng.uniform(100, 250)
    x = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 15)) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
    return (0.2 * x / np.abs(x).max() + 0.01 * rng.standard_normal(n)).astype(np.float32)


def fly_corpus(tmp_path, storage="float32", dither=0.0, n=5):
    """FLAC files, their stage-3 features (stage 3's own job function) and two packed jsonl files
    over them: ``stored`` (feats rxspecifiers) and ``fly`` (audio entries, feats null)."""
    import soundfile as sf

    from justkit.frontend.fbank import FbankConfig
    from justkit.frontend.shards import fbank_shard

    cfg = FbankConfig(storage=storage, dither=dither)
    (tmp_path / "audio").mkdir(exist_ok=True)
    wav = {}
    for i in range(n):
        utt = f"en_{i:03d}"
        path = tmp_path / "audio" / f"{utt}.flac"
        sf.write(path, speechy(8000 + 1777 * i, i), 16000, format="FLAC", subtype="PCM_16")
        wav[utt] = str(path)
    (tmp_path / "wav.scp").write_text("".join(f"{u} {p}\n" for u, p in wav.items()))
    scp, frames, bad = fbank_shard(tmp_path / "wav.scp", str(tmp_path / f"feats_{storage}.ark"), cfg)
    assert not bad
    out = {}
    for name, where in (("stored", lambda u: {"feats": scp[u]}), ("fly", lambda u: {"feats": None, "audio": wav[u]})):
        path = tmp_path / f"{name}_{storage}_{dither}.jsonl"
        with open(path, "w") as f:
            for u in sorted(wav):
                f.write(json.dumps({"utt": u, **where(u), "num_frames": int(frames[u]), "tokens": [3, 4],
                                    "lang": "en", "labelled": True, "text": "x"}) + "\n")
        out[name] = path
    rng = np.random.default_rng(5)
    cmvn = (rng.normal(10, 1, 80).astype(np.float32), rng.uniform(1, 3, 80).astype(np.float32))
    return cfg, wav, out, cmvn


@pytest.mark.parametrize("dither", [0.0, 1.0])
def test_fly_feats_equal_stored_float32(tmp_path, dither):
    """Audio entries: fbank computed in the loader equals stage 3's stored float32 features exactly
    (same function, same options; a non-zero dither is seeded by the utterance id in both)."""
    cfg, wav, packed, cmvn = fly_corpus(tmp_path, dither=dither)
    stored = PackedDataset(packed["stored"], cmvn=cmvn)
    fly = PackedDataset(packed["fly"], cmvn=cmvn, fbank=cfg)
    for i in range(len(fly)):
        a, b = stored[i], fly[i]
        assert set(a) == set(b) and a["utt"] == b["utt"]
        np.testing.assert_array_equal(a["feats"], b["feats"])
        np.testing.assert_array_equal(b["feats"], fly[i]["feats"])  # reproducible
    # the loader gives identical batches either way (fbank given as the recorded yaml mapping)
    from justkit.config import to_dict

    for cfg_data in (DataConfig(max_frames=400, num_workers=0), DataConfig(max_frames=400, num_workers=2)):
        ba = list(build_loader(cfg_data, packed["stored"], cmvn))
        bb = list(build_loader(cfg_data, packed["fly"], cmvn, fbank=to_dict(cfg)))
        assert [x["utts"] for x in ba] == [x["utts"] for x in bb]
        for x, y in zip(ba, bb):
            assert torch.equal(x["feats"], y["feats"]) and torch.equal(x["feat_lens"], y["feat_lens"])


def test_fly_feats_vs_compressed_storage(tmp_path):
    """Against Kaldi-compressed storage the on-the-fly features differ by the format's quantisation only."""
    cfg, wav, packed, cmvn = fly_corpus(tmp_path, storage="compressed")
    stored = PackedDataset(packed["stored"])
    fly = PackedDataset(packed["fly"], fbank=cfg)
    for i in range(len(fly)):
        exact = fly.load_feats(i)
        col_range = exact.max(0) - exact.min(0)
        assert (np.abs(stored.load_feats(i) - exact) <= col_range / 64 + 1e-5).all()


def test_fly_resamples_48k_audio(tmp_path):
    """An audio entry at 48 kHz (stage 1's opus rate) is resampled in the worker with stage 2's resampler."""
    import soundfile as sf

    from justkit.frontend.fbank import FbankConfig, compute_fbank, num_frames
    from justkit.frontend.resample import output_length, resample

    x = speechy(48000 + 5, 1, 48000)
    path = tmp_path / "a.flac"
    sf.write(path, x, 48000, format="FLAC", subtype="PCM_24")
    cfg = FbankConfig()
    y, _ = sf.read(path, dtype="float32")
    n = num_frames(output_length(len(y), 48000, 16000), cfg)
    row = {"utt": "a", "feats": None, "audio": str(path), "num_frames": n, "tokens": [1], "lang": "en",
           "labelled": True, "text": "x"}
    ds = PackedDataset([row], fbank=cfg)
    np.testing.assert_array_equal(ds.load_feats(0), compute_fbank(resample(y, 48000, 16000), cfg, 16000, "a"))


def test_fly_bad_audio_names_jsonl_utt_and_file(tmp_path):
    cfg, wav, packed, cmvn = fly_corpus(tmp_path, n=3)
    rows = [json.loads(l) for l in packed["fly"].read_text().splitlines()]

    def dataset(mutate, fbank=cfg):
        r = [dict(x) for x in rows]
        mutate(r[1])
        p = tmp_path / "bad.jsonl"
        p.write_text("".join(json.dumps(x) + "\n" for x in r))
        return PackedDataset(p, fbank=fbank)

    Path = type(tmp_path)
    Path(wav["en_001"]).write_bytes(b"fLaC" + bytes(100))  # corrupt
    with pytest.raises(PackedDataError, match=r"bad\.jsonl: utt en_001: .*en_001\.flac: utterance en_001: "
                                              r"unreadable or corrupt audio"):
        dataset(lambda r: None).load_feats(1)
    with pytest.raises(PackedDataError, match=r"bad\.jsonl: utt en_001: .*nope\.flac: .*file not found"):
        dataset(lambda r: r.update(audio=str(tmp_path / "nope.flac"))).load_feats(1)
    with pytest.raises(PackedDataError, match=r"bad\.jsonl: utt en_001: .*en_002\.flac gives fbank of shape "
                                              r"\(\d+, 80\), expected 7 frames"):
        dataset(lambda r: r.update(audio=wav["en_002"], num_frames=7)).load_feats(1)
    # the device path's loader (waveforms only) checks the same frame count and names the same things
    wrong = dataset(lambda r: r.update(audio=wav["en_002"], num_frames=7))
    wrong.features_on = "device"
    with pytest.raises(PackedDataError, match=r"bad\.jsonl: utt en_001: audio .*en_002\.flac has \d+ samples at "
                                              r"16000 Hz = \d+ frames, expected 7"):
        wrong[1]
    with pytest.raises(PackedDataError, match=r"stored feats, no audio: data\.features_on device needs"):
        PackedDataset(packed["stored"], fbank=cfg, features_on="device")[0]
    from justkit.fileio import PipeRefused

    with pytest.raises(PipeRefused, match=r"bad\.jsonl: utt en_001: audio: 'sox .* is a shell command"):
        dataset(lambda r: r.update(audio="sox x.wav -t wav - |")).load_feats(1)
    with pytest.raises(PackedDataError, match=r"bad\.jsonl: utt en_001: neither feats nor audio"):
        dataset(lambda r: r.pop("audio")).load_feats(1)
    with pytest.raises(PackedDataError, match=r"bad\.jsonl: utt en_001: audio entry .* but no fbank config"):
        dataset(lambda r: None, fbank=None).load_feats(1)


def test_pack_raw_dir_points_at_audio(tmp_path, spm_model):
    """Stage 5 on a stage-3 raw dir (wav.scp, no feats.scp): audio entries, feats null; old
    feats entries still load (the tests above); the loader trains from them."""
    cfg, wav, packed, cmvn = fly_corpus(tmp_path, n=4)
    d = tmp_path / "dump" / "onthefly" / "train"
    d.mkdir(parents=True)
    rows = [json.loads(l) for l in packed["fly"].read_text().splitlines()]
    tables = {"wav.scp": {r["utt"]: r["audio"] for r in rows}, "text": {r["utt"]: "hello world" for r in rows},
              "utt2lang": {r["utt"]: "en" for r in rows}, "utt2num_frames": {r["utt"]: r["num_frames"] for r in rows}}
    for name, t in tables.items():
        (d / name).write_text("".join(f"{k} {v}\n" for k, v in sorted(t.items())))
    out = tmp_path / "train.jsonl"
    assert run_pack(["--tokenizer", spm_model, d, out]) == 0
    got = [json.loads(l) for l in out.read_text().splitlines()]
    assert [(g["utt"], g["audio"], g["feats"], g["num_frames"]) for g in got] == \
        [(r["utt"], r["audio"], None, r["num_frames"]) for r in rows]
    batches = list(build_loader(DataConfig(max_frames=1000), out, cmvn, fbank=cfg))
    assert sum(len(b["utts"]) for b in batches) == len(rows)
    (d / "wav.scp").write_text("en_000 sox a.wav -t wav - |\n")
    assert run_pack(["--tokenizer", spm_model, d, out]) == 2  # a piped entry is refused at packing


def test_device_features_match_loader_path(tmp_path):
    """data.features_on device: the loader hands out padded waveforms; device_features (batched fbank +
    CMVN, here on CPU) gives per utterance the loader path's features within 1e-4 (measured: <= 2e-6
    in log-mel, before CMVN), zero padding included; the frame counts are the packed ones."""
    from justkit.data.loader import device_features

    cfg, wav, packed, cmvn = fly_corpus(tmp_path, dither=1.0)
    ref = {b_utt: f for b in build_loader(DataConfig(max_frames=600), packed["fly"], cmvn, fbank=cfg)
           for b_utt, f, n in zip(b["utts"], b["feats"], b["feat_lens"]) for f in [f[:n]]}
    dev_cfg = DataConfig(max_frames=600, features_on="device")
    n_batches = 0
    for b in build_loader(dev_cfg, packed["fly"], cmvn, fbank=cfg):
        assert "feats" not in b and b["wave"].dim() == 2
        out = device_features(b, cfg, cmvn)
        assert "wave" not in out and out["feats"].shape[:2] == (len(b["utts"]), int(b["feat_lens"].max()))
        for utt, f, n in zip(out["utts"], out["feats"], out["feat_lens"]):
            torch.testing.assert_close(f[:n], ref[utt], atol=1e-4, rtol=0)
            assert not f[n:].any()
        n_batches += 1
    assert n_batches >= 2
    with pytest.raises(ValueError, match="features_on device does not support SpecAugment"):
        DataConfig(features_on="device", specaug={"enabled": True})
    with pytest.raises(ValueError, match="features_on must be loader or device"):
        DataConfig(features_on="gpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_device_features_on_cuda_match_loader_path(tmp_path):
    from justkit.data.loader import device_features

    cfg, wav, packed, cmvn = fly_corpus(tmp_path)
    ref = {u: f[:n] for b in build_loader(DataConfig(max_frames=600), packed["fly"], cmvn, fbank=cfg)
           for u, f, n in zip(b["utts"], b["feats"], b["feat_lens"])}
    for b in build_loader(DataConfig(max_frames=600, features_on="device"), packed["fly"], cmvn, fbank=cfg):
        b = {k: (v.cuda() if torch.is_tensor(v) else v) for k, v in b.items()}
        out = device_features(b, cfg, cmvn)
        assert out["feats"].is_cuda
        for utt, f, n in zip(out["utts"], out["feats"].cpu(), out["feat_lens"].cpu()):
            torch.testing.assert_close(f[:n], ref[utt], atol=2e-3, rtol=0)


def test_bucket_edges_from_the_histogram_equal_numpy_quantiles():
    from justkit.data.sampler import length_histogram, quantiles_from_histogram

    rng = np.random.default_rng(3)
    for lengths in (rng.integers(1, 3000, size=20001), np.clip(rng.normal(1500, 5, size=999), 1, None).astype(int),
                    np.array([7]), np.array([3, 3, 3, 9])):
        qs = np.linspace(0, 1, 31)
        assert np.array_equal(quantiles_from_histogram(length_histogram(lengths), qs), np.quantile(lengths, qs))
        kept = lengths[lengths <= 2000]
        if len(kept):
            assert np.array_equal(quantiles_from_histogram(length_histogram(lengths, 2000), qs), np.quantile(kept, qs))
    s = BucketBatchSampler(mls_like_lengths(5000), ["en"] * 5000, max_frames=1800, num_buckets=7)
    kept = s.lengths[s.lengths <= 1800]
    assert np.array_equal(s.bucket_edges, np.unique(np.quantile(kept, np.linspace(0, 1, 8)[1:-1])))
