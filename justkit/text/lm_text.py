"""LM training text: raw sentences per language -> a normalised data dir without any dev/test sentence.

``prepare_lm_text({"en": "mls_lm_english/data.txt", ...}, ["data/dev", "data/test_en", ...], "data/lm_train")``
writes ``text`` (``<lang>_lm_<n> <sentence>``) and ``utt2lang``, sorted, each atomically. Every
line is normalised as the transcripts are (``justkit.text.normalize``); empty lines and every
sentence equal to a normalised transcript of the excluded data dirs (same language) are
dropped, so the LM never sees a dev or test sentence. ``max_sentences`` caps a language
(the first ones of its file; 0 = all). Streams the sources: memory holds the excluded
transcripts only.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Dict, Iterable, Mapping, Set, Union

from justkit.errors import JustkitError
from justkit.fileio import atomic_open, atomic_write_text
from justkit.lang import is_language_code
from justkit.text.normalize import normalize
from justkit.text.tokenizer import iter_normalised

log = logging.getLogger(__name__)
PathLike = Union[str, os.PathLike]


class LMTextError(JustkitError, ValueError):
    """LM text that is missing, empty or unusable; names the file."""


def excluded_sentences(data_dirs: Iterable[PathLike]) -> Dict[str, Set[str]]:
    """{lang: normalised transcripts} of the data dirs (their ``text`` and ``utt2lang``); a
    code-switched utterance (``l1-l2``) counts for both languages."""
    out: Dict[str, Set[str]] = {}
    for d in data_dirs:
        d = Path(d)
        for f in ("text", "utt2lang"):
            if not (d / f).is_file():
                raise LMTextError(f"{d / f}: not found (a data dir whose sentences the LM must not see)")
        for _, lang, norm in iter_normalised(d / "text", d / "utt2lang"):
            for part in lang.split("-"):
                out.setdefault(part, set()).add(norm)
    return out


def prepare_lm_text(sources: Mapping[str, PathLike], exclude_dirs: Iterable[PathLike], out_dir: PathLike,
                    max_sentences: int = 0) -> Dict[str, Dict[str, int]]:
    """Write the LM data dir ``out_dir`` (``text``, ``utt2lang``, ``stats.json``); returns
    {lang: {"kept", "excluded", "empty"}}. A source that is missing, empty, or has no sentence
    left is an error naming the file; nothing is written then."""
    if not sources:
        raise LMTextError("prepare_lm_text: no LM text given")
    if max_sentences < 0:
        raise LMTextError(f"max_sentences must be >= 0, got {max_sentences}")
    for lang, path in sources.items():
        if not is_language_code(lang):
            raise LMTextError(f"{path}: {lang!r} is not a language code")
        p = Path(path)
        if not p.is_file():
            raise LMTextError(f"{p}: LM text of language {lang} not found")
        if p.stat().st_size == 0:
            raise LMTextError(f"{p}: LM text of language {lang} is empty")
    exclude = excluded_sentences(exclude_dirs)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stats: Dict[str, Dict[str, int]] = {}
    with atomic_open(out / "text") as ft, atomic_open(out / "utt2lang") as fl:
        for lang in sorted(sources):   # ids <lang>_lm_<n>: sorted languages, zero-padded n = sorted file
            ex = exclude.get(lang, set())
            s = stats[lang] = {"kept": 0, "excluded": 0, "empty": 0}
            with open(sources[lang], encoding="utf-8", errors="strict") as f:
                try:
                    for line in f:
                        norm = normalize(line, lang)
                        if not norm:
                            s["empty"] += 1
                        elif norm in ex:
                            s["excluded"] += 1
                        else:
                            utt = f"{lang}_lm_{s['kept']:010d}"
                            ft.write(f"{utt} {norm}\n")
                            fl.write(f"{utt} {lang}\n")
                            s["kept"] += 1
                            if max_sentences and s["kept"] >= max_sentences:
                                break
                except UnicodeDecodeError as e:
                    raise LMTextError(f"{sources[lang]}: not UTF-8 text ({e})") from None
            if not s["kept"]:
                raise LMTextError(f"{sources[lang]}: no sentence of language {lang} left "
                                  f"({s['excluded']} are dev/test sentences, {s['empty']} empty)")
            log.info("%s: %d sentences kept, %d dev/test sentences removed, %d empty lines (%s)",
                     lang, s["kept"], s["excluded"], s["empty"], sources[lang])
    atomic_write_text(out / "stats.json", json.dumps(stats, indent=1, sort_keys=True) + "\n")
    return stats
