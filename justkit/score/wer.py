"""WER/CER of a decode directory with jiwer, per-utterance alignments and sclite-style reports."""
from __future__ import annotations

import collections
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Tuple

import jiwer

from justkit.datadir.tables import DataDirError, read_table
from justkit.errors import JustkitError

# A normaliser maps (text, language code) -> normalised text.
Normalizer = Callable[[str, str], str]

# jiwer's chunk types -> the one-letter ops of sclite's alignment ("C" correct).
_OPS = {"equal": "C", "substitute": "S", "delete": "D", "insert": "I"}


class ScoringError(JustkitError, ValueError):
    """Reference/hypothesis tables do not fit; the message names the file and utterance id."""


def default_normalizer() -> Normalizer:
    """justkit's text normaliser (``justkit.text.normalize.normalize``)."""
    from justkit.text.normalize import normalize

    return normalize


@dataclass
class UttResult:
    """Alignment and error counts of one utterance (after normalisation)."""

    utt: str
    lang: str
    ref: List[str]
    hyp: List[str]
    alignment: List[Tuple[str, Optional[str], Optional[str]]]  # (op, ref word, hyp word)
    sub: int
    dels: int
    ins: int
    hits: int
    char_errors: int
    char_ref: int

    @property
    def errors(self) -> int:
        return self.sub + self.dels + self.ins


@dataclass
class SetResult:
    """Totals over a decode set, plus the per-utterance results."""

    utts: List[UttResult] = field(default_factory=list)

    def _sum(self, name: str) -> int:
        return sum(getattr(u, name) for u in self.utts)

    @property
    def num_ref_words(self) -> int:
        return sum(len(u.ref) for u in self.utts)

    @property
    def wer(self) -> float:
        """Word error rate in percent."""
        n = self.num_ref_words
        return 100.0 * (self._sum("sub") + self._sum("dels") + self._sum("ins")) / max(n, 1)

    @property
    def cer(self) -> float:
        """Character error rate in percent (characters of the normalised text, spaces included)."""
        return 100.0 * self._sum("char_errors") / max(self._sum("char_ref"), 1)

    @property
    def ser(self) -> float:
        """Sentence error rate in percent."""
        return 100.0 * sum(1 for u in self.utts if u.errors) / max(len(self.utts), 1)

    def by_lang(self) -> Dict[str, "SetResult"]:
        """The utterances of each language as a set of their own, by language code."""
        out: Dict[str, SetResult] = {}
        for u in self.utts:
            out.setdefault(u.lang, SetResult()).utts.append(u)
        return dict(sorted(out.items()))

    def counts(self) -> Dict[str, int]:
        return {
            "sub": self._sum("sub"),
            "del": self._sum("dels"),
            "ins": self._sum("ins"),
            "hits": self._sum("hits"),
            "ref_words": self.num_ref_words,
            "char_errors": self._sum("char_errors"),
            "ref_chars": self._sum("char_ref"),
            "utts": len(self.utts),
        }

    def top_errors(self, n: int = 10) -> Dict[str, List[Tuple[str, int]]]:
        """The ``n`` most frequent substitutions (``ref -> hyp``), insertions and deletions."""
        subs: collections.Counter = collections.Counter()
        ins: collections.Counter = collections.Counter()
        dels: collections.Counter = collections.Counter()
        for u in self.utts:
            for op, r, h in u.alignment:
                if op == "S":
                    subs[f"{r} -> {h}"] += 1
                elif op == "I":
                    ins[h] += 1
                elif op == "D":
                    dels[r] += 1
        return {
            "substitutions": _most_common(subs, n),
            "insertions": _most_common(ins, n),
            "deletions": _most_common(dels, n),
        }


def _most_common(c: collections.Counter, n: int) -> List[Tuple[str, int]]:
    # Ties broken by the word so that reports are reproducible.
    return sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))[:n]


def score_utterance(utt: str, lang: str, ref: str, hyp: str) -> UttResult:
    """Align one normalised reference/hypothesis pair with jiwer (Levenshtein on words)."""
    ref_words, hyp_words = ref.split(), hyp.split()
    if not ref_words:
        raise ScoringError(f"utterance {utt}: empty reference")
    if hyp_words:
        out = jiwer.process_words(" ".join(ref_words), " ".join(hyp_words))
        chunks = out.alignments[0]
        s, d, i, h = out.substitutions, out.deletions, out.insertions, out.hits
    else:
        # jiwer cannot align an empty hypothesis: every reference word is a deletion.
        chunks = [jiwer.AlignmentChunk("delete", 0, len(ref_words), 0, 0)]
        s, d, i, h = 0, len(ref_words), 0, 0
    alignment: List[Tuple[str, Optional[str], Optional[str]]] = []
    for c in chunks:
        op = _OPS[c.type]
        if op in "CS":
            for k in range(c.ref_end_idx - c.ref_start_idx):
                alignment.append((op, ref_words[c.ref_start_idx + k], hyp_words[c.hyp_start_idx + k]))
        elif op == "D":
            alignment.extend(("D", w, None) for w in ref_words[c.ref_start_idx : c.ref_end_idx])
        else:
            alignment.extend(("I", None, w) for w in hyp_words[c.hyp_start_idx : c.hyp_end_idx])
    ref_chars = " ".join(ref_words)
    hyp_chars = " ".join(hyp_words)
    if hyp_chars:
        co = jiwer.process_characters(ref_chars, hyp_chars)
        char_errors = co.substitutions + co.deletions + co.insertions
    else:
        char_errors = len(ref_chars)
    return UttResult(utt, lang, ref_words, hyp_words, alignment, s, d, i, h, char_errors, len(ref_chars))


def score_tables(
    refs: Mapping[str, str],
    hyps: Mapping[str, str],
    langs: Mapping[str, str],
    normalizer: Optional[Normalizer] = None,
    ref_name: str = "ref.txt",
    hyp_name: str = "hyp.txt",
) -> SetResult:
    """Score ``hyps`` against ``refs`` (utt -> text); ``langs`` gives each utterance's language.

    Both sides are normalised with ``normalizer(text, lang)`` (default: justkit's). A
    code-switched utterance (language ``l1-l2``) gets one shared normalisation of the whole
    text with that ``l1-l2`` code: the hypothesis has no marked language boundary, and
    ``justkit.text.normalize`` treats both languages alike but for the Dutch clitic rule,
    which it applies when either language is Dutch. An id
    in one table and not the other, an empty reference (before or after normalisation)
    or an utterance without a language is a ScoringError naming the file and id.
    """
    norm = normalizer or default_normalizer()
    missing = [u for u in refs if u not in hyps]
    if missing:
        raise ScoringError(
            f"{hyp_name}: no hypothesis for utterance {missing[0]} (in {ref_name}; "
            f"{len(missing)} missing in all); re-run decoding for this set"
        )
    extra = [u for u in hyps if u not in refs]
    if extra:
        raise ScoringError(
            f"{hyp_name}: utterance {extra[0]} is not in {ref_name} ({len(extra)} extra in all)"
        )
    result = SetResult()
    for utt in sorted(refs, key=lambda s: s.encode("utf-8")):
        if utt not in langs:
            raise ScoringError(f"utterance {utt}: no language (utt2lang)")
        lang = langs[utt]
        if not refs[utt].strip():
            raise ScoringError(f"{ref_name}: utterance {utt}: empty reference")
        ref = norm(refs[utt], lang)
        if not ref.split():
            raise ScoringError(
                f"{ref_name}: utterance {utt}: reference {refs[utt]!r} is empty after normalisation"
            )
        hyp = norm(hyps[utt], lang)
        try:
            result.utts.append(score_utterance(utt, lang, ref, hyp))
        except ScoringError as e:
            raise ScoringError(f"{ref_name}: {e}") from None
    return result


def score_decode_dir(
    decode_dir: str | Path, normalizer: Optional[Normalizer] = None, default_lang: Optional[str] = None
) -> SetResult:
    """Score ``decode_dir/{ref,hyp}.txt``; languages from its ``utt2lang`` or ``default_lang``."""
    d = Path(decode_dir)
    try:
        refs = read_table(d / "ref.txt", allow_empty_value=True)
        hyps = read_table(d / "hyp.txt", allow_empty_value=True)
    except DataDirError as e:
        raise ScoringError(str(e)) from None
    if (d / "utt2lang").is_file():
        langs = read_table(d / "utt2lang")
    elif default_lang:
        langs = {u: default_lang for u in refs}
    else:
        raise ScoringError(f"{d}: no utt2lang and no language given for the set")
    return score_tables(refs, hyps, langs, normalizer, str(d / "ref.txt"), str(d / "hyp.txt"))


def format_summary(res: SetResult, name: str = "") -> str:
    """Kaldi-style ``%WER``/``%CER``/``%SER`` lines."""
    c = res.counts()
    errs = c["sub"] + c["del"] + c["ins"]
    nerr_sent = sum(1 for u in res.utts if u.errors)
    lines = [
        f"%WER {res.wer:.2f} [ {errs} / {c['ref_words']}, {c['ins']} ins, {c['del']} del, {c['sub']} sub ]"
        + (f" {name}" if name else ""),
        f"%CER {res.cer:.2f} [ {c['char_errors']} / {c['ref_chars']} ]",
        f"%SER {res.ser:.2f} [ {nerr_sent} / {c['utts']} ]",
        f"Scored {c['utts']} sentences, {c['ref_words']} reference words.",
    ]
    return "\n".join(lines) + "\n"


def format_alignment(u: UttResult) -> str:
    """sclite-style REF/HYP/OP lines: errors upper-cased, ``***`` fills insertions/deletions."""
    refs, hyps, ops = [], [], []
    for op, r, h in u.alignment:
        if op == "C":
            rr, hh = r, h
        elif op == "S":
            rr, hh = r.upper(), h.upper()
        elif op == "D":
            rr, hh = r.upper(), "*" * max(3, len(r))
        else:
            rr, hh = "*" * max(3, len(h)), h.upper()
        w = max(len(rr), len(hh))
        refs.append(rr.ljust(w))
        hyps.append(hh.ljust(w))
        ops.append(("" if op == "C" else op).ljust(w))
    return (
        f"id: ({u.utt})  lang: {u.lang}\n"
        f"Scores: (#C #S #D #I) {u.hits} {u.sub} {u.dels} {u.ins}\n"
        f"REF:  {' '.join(refs).rstrip()}\n"
        f"HYP:  {' '.join(hyps).rstrip()}\n"
        f"Eval: {' '.join(ops).rstrip()}\n"
    )


def format_sclite(res: SetResult, name: str = "", top: int = 20) -> str:
    """The full ``sclite.txt`` report: summary, per-utterance alignments, most frequent errors."""
    parts = [f"# sclite-style report{' for ' + name if name else ''}\n", format_summary(res, name), "\n"]
    parts.extend(format_alignment(u) + "\n" for u in res.utts)
    te = res.top_errors(top)
    for title, key in (("SUBSTITUTIONS", "substitutions"), ("INSERTIONS", "insertions"), ("DELETIONS", "deletions")):
        parts.append(f"{title} (most frequent first): count word\n")
        if not te[key]:
            parts.append("  (none)\n")
        for w, n in te[key]:
            parts.append(f"  {n:5d}  {w}\n")
        parts.append("\n")
    return "".join(parts)
