"""The JUST paper's MLS results table, with our experiments' rows and relative changes beside it."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import yaml

from justkit.errors import JustkitError

PAPER_YAML = Path(__file__).with_name("paper_results.yaml")


class PaperTableError(JustkitError, ValueError):
    """The paper table or an experiment's results are missing or malformed; names the file."""


@dataclass
class Row:
    """One table row: WER per language (None = n/a) and the average."""

    name: str
    wer: Dict[str, Optional[float]]
    avg: Optional[float]
    source: str = ""
    id: str = ""
    langs_scored: List[str] = field(default_factory=list)  # experiments: languages decoded
    status: str = ""  # paper rows: how sure the row is (read, quoted elsewhere, inferred, not found)
    method: str = ""  # experiments: the search the numbers come from (greedy, beam)


def load_paper(path: str | Path = PAPER_YAML) -> dict:
    """Read and check ``paper_results.yaml``: every number is a float or null, every row has a source."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PaperTableError(f"{path}: not found") from None
    langs = data.get("langs")
    if not langs:
        raise PaperTableError(f"{path}: no 'langs' list (the paper's languages, in its column order)")
    rows = []
    for i, s in enumerate(data.get("systems") or []):
        where = f"{path}: systems[{i}] ({s.get('id', '?')})"
        if not s.get("source"):
            raise PaperTableError(f"{where}: no source")
        wer = s.get("wer") or {}
        unknown = sorted(set(wer) - set(langs))
        if unknown:
            raise PaperTableError(f"{where}: unknown language(s) {unknown}")
        for k, v in list(wer.items()) + [("avg", s.get("avg"))]:
            if v is not None and not isinstance(v, (int, float)):
                raise PaperTableError(f"{where}: {k} = {v!r} is not a number or null")
        rows.append(Row(s["name"], {lang: _num(wer.get(lang)) for lang in langs}, _num(s.get("avg")),
                        s["source"], s.get("id", ""), status=s.get("status", "")))
    return {"paper": data.get("paper", ""), "langs": langs, "rows": rows,
            "claims": data.get("claims") or [], "notes": data.get("notes") or []}


def _num(v) -> Optional[float]:
    return None if v is None else float(v)


def experiment_row(exp: str | Path, method: Optional[str] = None, langs: Sequence[str] = ()) -> Row:
    """Our row from ``exp/results.json`` (stage 8): the ``beam`` decode if there is one (or
    ``method``), else the method with the lowest average; per language of ``langs`` (the
    paper's columns; default: the experiment's own languages)."""
    exp = Path(exp)
    p = exp / "results.json"
    try:
        res = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PaperTableError(f"{p}: not found; run `python -m justkit.bin.score --exp {exp}` first") from None
    except json.JSONDecodeError as e:
        raise PaperTableError(f"{p}: not valid JSON ({e})") from None
    methods = res.get("methods") or {}
    avgs = res.get("average") or {}
    if method is None:
        if "beam" in methods:
            method = "beam"
        elif avgs:
            method = min(avgs, key=lambda m: (avgs[m]["wer"], m))
        elif methods:
            method = sorted(methods)[0]
        else:
            raise PaperTableError(f"{p}: no scored decodes")
    if method not in methods:
        raise PaperTableError(f"{p}: no decode method {method!r} (has {sorted(methods)})")
    cols = methods[method]
    own = res.get("langs") or [c for c, v in cols.items() if v.get("lang")]
    langs = list(langs) or list(own)
    wer = {lang: (cols[lang]["wer"] if lang in cols else None) for lang in langs}
    avg = avgs.get(method, {}).get("wer")
    scored = [c for c in own if c in cols]
    return Row(f"{exp.name} ({method})", wer, avg, str(exp), exp.name, scored, method=method)


def paper_average_over(row: Row, langs: Sequence[str], all_langs: Sequence[str]) -> Optional[float]:
    """The paper row's average over ``langs``: its published average when ``langs`` is all of
    them, else the mean of its per-language numbers (None when one is missing)."""
    if set(langs) == set(all_langs) and row.avg is not None:
        return row.avg
    vals = [row.wer.get(lang) for lang in langs]
    if not vals or any(v is None for v in vals):
        return None
    return sum(vals) / len(vals)


def _f(x: Optional[float]) -> str:
    return "n/a" if x is None else f"{x:.1f}"


def format_paper_table(paper: dict, ours: Sequence[Row]) -> str:
    """Markdown: the paper's rows and ours (WER per language + average), then each experiment's
    average against every paper row, relative change in % (negative = fewer errors than the paper)."""
    langs = paper["langs"]
    out = [f"# MLS test WER (%): {paper['paper']}\n\n"]
    header = ["system"] + langs + ["avg"]
    out.append("| " + " | ".join(header) + " |\n|" + "---|" * len(header) + "\n")
    notes = []
    for r in paper["rows"]:
        says_status = r.status and not r.source.startswith(r.status)  # "not found: ..." says it already
        notes.append(f"[{len(notes) + 1}] {r.source}" + (f" ({r.status})" if says_status else ""))
        out.append("| " + " | ".join([f"{r.name} [{len(notes)}]"] + [_f(r.wer.get(lang)) for lang in langs]
                                     + [_f(r.avg)]) + " |\n")
    for r in ours:
        mark = ""
        if set(r.langs_scored) != set(langs):
            notes.append(f"[{len(notes) + 1}] this experiment; its average is over {' '.join(r.langs_scored)} only")
            mark = f" [{len(notes)}]"
        out.append("| " + " | ".join([f"**{r.name}**{mark}"] + [_f(r.wer.get(lang)) for lang in langs]
                                     + [_f(r.avg)]) + " |\n")
    out.append("\n" + "".join(f"{n}  \n" for n in notes))
    out.append("\nn/a: not decoded here, or a number of the paper not found (docs/paper.md).\n")
    if ours:
        out.append("\n## Relative change of our average vs each paper row (%; negative = better)\n\n")
        header = ["experiment"] + [r.name for r in paper["rows"]]
        out.append("| " + " | ".join(header) + " |\n|" + "---|" * len(header) + "\n")
        for r in ours:
            cells = [r.name]
            for p in paper["rows"]:
                ref = paper_average_over(p, r.langs_scored, langs)
                cells.append("n/a" if ref is None or r.avg is None or ref == 0 else f"{100 * (r.avg - ref) / ref:+.1f}")
            out.append("| " + " | ".join(cells) + " |\n")
        out.append(
            "\nAn experiment that decoded only some languages is compared with the paper's mean over those "
            "languages (needs the paper's per-language numbers).\n"
        )
    if paper["claims"] or paper["notes"]:
        names = {r.id: r.name for r in paper["rows"]}
        out.append("\n## The paper's stated relative improvements\n\n")
        for c in paper["claims"]:
            out.append(
                f"- {names.get(c['system'], c['system'])}: average WER {c['relative_reduction']:.1f}% "
                f"(relative) below {names.get(c['versus'], c['versus'])} ({c['source']})\n"
            )
        for n in paper["notes"]:
            out.append(f"- {n}\n")
    return "".join(out)
