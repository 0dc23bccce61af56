"""Stage 5: pack a feature dir into jsonl training examples (feats rxspec or audio path, frames, tokens, language)."""
from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Union

import numpy as np

from justkit.data.manifest import PackedIndex, write_jsonl_with_index
from justkit.datadir.badutts import BadUtt
from justkit.datadir.tables import SortedTableReader, read_table
from justkit.fileio import is_pipe
from justkit.frontend.lengths import min_input_frames, subsampled_len
from justkit.text.normalize import normalize
from justkit.text.tokenizer import Tokenizer
from justkit.errors import JustkitError

logger = logging.getLogger(__name__)


class PackError(JustkitError, ValueError):
    """An utterance cannot be packed; the message names the file and the utterance."""


def labelled_ids(subset_dirs: Sequence[Union[str, os.PathLike]]) -> set:
    """Union of the utterance ids in ``<dir>/text`` of each limited-supervision data dir."""
    ids: set = set()
    for d in subset_dirs:
        ids.update(read_table(Path(d) / "text", allow_empty_value=True))
    return ids


@dataclass
class Limits:
    """What an utterance needs to be trained on (stage 5 drops, and lists, the others).

    ``subsampling_kernel``: the model's conv subsampling kernel (``model.subsampling.kernel``):
    fewer input frames than it needs give no encoder frame at all, and a transcript with more
    tokens than encoder frames cannot be aligned by CTC and is nearly always a wrong
    transcript (MLS: about 4 tokens per encoder frame would be needed). ``max_tokens_per_second``
    (0: off) rejects transcripts denser than that, 10 ms frames."""

    subsampling_kernel: int = 3
    max_tokens_per_second: float = 0.0

    def __post_init__(self) -> None:
        if self.subsampling_kernel < 1 or self.max_tokens_per_second < 0:
            raise PackError(f"bad limits {self}: subsampling_kernel >= 1, max_tokens_per_second >= 0")

    @property
    def min_frames(self) -> int:
        return min_input_frames(self.subsampling_kernel)

    def encoder_frames(self, n: int) -> int:
        return max(0, subsampled_len(n, self.subsampling_kernel))

    def problem(self, n: int, num_tokens: Optional[int]) -> Optional[str]:
        """Why an utterance of ``n`` frames and ``num_tokens`` tokens cannot be trained on, or None."""
        if n < self.min_frames:
            return (f"too short: {n} frames ({n / 100:.2f} s), the model's subsampling needs at least "
                    f"{self.min_frames}")
        if num_tokens is None:
            return None
        t = self.encoder_frames(n)
        if num_tokens > t:
            return f"transcript too long: {num_tokens} tokens for {t} encoder frames ({n / 100:.2f} s)"
        if self.max_tokens_per_second and num_tokens > self.max_tokens_per_second * n / 100:
            return (f"transcript too dense: {num_tokens} tokens in {n / 100:.2f} s, more than "
                    f"{self.max_tokens_per_second:g} tokens per second")
        return None


def iter_examples(
    fbank_dir: Union[str, os.PathLike],
    tokenizer: Optional[Tokenizer],
    labelled_subsets: Optional[Sequence[Union[str, os.PathLike]]] = None,
    unlabelled: bool = False,
    limits: Optional[Limits] = None,
    bad: Optional[List[BadUtt]] = None,
) -> Iterator[Dict[str, Any]]:
    """The examples :func:`pack_examples` returns, one at a time, in utterance-id order.

    The tables are joined in one streaming pass (they must be sorted, as every stage writes
    them), so memory does not grow with the number of utterances. Utterances that fail
    ``limits`` (default :class:`Limits`) are not yielded; each is logged and appended to ``bad``.
    """
    limits = limits or Limits()
    dropped = 0
    d = Path(fbank_dir)
    if not unlabelled and tokenizer is None:
        raise PackError(f"{d}: a tokenizer is needed to pack labelled examples")
    on_the_fly = not (d / "feats.scp").is_file() and (d / "wav.scp").is_file()
    src_name = "wav.scp" if on_the_fly else "feats.scp"
    if on_the_fly:
        logger.info("%s: no feats.scp: examples point at the audio of wav.scp (fbank on the fly)", d)
    driver = SortedTableReader(d / (src_name if unlabelled else "text"), allow_empty_value=not unlabelled,
                               error=PackError)
    feats, frames, langs = (SortedTableReader(d / n, error=PackError) for n in (src_name, "utt2num_frames", "utt2lang"))
    keep = labelled_ids(labelled_subsets) if labelled_subsets else None
    n_out = n_unk = n_keep_seen = 0
    for line in driver.rest():
        utt = line.key
        feat = feats.get(utt)
        if feat is None:
            raise feats.missing(utt, f"{'audio' if on_the_fly else 'feats'} entry (did stage 3 fail for it?)")
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
        where = {"feats": None, "audio": feat} if on_the_fly else {"feats": feat}
        if on_the_fly and is_pipe(feat):
            raise PackError(f"{d / 'wav.scp'}: utt {utt}: piped commands are not supported; give a file path")
        if unlabelled:
            why = limits.problem(n, None)
            if why:
                dropped += _drop(bad, utt, feat, why, d)
                continue
            yield {"utt": utt, **where, "num_frames": n, "tokens": [], "lang": lang,
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
        why = limits.problem(n, len(tokens))
        if why:
            dropped += _drop(bad, utt, feat, why, d)
            continue
        n_unk += tokenizer.unk_id in tokens
        lab = keep is None or utt in keep
        n_keep_seen += keep is not None and lab
        yield {"utt": utt, **where, "num_frames": n, "tokens": tokens, "lang": lang,
               "labelled": lab, "text": text}
    if not n_out:
        raise PackError(f"{driver.path}: no utterances to pack")
    if dropped:
        logger.warning("%s: %d utterance(s) cannot be trained on and are not packed (listed as bad utterances)",
                       d, dropped)
    if dropped == n_out:
        raise PackError(f"{d}: every utterance was dropped ({dropped}; see the warnings)")
    feats.drain()  # feats left over have no transcript
    if feats.skipped:
        logger.warning("%s: %d utterance(s) have features/audio but no transcript, e.g. %s; not packed",
                       d, feats.skipped, feats.first_skipped)
    if keep is not None and n_keep_seen < len(keep):
        logger.info("%d utterance(s) of the labelled subsets are not in %s", len(keep) - n_keep_seen, d)
    if n_unk:
        logger.warning("%s: %d utterance(s) contain <unk> tokens", d, n_unk)


def _drop(bad: Optional[List[BadUtt]], utt: str, src: str, why: str, d: Path) -> int:
    logger.warning("%s: utterance %s: %s; not packed", d, utt, why)
    if bad is not None:
        bad.append(BadUtt(utt, src, why))
    return 1


def pack_examples(
    fbank_dir: Union[str, os.PathLike],
    tokenizer: Optional[Tokenizer],
    labelled_subsets: Optional[Sequence[Union[str, os.PathLike]]] = None,
    unlabelled: bool = False,
    limits: Optional[Limits] = None,
    bad: Optional[List[BadUtt]] = None,
) -> List[Dict[str, Any]]:
    """One example per utterance of ``fbank_dir/text``, sorted by utterance id (a list: small sets;
    stage 5 streams :func:`iter_examples` into :func:`write_packed`).

    Reads ``text``, ``utt2lang``, ``feats.scp`` and ``utt2num_frames`` (sorted, as every stage
    writes them). A dir of stage 3 with ``--feats_type raw`` has no ``feats.scp``: its examples
    point at the audio instead (``"audio": <wav.scp entry>``, ``"feats": null``; the loader
    computes fbank on the fly). With ``labelled_subsets``
    only utterances listed in those dirs' ``text`` are ``labelled: true``. ``unlabelled``: audio
    only (an unlabelled pool): every utterance of ``feats.scp`` is packed with
    ``labelled: false``, no tokens and no text, and ``text`` is not read (it need not exist).
    Raises PackError naming the utterance for a missing feats / frame count / language entry,
    an empty normalised transcript, a transcript that encodes to <unk> only, or a table that
    is not sorted.
    """
    return list(iter_examples(fbank_dir, tokenizer, labelled_subsets, unlabelled, limits, bad))


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
