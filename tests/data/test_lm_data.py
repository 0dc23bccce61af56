"""LM data: the mini corpus' LM text, LM text preparation (normalise, drop dev/test), packing, the text loader."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from justkit.data.text import TextDataConfig, TextDataError, TextDataset, build_text_loader, pack_text
from justkit.text.lm_text import LMTextError, prepare_lm_text
from justkit.text.tokenizer import TokenizerConfig, train_tokenizer

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tools" / "mini_mls" / "corpus"


def _builder():
    spec = importlib.util.spec_from_file_location("mini_mls_build_lm", ROOT / "tools" / "mini_mls" / "build.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod   # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def _transcripts(path: Path) -> set:
    return {line.split("\t", 1)[1].rstrip("\n") for line in path.read_text(encoding="utf-8").splitlines(True)}


def test_mini_lm_text_has_no_dev_or_test_sentence_and_is_what_the_builder_writes(tmp_path):
    b = _builder()
    out = tmp_path / "lm"
    b.main(["--size", "lm", "--out", str(out), "--langs", "en pl fr"])   # no espeak-ng needed
    for lang in ("en", "pl", "fr"):
        name = b.LANG_NAMES[lang]
        committed = CORPUS / f"mls_lm_{name}" / "data.txt"
        built = out / f"mls_lm_{name}" / "data.txt"
        assert committed.read_bytes() == built.read_bytes(), f"{committed} is not what build.py --size lm writes"
        lines = committed.read_text(encoding="utf-8").splitlines()
        assert len(lines) == len(set(lines)) > 100
        held = set()
        for split in ("dev", "test"):
            held |= _transcripts(CORPUS / f"mls_{name}_opus" / split / "transcripts.txt")
        assert held and not held & set(lines), f"{lang}: LM text holds dev/test sentences"
        # every dev/test sentence of every size this seed builds is held out, and nothing else
        grammar = set(b.grammar_sentences(b.load_lexicon(lang)))
        assert held <= b.heldout_sentences(lang, 0) and held <= grammar
        assert set(lines) == grammar - b.heldout_sentences(lang, 0)
        # train sentences may be in it (MLS' LM text holds the train books' text too)
        train = _transcripts(CORPUS / f"mls_{name}_opus" / "train" / "transcripts.txt")
        assert train & set(lines)


def _data_dir(d: Path, rows) -> Path:
    d.mkdir(parents=True)
    rows = sorted(rows)
    (d / "text").write_text("".join(f"{u} {t}\n" for u, _, t in rows), encoding="utf-8")
    (d / "utt2lang").write_text("".join(f"{u} {l}\n" for u, l, _ in rows), encoding="utf-8")
    return d


def test_prepare_lm_text_normalises_and_removes_dev_test_sentences(tmp_path):
    src_en = tmp_path / "en.txt"
    src_en.write_text("The Cat sat.\n\n  ...  \nA DOG ran!\nthe cat sat\nFish, swim?\nbirds fly high\n", encoding="utf-8")
    src_pl = tmp_path / "pl.txt"
    src_pl.write_text("Zażółć gęślą jaźń.\nKot śpi\n", encoding="utf-8")
    dev = _data_dir(tmp_path / "dev", [("en_1", "en", "A dog ran"), ("pl_1", "pl", "kot śpi")])
    test = _data_dir(tmp_path / "test", [("en_2", "en", "Birds fly HIGH."), ("cs_1", "en-pl", "the cat sat")])
    out = tmp_path / "lm_train"
    stats = prepare_lm_text({"pl": src_pl, "en": src_en}, [dev, test], out)
    text = (out / "text").read_text(encoding="utf-8").splitlines()
    # "the cat sat" is in the code-switched test set (en-pl): removed for English too
    assert text == ["en_lm_0000000000 fish swim", "pl_lm_0000000000 zażółć gęślą jaźń"]
    assert stats["en"] == {"kept": 1, "excluded": 4, "empty": 2}
    assert stats["pl"] == {"kept": 1, "excluded": 1, "empty": 0}
    (tmp_path / "en2.txt").write_text("the dog sat\n", encoding="utf-8")
    stats = prepare_lm_text({"en": tmp_path / "en2.txt", "pl": src_pl}, [dev], out, max_sentences=1)
    assert (out / "utt2lang").read_text().splitlines() == ["en_lm_0000000000 en", "pl_lm_0000000000 pl"]
    assert json.loads((out / "stats.json").read_text())["pl"]["kept"] == 1


def test_prepare_lm_text_refuses_missing_empty_and_exhausted_text(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(LMTextError, match=r"nope\.txt: LM text of language en not found"):
        prepare_lm_text({"en": tmp_path / "nope.txt"}, [], out)
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(LMTextError, match=r"empty\.txt: LM text of language en is empty"):
        prepare_lm_text({"en": tmp_path / "empty.txt"}, [], out)
    (tmp_path / "dev.txt").write_text("a dog ran\n...\n")
    dev = _data_dir(tmp_path / "dev", [("en_1", "en", "a dog ran")])
    with pytest.raises(LMTextError, match=r"dev\.txt: no sentence of language en left \(1 are dev/test"):
        prepare_lm_text({"en": tmp_path / "dev.txt"}, [dev], out)
    assert not (out / "text").exists()   # nothing half-written


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    d = tmp_path_factory.mktemp("text")
    texts = {"en": ["the cat sat", "a dog ran far away", "birds fly", "the dog sat", "a cat ran"] * 4,
             "pl": ["kot śpi", "pies biega szybko"] * 2}
    tok = train_tokenizer({l: [(f"{l}_{i:03d}", t) for i, t in enumerate(v)] for l, v in texts.items()},
                          d / "token", TokenizerConfig(vocab_size=40, hard_vocab_limit=False))
    rows = [(f"{l}_{i:03d}", l, t) for l, v in texts.items() for i, t in enumerate(v)]
    src = _data_dir(d / "data", rows)
    info = pack_text(src / "text", src / "utt2lang", tok, d / "packed")
    return d, tok, texts, info


def test_pack_text_round_trips_and_checks_the_vocabulary(packed):
    d, tok, texts, info = packed
    ds = TextDataset(d / "packed", vocab_size=tok.vocab_size)
    assert len(ds) == info["sentences"] == 24 and info["per_lang"]["pl"]["sentences"] == 4
    got = sorted((ds[i]["lang"], tok.decode(ds[i]["tokens"].tolist())) for i in range(len(ds)))
    assert got == sorted((l, t) for l, v in texts.items() for t in v)
    with pytest.raises(TextDataError, match=f"vocabulary of {tok.vocab_size}, the model's is 7"):
        TextDataset(d / "packed", vocab_size=7)


def test_text_loader_resumes_exactly_and_balances_languages(packed, tmp_path):
    d = packed[0]
    cfg = TextDataConfig(max_tokens=24, buckets=2, lang_alpha=0.0, seed=3)
    loader = build_text_loader(cfg, d / "packed")
    full = [b["utts"] for b in loader]
    assert len(full) > 3
    loader.set_epoch(0)
    it = iter(loader)
    first = [next(it)["utts"] for _ in range(2)]
    state = loader.state_dict()
    again = build_text_loader(cfg, d / "packed")
    again.load_state_dict(state)
    assert first + [b["utts"] for b in again] == full
    langs = [u.split(":")[0] for b in full for u in b]
    assert langs.count("pl") == langs.count("en")       # lang_alpha 0: uniform over languages
    batch = next(iter(build_text_loader(cfg, d / "packed", train=False)))
    assert batch["tokens"].shape[0] == len(batch["utts"]) and int(batch["token_lens"].max()) == batch["tokens"].shape[1]
    assert isinstance(len(loader.batch_sampler), int) and len(loader.batch_sampler.epoch_batches()) == len(full)


def test_lm_task_resolves_and_serves_the_trainer_contract(packed, tmp_path):
    from justkit.config import dump_yaml
    from justkit.models.lm import LossOutput
    from justkit.train.distributed import DistInfo
    from justkit.train.lm_task import LMTask

    d, tok = packed[0], packed[1]
    conf = tmp_path / "lm.yaml"
    dump_yaml({"model": {"embed_dim": 8, "hidden_dim": 8, "num_layers": 1},
               "data": {"max_tokens": 40}, "train": {"max_steps": 3, "best_metric": "loss"}}, conf)
    task = LMTask.resolve(conf, ["--train.max_steps", "5"], {"train": str(d / "packed"), "dev": str(d / "packed"),
                                                              "tokenizer": str(d / "token/spm.model")})
    assert task.config["task"] == "lm" and task.config["model"]["vocab_size"] == tok.vocab_size
    assert task.train.max_steps == 5 and LMTask.from_dict(task.config).config == task.config
    task.save(tmp_path / "exp")
    assert LMTask.load(tmp_path / "exp").config == task.config
    model = task.build_model()
    loader = task.train_loader(DistInfo())
    batch = task.to_device(next(iter(loader)), "cpu")
    out = model(batch, 0)
    assert isinstance(out, LossOutput) and out.loss.requires_grad
    assert int(out.num_frames) == int((batch["token_lens"] + 1).sum())
    assert sum(out.weighted.values()).item() == pytest.approx(out.loss.item())
    assert len(list(model.shared_parameters())) == len(list(model.parameters()))
    m = task.dev_metrics(model, "cpu")
    assert sorted(m) == ["dev_ppl", "dev_ppl_en", "dev_ppl_pl"]
    # an untrained LM is close to uniform over the vocabulary
    assert 0.3 * tok.vocab_size < m["dev_ppl"] < 3 * tok.vocab_size
    assert task.dev_loader(DistInfo()) is not None
    with pytest.raises(Exception, match="task is 'asr'"):
        LMTask.from_dict({**task.config, "task": "asr"})
