"""Tests of text normalisation and the multilingual sentencepiece tokenizer (stage 4)."""
from __future__ import annotations

import pytest

from justkit.bin import train_tokenizer as cli
from justkit.text.normalize import normalize
from justkit.text.tokenizer import Tokenizer, TokenizerConfig, TokenizerError, sample_by_language, train_tokenizer

# Small multilingual corpus with every accented letter of the 8 MLS languages.
CORPUS = {
    "en": ["My father wants the black horse.", "Don't stop the dogs' bones, she said!",
           "The naïve café owner isn't here", "a well-known man reads the book"] * 6,
    "de": ["Die Straße über dem Fluss ist größer.", "Äpfel, Öl und Übermut: schön!"] * 3,
    "nl": ["'t Is één keer zo'n mooie dag.", "Hij geeft het kind een appel"] * 2,
    "es": ["¿Qué año nació el niño?", "El señor está aquí, ¡qué pingüino!", "Un útil camión"] * 2,
    "fr": ["L'élève dit-il « bonjour » à l'hôtel ?", "Le garçon où êtes-vous, cœur naïf, Noël",
           "Le château de l'île est sûr"] * 2,
    "pt": ["São Paulo não está à vista.", "O coração põe a mão no pão, você é avô"] * 2,
    "it": ["Perché l'anno più bello è già qui", "La città ò così", "Lunedì la virtù"],
    "pl": ["Zażółć gęślą jaźń, źdźbło łódź.", "Ćma ńą Śląsk Łódź ŻÓŁW"],
}
POLISH_AND_ACCENTS = "éüßñçãąęłńóśźżćöäâêîôûàèìòùõíúœï"


def corpus_items():
    return {l: [(f"{l}_{i:03d}", normalize(t, l)) for i, t in enumerate(v)] for l, v in CORPUS.items()}


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    out = tmp_path_factory.mktemp("token")
    return train_tokenizer(corpus_items(), out, TokenizerConfig(vocab_size=150, hard_vocab_limit=False))


# -- normalisation ----------------------------------------------------------------------------
@pytest.mark.parametrize("lang,raw,expect", [
    ("en", "Don't STOP -- the dogs' bones.", "don't stop the dogs bones"),
    ("en", "  A   well-known  \"quote\"\tHERE ", "a well-known quote here"),
    ("en", "it\u2019s the \u2018end\u2019", "it's the end"),
    ("de", "STRAßE, Über-Ich! Größe?", "straße über-ich größe"),
    ("nl", "'T Is één keer zo'n dag.", "'t is één keer zo'n dag"),
    ("es", "¿Qué AÑO? ¡Pingüino!", "qué año pingüino"),
    ("fr", "L\u2019Élève dit-il : « Bonjour » ?", "l'élève dit-il bonjour"),
    ("pt", "SÃO Paulo — coração; Avô", "são paulo coração avô"),
    ("it", "Perché L'ANNO è già…", "perché l'anno è già"),
    ("pl", "ZAŻÓŁĆ GĘŚLĄ JAŹŃ; Bielsko-Biała", "zażółć gęślą jaźń bielsko-biała"),
    ("en-nl", "The END. 'T is goed", "the end 't is goed"),  # code-switched test set
])
def test_normalize_per_language(lang, raw, expect):
    assert normalize(raw, lang) == expect


def test_normalize_nfc_and_idempotent():
    decomposed = "e\u0301te\u0301 z\u0307o\u0301\u0142w"  # é, ż, ó written with combining marks
    assert normalize(decomposed, "pl") == "été żółw"
    for lang, texts in CORPUS.items():
        for t in texts:
            once = normalize(t, lang)
            assert normalize(once, lang) == once
    assert normalize("?!", "en") == ""


# -- tokenizer --------------------------------------------------------------------------------
def test_special_ids_and_files(tok, tmp_path):
    assert tok.id_to_piece(0) == "<blk>" and tok.blank_id == 0
    assert tok.id_to_piece(1) == "<unk>" and tok.unk_id == 1
    assert tok.sp.bos_id() == -1 and tok.sp.eos_id() == -1
    d = tok.path.parent
    lines = (d / "tokens.txt").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "<blk> 0" and lines[1] == "<unk> 1" and len(lines) == tok.vocab_size
    assert len((d / "spm.vocab").read_text(encoding="utf-8").splitlines()) == tok.vocab_size
    assert not list(d.glob(".*tmp"))  # atomic writes left no temp file


def test_round_trip_every_transcript(tok):
    for lang, items in corpus_items().items():
        for utt, text in items:
            ids = tok.encode(text)
            assert 0 not in ids and 1 not in ids, utt
            assert tok.decode(ids) == text, utt
    assert tok.decode([0] + tok.encode("gęślą") + [0]) == "gęślą"  # blanks are dropped


def test_character_coverage(tok):
    pieces = {tok.id_to_piece(i) for i in range(tok.vocab_size)}
    text = "".join(t for items in corpus_items().values() for _, t in items)
    for c in POLISH_AND_ACCENTS:
        assert c in text, c  # the corpus has it ...
        assert any(c in p for p in pieces), c  # ... and so does the vocabulary
        assert tok.unk_id not in tok.encode(c)


def test_language_balanced_sampling():
    texts = {"en": [f"e{i}" for i in range(900)], "pl": [f"p{i}" for i in range(100)]}
    nat = sample_by_language(texts, alpha=1.0, total=1000, seed=0)
    flat = sample_by_language(texts, alpha=0.0, total=1000, seed=0)
    assert sum(s[0] == "p" for s in nat) == 100
    assert sum(s[0] == "p" for s in flat) == 500 and len(set(s for s in flat if s[0] == "p")) == 100
    assert sample_by_language(texts, 0.5, 1000, 0) == sample_by_language(texts, 0.5, 1000, 0)


def test_round_trip_failure_names_utterance(tmp_path):
    items = corpus_items()
    items["pl"].append(("pl_bad", "dwa  spacje"))  # not normalised: decodes with one space
    with pytest.raises(TokenizerError, match="utt pl_bad"):
        train_tokenizer(items, tmp_path / "t", TokenizerConfig(vocab_size=150, hard_vocab_limit=False))
    assert not (tmp_path / "t" / "spm.model").exists()


def test_bpe_and_deterministic(tmp_path):
    cfg = TokenizerConfig(model_type="bpe", vocab_size=120, hard_vocab_limit=False)
    a = train_tokenizer(corpus_items(), tmp_path / "a", cfg)
    b = train_tokenizer(corpus_items(), tmp_path / "b", cfg)
    assert (tmp_path / "a/spm.model").read_bytes() == (tmp_path / "b/spm.model").read_bytes()
    assert a.decode(a.encode("zażółć gęślą jaźń")) == "zażółć gęślą jaźń"


def test_load_errors(tmp_path):
    with pytest.raises(TokenizerError, match="missing.model"):
        Tokenizer(tmp_path / "missing.model")


def test_cli_as_run_sh_calls_it(tmp_path):
    data = tmp_path / "data" / "train"
    data.mkdir(parents=True)
    items = [(f"{l}_{i:03d}", l, t) for l, v in CORPUS.items() for i, t in enumerate(v)]
    (data / "text").write_text("".join(f"{u} {t}\n" for u, _, t in sorted(items)), encoding="utf-8")
    (data / "utt2lang").write_text("".join(f"{u} {l}\n" for u, l, _ in sorted(items)), encoding="utf-8")
    conf = tmp_path / "tok.yaml"
    conf.write_text("tokenizer:\n  vocab_size: 150\n  hard_vocab_limit: false\n  lang_alpha: 0.3\n", encoding="utf-8")
    out = tmp_path / "data" / "token"
    rc = cli.main(["--config", str(conf), "--text", str(data / "text"), "--utt2lang",
                   str(data / "utt2lang"), "--out", str(out), "--tokenizer.seed", "3"])
    assert rc == 0
    tok = Tokenizer(out / "spm.model")
    assert "seed: 3" in (out / "config.yaml").read_text()
    assert tok.decode(tok.encode(normalize(CORPUS["pl"][0], "pl"))) == "zażółć gęślą jaźń źdźbło łódź"
    # an utterance without a language fails, naming it
    (data / "utt2lang").write_text("".join(f"{u} {l}\n" for u, l, _ in sorted(items)[1:]), encoding="utf-8")
    assert cli.main(["--config", str(conf), "--text", str(data / "text"), "--utt2lang",
                     str(data / "utt2lang"), "--out", str(tmp_path / "t2")]) == 2
    assert not (tmp_path / "t2" / "spm.model").exists()


def test_stage4_streaming_equals_in_memory(tmp_path):
    """Stage 4 reads the data dir in passes instead of holding it: the same draw, the same model."""
    from justkit.datadir.tables import DataDirError
    from justkit.text.tokenizer import read_texts_by_lang, train_tokenizer_on_data_dir

    data = tmp_path / "train"
    data.mkdir()
    items = sorted((f"{l}_{i:03d}", l, t) for l, v in CORPUS.items() for i, t in enumerate(v))
    (data / "text").write_text("".join(f"{u} {t}\n" for u, _, t in items), encoding="utf-8")
    (data / "utt2lang").write_text("".join(f"{u} {l}\n" for u, l, _ in items), encoding="utf-8")
    for n in (0, 40):  # every transcript, and a language-balanced draw of 40 with repeats of pl
        cfg = TokenizerConfig(vocab_size=150, hard_vocab_limit=False, lang_alpha=0.3, num_sentences=n, seed=2)
        train_tokenizer(read_texts_by_lang(data / "text", data / "utt2lang"), tmp_path / f"mem{n}", cfg)
        train_tokenizer_on_data_dir(data / "text", data / "utt2lang", tmp_path / f"stream{n}", cfg)
        assert (tmp_path / f"mem{n}/spm.model").read_bytes() == (tmp_path / f"stream{n}/spm.model").read_bytes()
    (data / "utt2lang").write_text("".join(f"{u} {l}\n" for u, l, _ in reversed(items)), encoding="utf-8")
    with pytest.raises(DataDirError, match=r"utt2lang: utt de_000 has no language .*not sorted"):
        train_tokenizer_on_data_dir(data / "text", data / "utt2lang", tmp_path / "bad", cfg)


def test_translate_table_keeps_what_the_character_rule_keeps():
    """normalize's cached translate table = the per-character rule, over the BMP's first 12k code points."""
    from justkit.text.normalize import _KEEP, _keep

    text = "".join(chr(c) for c in range(1, 0x3000) if not 0xD800 <= c < 0xE000)
    assert text.translate(_KEEP) == "".join(c if _keep(c) else " " for c in text)
