"""Stage 5: pack a feature dir into jsonl training examples (feats rxspec or audio path, frames, tokens, language)."""
from __future__ import annotations

import json
import logging
import os
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

from justkit.datadir.tables import DataDirError, read_table
from justkit.fileio import atomic_open, is_pipe
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


def pack_examples(
    fbank_dir: Union[str, os.PathLike],
    tokenizer: Optional[Tokenizer],
    labelled_subsets: Optional[Sequence[Union[str, os.PathLike]]] = None,
    unlabelled: bool = False,
) -> List[Dict[str, Any]]:
    """One example per utterance of ``fbank_dir/text``, sorted by utterance id.

    Reads ``text``, ``utt2lang``, ``feats.scp`` and ``utt2num_frames``. A dir of stage 3 with
    ``--feats_type raw`` has no ``feats.scp``: its examples point at the audio instead
    (``"audio": <wav.scp entry>``, ``"feats": null``; the loader computes fbank on the fly).
    With ``labelled_subsets``
    only utterances listed in those dirs' ``text`` are ``labelled: true``. ``unlabelled``: audio
    only (an unlabelled pool): every utterance of ``feats.scp`` is packed with
    ``labelled: false``, no tokens and no text, and ``text`` is not read (it need not exist).
    Raises PackError naming the utterance for a missing feats / frame count / language entry,
    an empty normalised transcript, or a transcript that encodes to <unk> only.
    """
    d = Path(fbank_dir)
    on_the_fly = not (d / "feats.scp").is_file() and (d / "wav.scp").is_file()
    src_name = "wav.scp" if on_the_fly else "feats.scp"
    if on_the_fly:
        logger.info("%s: no feats.scp: examples point at the audio of wav.scp (fbank on the fly)", d)
    if unlabelled:
        texts = {u: "" for u in read_table(d / src_name)}
    else:
        if tokenizer is None:
            raise PackError(f"{d}: a tokenizer is needed to pack labelled examples")
        texts = read_table(d / "text", allow_empty_value=True)
    langs = read_table(d / "utt2lang")
    feats = read_table(d / src_name)
    frames = read_table(d / "utt2num_frames")
    keep = labelled_ids(labelled_subsets) if labelled_subsets else None
    if keep is not None:
        missing = len(keep - set(texts))
        if missing:
            logger.info("%d utterance(s) of the labelled subsets are not in %s", missing, d)
    extra = set(feats) - set(texts)
    if extra:
        logger.warning("%s: %d utterance(s) have features/audio but no transcript, e.g. %s; not packed",
                       d, len(extra), sorted(extra)[0])
    out: List[Dict[str, Any]] = []
    n_unk = 0
    for utt in sorted(texts, key=_utt_key):
        if utt not in feats:
            raise PackError(f"{d / src_name}: utt {utt} has no {'audio' if on_the_fly else 'feats'} entry "
                            f"(stage 3 failed for it?)")
        if utt not in frames:
            raise PackError(f"{d / 'utt2num_frames'}: utt {utt} has no frame count")
        if utt not in langs:
            raise PackError(f"{d / 'utt2lang'}: utt {utt} has no language")
        try:
            n = int(frames[utt])
        except ValueError:
            raise PackError(f"{d / 'utt2num_frames'}: utt {utt}: bad frame count {frames[utt]!r}") from None
        if n <= 0:
            raise PackError(f"{d / 'utt2num_frames'}: utt {utt}: {n} frames")
        lang = langs[utt]
        where = {"feats": None, "audio": feats[utt]} if on_the_fly else {"feats": feats[utt]}
        if on_the_fly and is_pipe(feats[utt]):
            raise PackError(f"{d / 'wav.scp'}: utt {utt}: piped commands are not supported; give a file path")
        if unlabelled:
            out.append({"utt": utt, **where, "num_frames": n, "tokens": [], "lang": lang,
                        "labelled": False, "text": ""})
            continue
        text = normalize(texts[utt], lang)
        if not text:
            raise PackError(f"{d / 'text'}: utt {utt}: empty transcript after normalisation ({texts[utt]!r})")
        tokens = tokenizer.encode(text)
        # "<unk> only": nothing but <unk> and bare word-boundary pieces (▁ before an unknown char)
        if all(t == tokenizer.unk_id or tokenizer.id_to_piece(t) == "\u2581" for t in tokens):
            raise PackError(
                f"{d / 'text'}: utt {utt}: transcript {text!r} encodes to <unk> only "
                f"(tokenizer {tokenizer.path} does not cover its characters)"
            )
        n_unk += tokenizer.unk_id in tokens
        out.append({
            "utt": utt, **where, "num_frames": n, "tokens": tokens, "lang": lang,
            "labelled": keep is None or utt in keep, "text": text,
        })
    if not out:
        raise PackError(f"{d / 'text'}: no utterances to pack")
    if n_unk:
        logger.warning("%s: %d utterance(s) contain <unk> tokens", d, n_unk)
    return out


def write_packed(examples: Sequence[Dict[str, Any]], path: Union[str, os.PathLike]) -> None:
    """Write examples as jsonl (UTF-8, one object per line), atomically."""
    with atomic_open(path, "w") as f:
        for ex in examples:
            f.write(json.dumps(ex, ensure_ascii=False) + "\n")


def summary(examples: Sequence[Dict[str, Any]]) -> str:
    """One line: utterances, labelled, hours and utterances per language."""
    per_lang = Counter(e["lang"] for e in examples)
    lab = sum(e["labelled"] for e in examples)
    hours = sum(e["num_frames"] for e in examples) / 100 / 3600
    langs = " ".join(f"{l}:{c}" for l, c in sorted(per_lang.items()))
    return f"{len(examples)} utts ({lab} labelled), {hours:.2f} h at 10 ms frames; {langs}"
