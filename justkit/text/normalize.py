"""MLS-style transcript normalisation: NFC, lowercase, no punctuation but intra-word ' and -."""
from __future__ import annotations

import re
import unicodedata


# Typographic variants mapped to the ASCII apostrophe / hyphen before the punctuation rule.
_APOSTROPHES = "\u2019\u2018\u02bc\u00b4\u0060\u2032"  # ’ ‘ ʼ ´ ` ′
_HYPHENS = "\u2010\u2011"  # ‐ ‑ (dashes – — are punctuation: they separate words)
_TRANSLATE = {ord(c): "'" for c in _APOSTROPHES}
_TRANSLATE.update({ord(c): "-" for c in _HYPHENS})

_WORD_CHAR = r"[^\W_]"  # a letter or digit (any script); marks follow their base under NFC
# An apostrophe or hyphen is kept only between two word characters: l'homme, don't, peut-être.
_JOINER = re.compile(rf"(?<={_WORD_CHAR})['-](?={_WORD_CHAR})")
# Dutch proclitics written with a leading apostrophe ('t huis, 's morgens, 'n man, 'k ben).
_NL_CLITIC = re.compile(r"(?<![^\W_])'(?=(?:t|s|n|k|m|r)\b)")


def normalize(text: str, lang: str) -> str:
    """Normalise one transcript of language ``lang`` (ISO code, or ``l1-l2`` for code-switched
    utterances) for tokenizer training, packing and scoring.

    Decisions (the same for every language but the one Dutch rule):
      * Unicode NFC, so that é is one code point whatever the source wrote; then lowercase
        (``str.lower``: ß stays ß, Ł -> ł) and NFC again;
      * typographic apostrophes (’ ‘ ʼ ´ `) become ', non-breaking hyphens become -;
      * an apostrophe or hyphen is kept only inside a word (between letters/digits):
        "l'homme", "don't", "peut-être", "bielsko-biała" keep theirs, "dogs'" and "- so" lose it;
        the one language rule: Dutch keeps the leading apostrophe of the clitics
        't 's 'n 'k 'm 'r ("'t is", "'s avonds");
      * every other character that is not a letter, combining mark or digit (punctuation,
        symbols, quotes « », dashes, underscores) becomes a space;
      * whitespace runs collapse to one space, no leading or trailing space.
    The result may be empty (a transcript of punctuation only): callers decide what to do.
    """
    if not lang:
        raise ValueError("normalize: empty language code")
    s = unicodedata.normalize("NFC", text.replace("\x00", " ").replace("\x01", " "))
    s = unicodedata.normalize("NFC", s.lower()).translate(_TRANSLATE)
    # Protect joiners, blank every non-word character, then restore the joiners.
    s = _JOINER.sub(lambda m: "\x00" if m.group(0) == "'" else "\x01", s)
    if "nl" in lang.split("-"):  # also code-switched sets, whose language is "l1-l2"
        s = _NL_CLITIC.sub("\x00", s)
    s = s.translate(_KEEP)
    s = s.replace("\x00", "'").replace("\x01", "-")
    return " ".join(s.split())


_ALNUM = re.compile(_WORD_CHAR)


def has_words(text: str, lang: str) -> bool:
    """``normalize(text, lang) != ""``, fast for the usual transcript: a letter or digit anywhere
    survives normalisation (NFC, lowercasing and the rules above keep letters letters), so only
    a text without one (punctuation, symbols, a lone combining mark) is normalised to find out."""
    if _ALNUM.search(text):
        return True
    return normalize(text, lang) != ""


def _keep(c: str) -> bool:
    if c in "\x00\x01":
        return True
    return unicodedata.category(c)[0] in "LMN"  # letters, combining marks, numbers


class _KeepTable(dict):
    """``str.translate`` table: a character stays if :func:`_keep`, else becomes a space; filled
    on first sight of each character (a C loop over the text instead of a Python one: ~10x
    faster, which stages 1, 4 and 5 feel on 11M transcripts)."""

    def __missing__(self, code: int) -> int:
        value = code if _keep(chr(code)) else 32
        self[code] = value
        return value


_KEEP = _KeepTable()
