"""Score every decode_<method>_<set> dir of an experiment: wer.txt, sclite.txt, RESULTS.md, results.json."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from justkit.config import load_yaml
from justkit.datadir.tables import read_table
from justkit.fileio import atomic_write_text
from justkit.lang import is_language_code
from justkit.provenance import git_revision, machine
from justkit.score.wer import Normalizer, ScoringError, SetResult, format_sclite, format_summary, score_decode_dir

_DECODE_RE = re.compile(r"^decode_(?P<method>[A-Za-z0-9]+)_(?P<set>.+)$")
# Preferred order of decoding methods in tables; others follow alphabetically.
METHOD_ORDER = ("greedy", "beam")


@dataclass
class DecodeDir:
    """One ``decode_<method>_<set>`` directory (method names have no underscore)."""

    path: Path
    method: str
    set: str

    @property
    def column(self) -> str:
        """Table column: the language code for ``test_<lang>``, else the set name less ``test_``."""
        return self.set[len("test_"):] if self.set.startswith("test_") else self.set

    @property
    def lang(self) -> Optional[str]:
        """The set's language when all its utterances have one and the same (``utt2lang`` of the
        decode dir); None for mixed or code-switched (``l1-l2``) sets, which are not averaged."""
        p = self.path / "utt2lang"
        if not p.is_file():  # no utt2lang: a set named test_<code> is that language's
            return self.column if is_language_code(self.column) and "-" not in self.column else None
        langs = set(read_table(p).values())
        if len(langs) != 1:
            return None
        lang = next(iter(langs))
        return None if "-" in lang else lang


def find_decode_dirs(exp: str | Path) -> List[DecodeDir]:
    """All ``decode_<method>_<set>`` subdirectories of ``exp`` that hold a hyp.txt."""
    if not Path(exp).is_dir():
        raise ScoringError(f"{exp}: experiment dir not found")
    out = []
    for p in sorted(Path(exp).iterdir()):
        m = _DECODE_RE.match(p.name)
        if p.is_dir() and m and (p / "hyp.txt").is_file():
            out.append(DecodeDir(p, m.group("method"), m.group("set")))
    return out


def _method_key(m: str):
    return (METHOD_ORDER.index(m) if m in METHOD_ORDER else len(METHOD_ORDER), m)


def score_experiment(exp: str | Path, normalizer: Optional[Normalizer] = None, top: int = 10,
                     langs: Optional[Sequence[str]] = None, command: str = "") -> dict:
    """Score every decode dir of ``exp``; write their ``wer.txt``/``sclite.txt``, then
    ``exp/results.json`` and ``exp/RESULTS.md``. Returns the results dict::

        {"methods": {method: {column: {"wer", "cer", "ser", "set", "counts", "lang"}}},
         "average": {method: {"wer", "cer", "langs"}}, "langs": [...]}

    A decode set whose utterances all have one language is that language's column (named
    after the set, ``test_xx`` -> ``xx``); the average is the unweighted mean over the
    language columns found. ``langs`` gives their order (the recipe's ``--langs``); languages
    found but not listed follow, sorted.
    """
    exp = Path(exp)
    dirs = find_decode_dirs(exp)
    if not dirs:
        raise ScoringError(f"{exp}: no decode_<method>_<set>/hyp.txt to score; run stage 7 first")
    methods: Dict[str, Dict[str, dict]] = {}
    set_results: Dict[tuple, SetResult] = {}
    lang_cols: Dict[str, str] = {}  # column -> language
    for d in dirs:
        lang = d.lang
        if lang is not None:
            lang_cols[d.column] = lang
        res = score_decode_dir(d.path, normalizer, default_lang=lang)
        atomic_write_text(d.path / "wer.txt", format_summary(res, d.path.name))
        atomic_write_text(d.path / "sclite.txt", format_sclite(res, d.path.name))
        methods.setdefault(d.method, {})[d.column] = {
            "set": d.set,
            "wer": round(res.wer, 4),
            "cer": round(res.cer, 4),
            "ser": round(res.ser, 4),
            "counts": res.counts(),
            "rtf": _read_rtf(d.path),
            "lang": lang,
        }
        set_results[(d.method, d.column)] = res
    order = list(langs or [])
    col_order = [c for c in order if c in lang_cols] + sorted(c for c in lang_cols if c not in order)
    average = {}
    for m, cols in methods.items():
        present = [c for c in col_order if c in cols]
        if present:
            average[m] = {
                "wer": round(sum(cols[c]["wer"] for c in present) / len(present), 4),
                "cer": round(sum(cols[c]["cer"] for c in present) / len(present), 4),
                "langs": present,
            }
    results = {"exp": str(exp), "methods": methods, "average": average, "langs": col_order,
               "provenance": provenance(exp, command)}
    atomic_write_text(exp / "results.json", json.dumps(results, indent=1, sort_keys=True) + "\n")
    atomic_write_text(exp / "RESULTS.md", format_results_md(results, set_results, top))
    return results


def provenance(exp: Path, command: str = "") -> dict:
    """Where the results come from: justkit's revision, the command, the config, the machine."""
    cfg = exp / "config.yaml"
    out = {"revision": git_revision(), "command": command, "config": str(cfg) if cfg.is_file() else "",
           "machine": machine()}
    if cfg.is_file():
        c = load_yaml(cfg)
        out["experiment_config"] = (c.get("paths") or {}).get("config", "")
        out["model_mode"] = (c.get("model") or {}).get("mode", "")
    return out


def _read_rtf(d: Path) -> Optional[float]:
    p = d / "rtf.txt"
    if not p.is_file():
        return None
    for tok in p.read_text(encoding="utf-8").split():
        try:
            return float(tok)
        except ValueError:
            continue
    return None


def _fmt(x: Optional[float]) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def format_results_md(results: dict, set_results: Dict[tuple, SetResult] | None = None, top: int = 10) -> str:
    """RESULTS.md: WER and CER tables (rows: methods; columns: the languages, their average,
    then the other sets such as the code-switch set, kept out of the average), RTF, top errors."""
    methods = results["methods"]
    order = sorted(methods, key=_method_key)
    cols = {c for m in methods.values() for c in m}
    lang_cols = [c for c in results.get("langs", []) if c in cols]
    other_cols = sorted(cols - set(lang_cols))
    out = [f"# Results: {results['exp']}\n\n"]
    out.append(
        "WER/CER in %, after `justkit.text.normalize.normalize(text, lang)` on both sides "
        "(code-switched sets: one shared normalisation with their `l1-l2` code). "
        f"`avg` is the unweighted mean over the languages present ({' '.join(lang_cols) or 'none'}); "
        "other sets (e.g. `cs`, code-switching) are reported separately and not averaged.\n\n"
    )
    for metric in ("wer", "cer"):
        header = ["method"] + lang_cols + ["avg"] + other_cols
        out.append(f"## {metric.upper()}\n\n| " + " | ".join(header) + " |\n")
        out.append("|" + "---|" * len(header) + "\n")
        for m in order:
            row = [m] + [_fmt(methods[m].get(c, {}).get(metric)) for c in lang_cols]
            row.append(_fmt(results["average"].get(m, {}).get(metric)))
            row += [_fmt(methods[m].get(c, {}).get(metric)) for c in other_cols]
            out.append("| " + " | ".join(row) + " |\n")
        out.append("\n")
    header = ["method"] + lang_cols + other_cols
    out.append("## Real-time factor (decode wall time / audio duration)\n\n| " + " | ".join(header) + " |\n")
    out.append("|" + "---|" * len(header) + "\n")
    for m in order:
        row = [m] + [
            "n/a" if methods[m].get(c, {}).get("rtf") is None else f"{methods[m][c]['rtf']:.4f}"
            for c in lang_cols + other_cols
        ]
        out.append("| " + " | ".join(row) + " |\n")
    out.append("\n")
    prov = results.get("provenance") or {}
    if prov:
        out.append("## Provenance\n\n")
        out.append(f"- justkit revision: `{prov.get('revision', 'unknown')}`\n")
        if prov.get("command"):
            out.append(f"- command: `{prov['command']}`\n")
        if prov.get("config"):
            out.append(f"- config: `{prov['config']}` (resolved from `{prov.get('experiment_config', '?')}`, "
                       f"model mode {prov.get('model_mode', '?')})\n")
        out.append(f"- machine: {prov.get('machine', '?')}\n\n")
    if set_results:
        out.append(f"## Top errors (per method, all sets; {top} most frequent)\n\n")
        for m in order:
            merged = SetResult([u for (mm, _), r in sorted(set_results.items()) if mm == m for u in r.utts])
            te = merged.top_errors(top)
            out.append(f"### {m}\n\n")
            for title, key in (("substitutions", "substitutions"), ("insertions", "insertions"), ("deletions", "deletions")):
                items = ", ".join(f"`{w}` ({n})" for w, n in te[key]) or "none"
                out.append(f"- {title}: {items}\n")
            out.append("\n")
    return "".join(out)
