"""Token sequences for LM training: packing a text data dir, the dataset, the resumable loader.

A packed text set is a directory (written by :func:`pack_text`, each file atomically):

```
tokens.bin    int32 token ids of every sentence, one after the other (memory-mapped when read)
offsets.npy   int64 [N + 1]: sentence i is tokens[offsets[i]:offsets[i + 1]]
langs.npy     uint8 [N]: index into langs.txt
langs.txt     the language codes, one a line
info.json     sentences, tokens, <unk> count per language, the tokenizer's path and vocabulary size
```
The loader batches sentences by token budget (padding included) with the ASR loader's sampler
(``justkit.data.sampler.BucketBatchSampler``: temperature language sampling, length buckets,
exact resume), so ``len(loader.batch_sampler)``, ``epoch_batches()`` and ``state_dict()`` behave
as the ASR loader's.
"""
from __future__ import annotations

import json
import logging
import os
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import numpy as np
import torch

from justkit.data.loader import ResumableDataLoader
from justkit.data.sampler import BucketBatchSampler
from justkit.errors import JustkitError
from justkit.fileio import atomic_open, atomic_write_text
from justkit.text.tokenizer import iter_normalised

log = logging.getLogger(__name__)
PathLike = Union[str, os.PathLike]
PACKED_FILES = ("tokens.bin", "offsets.npy", "langs.npy", "langs.txt", "info.json")


class TextDataError(JustkitError, ValueError):
    """A packed text set that is missing, empty or does not fit the tokenizer; names the file."""


def pack_text(text: PathLike, utt2lang: PathLike, tokenizer, out_dir: PathLike) -> dict:
    """Tokenise a data dir's ``text`` (normalised as every stage does) into the packed set
    ``out_dir``; returns its info. Streams: memory holds the offsets (8 bytes a sentence)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    offsets = array("q", [0])
    codes = array("B")
    names: Dict[str, int] = {}
    stats: Dict[str, Dict[str, int]] = {}
    n_tok = 0
    with atomic_open(out / "tokens.bin", "wb", encoding=None) as f:
        buf = array("i")
        for _, lang, norm in iter_normalised(text, utt2lang):
            ids = tokenizer.encode(norm)
            if lang not in names:
                if len(names) == 255:
                    raise TextDataError(f"{utt2lang}: more than 255 languages")
                names[lang] = len(names)
                stats[lang] = {"sentences": 0, "tokens": 0, "unk": 0}
            s = stats[lang]
            s["sentences"] += 1
            s["tokens"] += len(ids)
            s["unk"] += sum(1 for i in ids if i == tokenizer.unk_id)
            buf.extend(ids)
            n_tok += len(ids)
            offsets.append(n_tok)
            codes.append(names[lang])
            if len(buf) >= 1 << 20:
                f.write(buf.tobytes())
                buf = array("i")
        f.write(buf.tobytes())
    if len(codes) == 0:
        raise TextDataError(f"{text}: no sentences")
    with atomic_open(out / "offsets.npy", "wb", encoding=None) as f:
        np.save(f, np.frombuffer(offsets, dtype=np.int64))
    with atomic_open(out / "langs.npy", "wb", encoding=None) as f:
        np.save(f, np.frombuffer(codes, dtype=np.uint8))
    atomic_write_text(out / "langs.txt", "".join(f"{l}\n" for l in names))
    info = {"sentences": len(codes), "tokens": n_tok, "per_lang": stats,
            "tokenizer": str(tokenizer.path), "vocab_size": tokenizer.vocab_size, "source": str(text)}
    atomic_write_text(out / "info.json", json.dumps(info, indent=1, sort_keys=True) + "\n")
    unk = sum(s["unk"] for s in stats.values())
    log.info("packed %d sentences, %d tokens (%d <unk>) of %s -> %s", len(codes), n_tok, unk, text, out)
    return info


class TextDataset:
    """A packed text set: ``ds[i] -> {"tokens": int64 array, "lang", "utt"}``; ``lengths`` in tokens."""

    def __init__(self, path: PathLike, vocab_size: Optional[int] = None) -> None:
        self.path = Path(path)
        missing = [f for f in PACKED_FILES if not (self.path / f).is_file()]
        if missing:
            raise TextDataError(f"{self.path}: not a packed text set, lacks {missing} (justkit.bin.prepare_lm_text)")
        self.info = json.loads((self.path / "info.json").read_text(encoding="utf-8"))
        if vocab_size is not None and int(self.info["vocab_size"]) != int(vocab_size):
            raise TextDataError(f"{self.path}: packed with a vocabulary of {self.info['vocab_size']}, "
                                f"the model's is {vocab_size}: pack it again with the model's tokenizer")
        self.offsets = np.load(self.path / "offsets.npy")
        self.lang_codes = np.load(self.path / "langs.npy")
        self.lang_names = (self.path / "langs.txt").read_text(encoding="utf-8").split()
        n_tok = int(self.offsets[-1])
        if (self.path / "tokens.bin").stat().st_size != 4 * n_tok or len(self.offsets) != len(self.lang_codes) + 1:
            raise TextDataError(f"{self.path}: tokens.bin, offsets.npy and langs.npy do not fit together "
                                "(a truncated copy?); pack it again")
        if not len(self.lang_codes):
            raise TextDataError(f"{self.path}: no sentences")
        self.tokens = np.memmap(self.path / "tokens.bin", dtype=np.int32, mode="r") if n_tok else np.zeros(0, np.int32)
        self.lengths = np.diff(self.offsets)

    def __len__(self) -> int:
        return len(self.lang_codes)

    def lang(self, i: int) -> str:
        return self.lang_names[int(self.lang_codes[i])]

    def __getitem__(self, i: int) -> Dict[str, Any]:
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        lang = self.lang(i)
        return {"tokens": np.asarray(self.tokens[a:b], dtype=np.int64), "lang": lang, "utt": f"{lang}:{i}"}


def collate_text(items: List[Dict[str, Any]]) -> Dict[str, Any]:
    """``tokens`` [B, U] long padded with 0 (U >= 1), ``token_lens`` [B], ``langs``, ``utts``."""
    lens = [len(it["tokens"]) for it in items]
    tokens = torch.zeros(len(items), max(1, max(lens)), dtype=torch.long)
    for i, it in enumerate(items):
        if lens[i]:
            tokens[i, : lens[i]] = torch.from_numpy(it["tokens"])
    return {"tokens": tokens, "token_lens": torch.as_tensor(lens, dtype=torch.long),
            "langs": [it["lang"] for it in items], "utts": [it["utt"] for it in items]}


@dataclass
class TextDataConfig:
    """The ``data:`` section of an LM experiment.

    max_tokens: batch budget in tokens, padding and the end boundary included (per rank); a
        longer sentence is skipped in training with a warning.
    buckets, lang_alpha, epoch_size, seed, num_workers: as the ASR loader's (justkit.data.loader.DataConfig).
    """

    max_tokens: int = 4000
    buckets: int = 10
    lang_alpha: float = 0.5
    epoch_size: int = 0
    num_workers: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_tokens < 2:
            raise ValueError(f"data.max_tokens must be >= 2, got {self.max_tokens}")
        if self.buckets < 1 or self.epoch_size < 0 or self.num_workers < 0:
            raise ValueError("data.buckets must be >= 1, data.epoch_size and data.num_workers >= 0")
        if self.lang_alpha < 0:
            raise ValueError(f"data.lang_alpha must be >= 0, got {self.lang_alpha}")


def build_text_loader(cfg: TextDataConfig, path: PathLike, rank: int = 0, world_size: int = 1,
                      train: bool = True, vocab_size: Optional[int] = None,
                      max_tokens: Optional[int] = None, pin_memory: bool = False) -> ResumableDataLoader:
    """A :class:`ResumableDataLoader` over the packed text set ``path`` (train: language sampling,
    buckets, shuffled; eval: every sentence once, by length)."""
    ds = TextDataset(path, vocab_size)
    sampler = BucketBatchSampler(
        ds.lengths + 1, ds.lang_codes, max_frames=max_tokens or cfg.max_tokens, num_buckets=cfg.buckets,
        lang_alpha=cfg.lang_alpha, epoch_size=cfg.epoch_size if train else 0, seed=cfg.seed,
        rank=rank, world_size=world_size, shuffle=train, lang_names=ds.lang_names)
    return ResumableDataLoader(ds, batch_sampler=sampler, collate_fn=collate_text, num_workers=cfg.num_workers,
                               generator=torch.Generator().manual_seed(cfg.seed),
                               persistent_workers=cfg.num_workers > 0, pin_memory=pin_memory)
