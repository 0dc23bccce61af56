"""Multilingual sentencepiece word-piece model: language-balanced training, loading, encode/decode."""
from __future__ import annotations

import io
import logging
import os
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Mapping, Sequence, Tuple, Union

import numpy as np
import sentencepiece as spm

from justkit.datadir.tables import DataDirError, SortedTableReader
from justkit.fileio import atomic_open, atomic_write_text
from justkit.errors import JustkitError
from justkit.lang import balanced_draw
from justkit.text.normalize import normalize

logger = logging.getLogger(__name__)

BLANK = "<blk>"
UNK = "<unk>"


class TokenizerError(JustkitError, ValueError):
    """Tokenizer training or loading failed; names the file or utterance."""


@dataclass
class TokenizerConfig:
    """``conf/tokenizer_*.yaml``.

    model_type: sentencepiece model, "unigram" or "bpe".
    vocab_size: size including <blk> (id 0) and <unk> (id 1).
    hard_vocab_limit: False lets sentencepiece stop below vocab_size when the text is too
        small to produce that many pieces (the written model says how many it has).
    character_coverage: 1.0 keeps every character (all accented letters of the 8 languages).
    lang_alpha: training text is drawn per language with p_lang proportional to
        n_lang ** lang_alpha (temperature sampling; 1 = natural shares, 0 = uniform).
    num_sentences: transcripts drawn for training (0 = as many as there are transcripts).
    seed: seed of the draw and of sentencepiece's sampling.
    num_threads: sentencepiece training threads.
    """

    model_type: str = "unigram"
    vocab_size: int = 256
    hard_vocab_limit: bool = True
    character_coverage: float = 1.0
    lang_alpha: float = 0.5
    num_sentences: int = 0
    seed: int = 0
    num_threads: int = 1

    def __post_init__(self) -> None:
        if self.model_type not in ("unigram", "bpe"):
            raise ValueError(f"tokenizer.model_type must be unigram or bpe, got {self.model_type!r}")
        if self.vocab_size < 3:
            raise ValueError(f"tokenizer.vocab_size must be >= 3, got {self.vocab_size}")
        if not 0 < self.character_coverage <= 1:
            raise ValueError(f"tokenizer.character_coverage must be in (0, 1], got {self.character_coverage}")


class Tokenizer:
    """A trained model: ``encode(text) -> ids``, ``decode(ids) -> text``; id 0 = <blk>, 1 = <unk>."""

    def __init__(self, model_path: Union[str, os.PathLike]) -> None:
        self.path = Path(model_path)
        self.sp = spm.SentencePieceProcessor()
        try:
            self.sp.load(str(self.path))
        except (OSError, RuntimeError) as e:
            raise TokenizerError(f"{self.path}: cannot load sentencepiece model ({e}); run stage 4") from None
        if self.sp.id_to_piece(0) != BLANK or self.sp.unk_id() != 1:
            raise TokenizerError(
                f"{self.path}: id 0 must be {BLANK} and id 1 {UNK} "
                f"(got {self.sp.id_to_piece(0)!r}, unk id {self.sp.unk_id()})"
            )
        self.blank_id = 0
        self.unk_id = 1

    @property
    def vocab_size(self) -> int:
        return int(self.sp.get_piece_size())

    def id_to_piece(self, i: int) -> str:
        return self.sp.id_to_piece(int(i))

    def encode(self, text: str) -> List[int]:
        return list(self.sp.encode(text, out_type=int))

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids``; blanks (0) are dropped."""
        return self.sp.decode([int(i) for i in ids if int(i) != self.blank_id])

    def decode_pieces(self, pieces: Sequence[str]) -> str:
        """Text of word pieces (strings, as :meth:`id_to_piece` gives them)."""
        return self.sp.decode_pieces(list(pieces))


def sample_by_language(
    texts_by_lang: Mapping[str, Sequence[str]], alpha: float, total: int, seed: int
) -> List[str]:
    """Draw ``total`` transcripts, p_lang proportional to n_lang ** alpha (see balanced_draw)."""
    flat: List[str] = []
    pools: Dict[str, np.ndarray] = {}
    for lang in sorted(texts_by_lang):
        start = len(flat)
        flat.extend(texts_by_lang[lang])
        pools[lang] = np.arange(start, len(flat))
    idx = balanced_draw(pools, alpha, total, np.random.default_rng(seed))
    return [flat[i] for i in idx]


def train_tokenizer(
    texts_by_lang: Mapping[str, Sequence[Tuple[str, str]]],
    out_dir: Union[str, os.PathLike],
    cfg: TokenizerConfig,
) -> Tokenizer:
    """Train on ``{lang: [(utt, normalised text), ...]}``; write spm.model, spm.vocab, tokens.txt.

    Every character of every transcript is a required character (so none maps to <unk>,
    whatever the draw left out), and at the end every transcript must round-trip
    (``decode(encode(t)) == t``); otherwise TokenizerError names the first utterance that does
    not, and nothing is written. (Stage 4 uses :func:`train_tokenizer_on_data_dir`, which
    does the same without holding the transcripts in memory.)
    """
    all_items = [(lang, u, t) for lang in sorted(texts_by_lang) for u, t in texts_by_lang[lang]]
    if not all_items:
        raise TokenizerError("train_tokenizer: no transcripts")
    for lang, utt, text in all_items:
        if not text.strip():
            raise TokenizerError(f"utt {utt} ({lang}): empty transcript after normalisation")
    total = cfg.num_sentences or len(all_items)
    sample = sample_by_language(
        {l: [t for _, t in v] for l, v in texts_by_lang.items() if v}, cfg.lang_alpha, total, cfg.seed
    )
    chars = {c for _, _, t in all_items for c in t}
    counts = {l: len(v) for l, v in sorted(texts_by_lang.items())}
    model = _train(sample, chars, counts, cfg)
    _check_round_trip(model, ((u, l, t) for l, u, t in all_items))
    return _write(out_dir, model, len(all_items))


def train_tokenizer_on_data_dir(
    text: Union[str, os.PathLike], utt2lang: Union[str, os.PathLike], out_dir: Union[str, os.PathLike],
    cfg: TokenizerConfig,
) -> Tokenizer:
    """:func:`train_tokenizer` on a data dir's ``text`` and ``utt2lang`` (sorted, as every stage
    writes them), streaming: three passes over the files (count languages and characters; keep
    the drawn transcripts; check that every transcript round-trips), so memory holds the
    ``num_sentences`` drawn transcripts and a byte per utterance, not the corpus (MLS: 11.5M
    transcripts, ~10 GB as dicts). The model equals :func:`train_tokenizer`'s on the same data.
    """
    names: Dict[str, int] = {}
    codes = array("B")
    chars: set = set()
    for _, lang, norm in iter_normalised(text, utt2lang):
        c = names.get(lang)
        if c is None:
            c = names[lang] = len(names)
        codes.append(c)
        chars.update(norm)
    if not codes:
        raise TokenizerError(f"{text}: no transcripts")
    lang_of = np.frombuffer(codes, dtype=np.uint8)
    # Pools of line numbers per language in sorted-language order: the positions (and so the
    # draw) are those of sample_by_language over the same transcripts.
    pools = {l: np.nonzero(lang_of == names[l])[0] for l in sorted(names)}
    counts = {l: len(v) for l, v in pools.items()}
    drawn = balanced_draw(pools, cfg.lang_alpha, cfg.num_sentences or len(lang_of), np.random.default_rng(cfg.seed))
    need = np.zeros(len(lang_of), dtype=bool)
    need[drawn] = True
    kept = {i: norm for i, (_, _, norm) in enumerate(iter_normalised(text, utt2lang)) if need[i]}
    sample = [kept[int(i)] for i in drawn]
    del kept, need
    model = _train(sample, chars, counts, cfg)
    del sample
    _check_round_trip(model, iter_normalised(text, utt2lang))
    return _write(out_dir, model, len(lang_of))


def _train(sample: Sequence[str], chars: set, counts: Mapping[str, int], cfg: TokenizerConfig) -> bytes:
    chars = sorted(c for c in chars if c != " ")
    logger.info("training %s sentencepiece, vocab %d, on %d drawn transcripts (alpha %.2f) of %s; %d chars",
                cfg.model_type, cfg.vocab_size, len(sample), cfg.lang_alpha, dict(counts), len(chars))
    model = io.BytesIO()
    spm.set_random_generator_seed(cfg.seed)
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sample),
            model_writer=model,
            model_type=cfg.model_type,
            vocab_size=cfg.vocab_size,
            hard_vocab_limit=cfg.hard_vocab_limit,
            character_coverage=cfg.character_coverage,
            required_chars="".join(chars),
            normalization_rule_name="identity",  # justkit.text.normalize already ran
            pad_id=0, pad_piece=BLANK, unk_id=1, unk_piece=UNK, bos_id=-1, eos_id=-1,
            input_sentence_size=0, shuffle_input_sentence=False,
            num_threads=cfg.num_threads, minloglevel=2,
        )
    except RuntimeError as e:
        raise TokenizerError(f"sentencepiece training failed: {e} (adjust vocab_size in the config)") from None
    return model.getvalue()


def _check_round_trip(model: bytes, items: Iterable[Tuple[str, str, str]]) -> None:
    """Every (utt, lang, text) must come back from encode + decode, without <unk>."""
    sp = spm.SentencePieceProcessor(model_proto=model)
    for utt, lang, text in items:
        ids = sp.encode(text, out_type=int)
        back = sp.decode(ids)
        if back != text or 1 in ids:
            raise TokenizerError(
                f"utt {utt} ({lang}): transcript does not round-trip through the tokenizer: "
                f"{text!r} -> {back!r} (ids {ids[:20]}...)"
            )


def _write(out_dir: Union[str, os.PathLike], model: bytes, n_checked: int) -> "Tokenizer":
    out_dir = Path(out_dir)
    sp = spm.SentencePieceProcessor(model_proto=model)
    with atomic_open(out_dir / "spm.model", "wb", encoding=None) as f:
        f.write(model)
    n = sp.get_piece_size()
    atomic_write_text(out_dir / "spm.vocab",
                      "".join(f"{sp.id_to_piece(i)}\t{sp.get_score(i):g}\n" for i in range(n)))
    atomic_write_text(out_dir / "tokens.txt", "".join(f"{sp.id_to_piece(i)} {i}\n" for i in range(n)))
    logger.info("wrote %s/spm.model (%d pieces); all %d transcripts round-trip", out_dir, n, n_checked)
    return Tokenizer(out_dir / "spm.model")


def check_vocab(tok: "Tokenizer", model_vocab: int, model_path: str = "the model") -> None:
    """A model can only be decoded with the tokenizer it was trained with: the sizes must match."""
    if tok.vocab_size != int(model_vocab):
        raise TokenizerError(
            f"{tok.path}: {tok.vocab_size} pieces, but {model_path} was trained with a vocabulary of "
            f"{model_vocab}: not the tokenizer of this model")


def iter_normalised(text: Union[str, os.PathLike], utt2lang: Union[str, os.PathLike]) -> Iterator[Tuple[str, str, str]]:
    """(utt, lang, normalised text) for every line of a data dir's ``text``, joined with its
    (sorted) ``utt2lang`` in one streaming pass; an utterance without a language or with an
    empty normalised transcript is an error naming it."""
    langs = SortedTableReader(utt2lang)
    for line in SortedTableReader(text, allow_empty_value=True).rest():
        lang = langs.get(line.key)
        if lang is None:
            raise langs.missing(line.key, f"language (it is in {text})")
        norm = normalize(line.value, lang)
        if not norm:
            raise DataDirError(f"{text}: utt {line.key}: empty transcript after normalisation ({line.value!r})")
        yield line.key, lang, norm


def read_texts_by_lang(text: Union[str, os.PathLike], utt2lang: Union[str, os.PathLike]) -> Dict[str, List[Tuple[str, str]]]:
    """``{lang: [(utt, normalised text)]}`` of a data dir's ``text`` and ``utt2lang`` (in memory:
    small sets; see :func:`iter_normalised`)."""
    out: Dict[str, List[Tuple[str, str]]] = {}
    for utt, lang, norm in iter_normalised(text, utt2lang):
        out.setdefault(lang, []).append((utt, norm))
    return out
