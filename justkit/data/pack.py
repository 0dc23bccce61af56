"""Stage 5: pack a feature dir into jsonl training examples (feats rxspec, frames, tokens, language)."""
from __future__ import annotations

import logging
import os
from collections import Counter
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Union

import numpy as np

from justkit.data.manifest import PackedIndex, write_jsonl_with_index
from justkit.datadir.tables import TableLine, iter_table, read_table
from justkit.text.normalize import normalize
from justkit.text.tokenizer import Tokenizer
from justkit.errors import JustkitError

logger = logging.getLogger(__name__)


class PackError(JustkitError, ValueError):
    """An utterance cannot be packed; the message names the file and the utterance."""


def _utt_key(u: str) -> bytes:
    return u.encode("utf-8")  # the C-locale byte order of Kaldi's sorted tables


def labelled_ids(subset_dirs: Sequence[Union[str, os.PathLike]]) -> set:
    """Union of the utterance ids in ``<dir>/text`` of each limited-supervision data dir."""
    ids: set = set()
    for d in subset_dirs:
        ids.update(read_table(Path(d) / "text", allow_empty_value=True))
    return ids


class _SortedTable:
    """Look up keys, in increasing byte order, in a Kaldi table read as a stream.

    A data dir's tables are sorted (C locale), so packing joins them in one pass over each
    instead of holding every table in a dict (4 tables x 11M utterances). Keys passed over
    without being asked for are counted (``skipped``, with the first of them).
    """

    def __init__(self, path: Path, allow_empty_value: bool = False) -> None:
        self.path = path
        self.allow_empty = allow_empty_value
        self._it = iter_table(path)
        self._prev: Optional[bytes] = None
        self._cur: Optional[TableLine] = None
        self._cur_key: Optional[bytes] = None
        self.skipped = 0
        self.first_skipped: Optional[str] = None
        self._advance()

    def _advance(self) -> None:
        line = next(self._it, None)
        if line is not None:
            if line.error:
                raise PackError(f"{self.path}:{line.lineno}: {line.error}")
            if not line.value and not self.allow_empty:
                raise PackError(f"{self.path}:{line.lineno}: utt {line.key}: no value")
            key = _utt_key(line.key)
            if self._prev is not None and key <= self._prev:
                what = "repeated" if key == self._prev else "out of order (not sorted by id in the C locale)"
                raise PackError(f"{self.path}:{line.lineno}: utt {line.key} is {what}; "
                                "utils/fix_data_dir.py sorts a data dir")
            self._prev = key
            self._cur_key = key
        else:
            self._cur_key = None
        self._cur = line

    def get(self, utt: str) -> Optional[str]:
        """The value of ``utt`` (None if the table has no line for it); keys must come in order."""
        key = _utt_key(utt)
        while self._cur is not None and self._cur_key < key:
            self.skipped += 1
            if self.first_skipped is None:
                self.first_skipped = self._cur.key
            self._advance()
        if self._cur is not None and self._cur_key == key:
            value = self._cur.value
            self._advance()
            return value
        return None

    def missing(self, utt: str, what: str) -> PackError:
        """The error for ``utt`` not found: a missing line, or a table out of order."""
        where = f"line {self._cur.lineno} is {self._cur.key}" if self._cur is not None else "end of file"
        return PackError(f"{self.path}: utt {utt} has no {what} ({where}; if the line exists, the table "
                         "is not sorted by id in the C locale: utils/fix_data_dir.py sorts a data dir)")

    def drain(self) -> None:
        """Pass over every line not consumed yet (they count as skipped)."""
        while self._cur is not None:
            self.skipped += 1
            if self.first_skipped is None:
                self.first_skipped = self._cur.key
            self._advance()

    def rest(self) -> Iterator[TableLine]:
        """The lines not consumed yet (for the table that drives the join)."""
        while self._cur is not None:
            line = self._cur
            self._advance()
            yield line


def iter_examples(
    fbank_dir: Union[str, os.PathLike],
    tokenizer: Optional[Tokenizer],
    labelled_subsets: Optional[Sequence[Union[str, os.PathLike]]] = None,
    unlabelled: bool = False,
) -> Iterator[Dict[str, Any]]:
    """The examples :func:`pack_examples` returns, one at a time, in utterance-id order.

    The tables are joined in one streaming pass (they must be sorted, as every stage writes
    them), so memory does not grow with the number of utterances.
    """
    d = Path(fbank_dir)
    if not unlabelled and tokenizer is None:
        raise PackError(f"{d}: a tokenizer is needed to pack labelled examples")
    driver = _SortedTable(d / ("feats.scp" if unlabelled else "text"), allow_empty_value=not unlabelled)
    feats = _SortedTable(d / "feats.scp")
    frames = _SortedTable(d / "utt2num_frames")
    langs = _SortedTable(d / "utt2lang")
    keep = labelled_ids(labelled_subsets) if labelled_subsets else None
    n_out = n_unk = n_keep_seen = 0
    for line in driver.rest():
        utt = line.key
        feat = feats.get(utt)
        if feat is None:
            raise feats.missing(utt, "feats entry (did stage 3 fail for it?)")
        nf = frames.get(utt)
        if nf is None:
            raise frames.missing(utt, "frame count")
        lang = langs.get(utt)
        if lang is None:
            raise langs.missing(utt, "language")
        try:
            n = int(nf)
        except ValueError:
            raise PackError(f"{d / 'utt2num_frames'}: utt {utt}: bad frame count {nf!r}") from None
        if n <= 0:
            raise PackError(f"{d / 'utt2num_frames'}: utt {utt}: {n} frames")
        n_out += 1
        if unlabelled:
            yield {"utt": utt, "feats": feat, "num_frames": n, "tokens": [], "lang": lang,
                   "labelled": False, "text": ""}
            continue
        text = normalize(line.value, lang)
        if not text:
            raise PackError(f"{d / 'text'}: utt {utt}: empty transcript after normalisation ({line.value!r})")
        tokens = tokenizer.encode(text)
        # "<unk> only": nothing but <unk> and bare word-boundary pieces (▁ before an unknown char)
        if all(t == tokenizer.unk_id or tokenizer.id_to_piece(t) == "\u2581" for t in tokens):
            raise PackError(
                f"{d / 'text'}: utt {utt}: transcript {text!r} encodes to <unk> only "
                f"(tokenizer {tokenizer.path} does not cover its characters)"
            )
        n_unk += tokenizer.unk_id in tokens
        lab = keep is None or utt in keep
        n_keep_seen += keep is not None and lab
        yield {"utt": utt, "feats": feat, "num_frames": n, "tokens": tokens, "lang": lang,
               "labelled": lab, "text": text}
    if not n_out:
        raise PackError(f"{driver.path}: no utterances to pack")
    feats.drain()  # feats left over have no transcript
    if feats.skipped:
        logger.warning("%s: %d utterance(s) have feats but no transcript, e.g. %s; not packed",
                       d, feats.skipped, feats.first_skipped)
    if keep is not None and n_keep_seen < len(keep):
        logger.info("%d utterance(s) of the labelled subsets are not in %s", len(keep) - n_keep_seen, d)
    if n_unk:
        logger.warning("%s: %d utterance(s) contain <unk> tokens", d, n_unk)


def pack_examples(
    fbank_dir: Union[str, os.PathLike],
    tokenizer: Optional[Tokenizer],
    labelled_subsets: Optional[Sequence[Union[str, os.PathLike]]] = None,
    unlabelled: bool = False,
) -> List[Dict[str, Any]]:
    """One example per utterance of ``fbank_dir/text``, sorted by utterance id (a list: small sets;
    stage 5 streams :func:`iter_examples` into :func:`write_packed`).

    Reads ``text``, ``utt2lang``, ``feats.scp`` and ``utt2num_frames`` (sorted, as every stage
    writes them). With ``labelled_subsets``
    only utterances listed in those dirs' ``text`` are ``labelled: true``. ``unlabelled``: audio
    only (an unlabelled pool): every utterance of ``feats.scp`` is packed with
    ``labelled: false``, no tokens and no text, and ``text`` is not read (it need not exist).
    Raises PackError naming the utterance for a missing feats / frame count / language entry,
    an empty normalised transcript, a transcript that encodes to <unk> only, or a table that
    is not sorted.
    """
    return list(iter_examples(fbank_dir, tokenizer, labelled_subsets, unlabelled))


def write_packed(examples: Iterable[Dict[str, Any]], path: Union[str, os.PathLike]) -> int:
    """Write examples as jsonl (UTF-8, one object per line) and its index
    (:mod:`justkit.data.manifest`), each atomically; ``examples`` may be a generator.
    Returns the number written."""
    return write_jsonl_with_index(examples, path)


def summary(examples: Union[Sequence[Dict[str, Any]], PackedIndex]) -> str:
    """One line: utterances, labelled, hours and utterances per language."""
    if isinstance(examples, PackedIndex):
        codes = np.bincount(examples.lang_codes, minlength=len(examples.lang_names))
        per_lang = Counter({examples.lang_names[c]: int(n) for c, n in enumerate(codes) if n})
        lab = int(examples.labelled.sum())
        frames = int(np.sum(examples.lengths, dtype=np.int64))
    else:
        per_lang = Counter(e["lang"] for e in examples)
        lab = sum(e["labelled"] for e in examples)
        frames = sum(e["num_frames"] for e in examples)
    hours = frames / 100 / 3600
    langs = " ".join(f"{l}:{c}" for l, c in sorted(per_lang.items()))
    return f"{len(examples)} utts ({lab} labelled), {hours:.2f} h at 10 ms frames; {langs}"
