"""Languages as data: what a language code looks like, and temperature sampling over languages.

No language list lives here or anywhere in justkit outside ``justkit.corpora``: a recipe's
languages are its ``--langs``, each utterance's is its ``utt2lang`` entry.
"""
from __future__ import annotations

import re
from typing import Dict

import numpy as np

# An ISO 639-1/-3 code (en, pl, yue); a code-switched utterance carries "l1-l2".
_CODE = re.compile(r"^[a-z]{2,3}$")


def is_language_code(code: str) -> bool:
    """True for ``en``, ``yue`` and code-switch pairs ``en-pl``; False for anything else."""
    parts = code.split("-")
    return 1 <= len(parts) <= 2 and all(_CODE.match(p) for p in parts)


def language_probs(counts: Dict[str, int], alpha: float) -> Dict[str, float]:
    """p_lang proportional to n_lang ** alpha (alpha=1: natural shares, alpha=0: uniform)."""
    langs = sorted(counts)
    w = np.array([float(counts[l]) ** alpha if counts[l] > 0 else 0.0 for l in langs])
    if w.sum() <= 0:
        raise ValueError("language_probs: no utterances in any language")
    w = w / w.sum()
    return dict(zip(langs, w.tolist()))


def _largest_remainder(probs: np.ndarray, total: int) -> np.ndarray:
    """Integer counts summing to ``total`` closest to ``probs * total``."""
    raw = probs * total
    out = np.floor(raw).astype(np.int64)
    rest = total - int(out.sum())
    if rest > 0:
        order = np.argsort(-(raw - out), kind="stable")
        out[order[:rest]] += 1
    return out


def balanced_draw(
    pools: Dict[str, np.ndarray], alpha: float, total: int, rng: np.random.Generator
) -> np.ndarray:
    """Draw ``total`` items from per-language pools with p_lang proportional to len(pool) ** alpha.

    Language shares are rounded to integers (largest remainder); inside a language the items
    come from successive random permutations of its pool, so a small language is repeated
    (each item as evenly as possible) and a big one is subsampled without repeats.
    """
    langs = sorted(l for l in pools if len(pools[l]))
    probs = language_probs({l: len(pools[l]) for l in langs}, alpha)
    counts = _largest_remainder(np.array([probs[l] for l in langs]), int(total))
    drawn = []
    for lang, k in zip(langs, counts):
        pool = np.asarray(pools[lang])
        reps = -(-int(k) // len(pool)) if k else 0
        seq = np.concatenate([rng.permutation(pool) for _ in range(reps)]) if reps else pool[:0]
        drawn.append(seq[:k])
    return np.concatenate(drawn)
