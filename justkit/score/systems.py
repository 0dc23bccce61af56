"""Several systems, several seeds each: per-language WER mean and spread, and the paper's rows beside them."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

from justkit.fileio import atomic_write_text
from justkit.provenance import machine
from justkit.score.paper import PaperTableError, experiment_row, load_paper


def _mean_sd(vals: Sequence[float]) -> tuple[Optional[float], Optional[float]]:
    vals = [v for v in vals if v is not None]
    if not vals:
        return None, None
    m = sum(vals) / len(vals)
    if len(vals) < 2:
        return m, None
    return m, math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1))


def aggregate(groups: Mapping[str, Sequence[str | Path]], method: Optional[str] = None,
              langs: Sequence[str] = ()) -> dict:
    """``{"systems": {name: {"avg", "avg_sd", "wer": {lang}, "wer_sd": {lang}, "seeds", "runs"}}}``
    from the scored experiments (results.json) of each system, one per seed. ``avg`` is the mean
    over seeds of each run's language average; ``*_sd`` the sample standard deviation (None for
    one seed)."""
    out: Dict[str, dict] = {}
    used: set = set()
    for name, exps in groups.items():
        if not exps:
            raise PaperTableError(f"system {name}: no experiment given")
        rows = [experiment_row(e, method, langs) for e in exps]
        used.update(r.method for r in rows)
        use = list(langs) or rows[0].langs_scored
        avg, avg_sd = _mean_sd([r.avg for r in rows])
        wer, wer_sd = {}, {}
        for lang in use:
            wer[lang], wer_sd[lang] = _mean_sd([r.wer.get(lang) for r in rows])
        out[name] = {
            "avg": _round(avg), "avg_sd": _round(avg_sd), "wer": {k: _round(v) for k, v in wer.items()},
            "wer_sd": {k: _round(v) for k, v in wer_sd.items()}, "seeds": len(rows),
            "runs": [{"exp": r.source, "avg": r.avg, "wer": r.wer} for r in rows],
        }
    return {"systems": out, "langs": list(langs) or (rows[0].langs_scored if groups else []),
            "method": method or "/".join(sorted(used))}


def _round(x: Optional[float]) -> Optional[float]:
    return None if x is None else round(x, 2)


def _cell(m: Optional[float], sd: Optional[float]) -> str:
    if m is None:
        return "n/a"
    return f"{m:.1f}" if sd is None else f"{m:.1f} ± {sd:.1f}"


def format_table(agg: dict, title: str = "", paper: Optional[dict] = None, baseline: str = "",
                 command: str = "", wall_s: Optional[float] = None) -> str:
    """Markdown: one row per system (mean ± sd over seeds per language and the average), the
    relative change of each system's average against ``baseline``, then the paper's rows."""
    langs = agg["langs"]
    systems = agg["systems"]
    out = [f"# {title}\n\n" if title else ""]
    header = ["system", "seeds"] + langs + ["avg"]
    search = agg.get("method") or "beam"
    out.append(f"Test WER (%), {search} search; mean ± sample standard deviation over seeds.\n\n")
    out.append("| " + " | ".join(header) + " |\n|" + "---|" * len(header) + "\n")
    for name, s in systems.items():
        cells = [name, str(s["seeds"])] + [_cell(s["wer"].get(l), s["wer_sd"].get(l)) for l in langs]
        cells.append(_cell(s["avg"], s["avg_sd"]))
        out.append("| " + " | ".join(cells) + " |\n")
    if baseline and baseline in systems and systems[baseline]["avg"]:
        base = systems[baseline]
        out.append(f"\nRelative change against `{baseline}` (%, negative = fewer errors):\n\n")
        header = ["system"] + langs + ["avg"]
        out.append("| " + " | ".join(header) + " |\n|" + "---|" * len(header) + "\n")
        for name, s in systems.items():
            if name == baseline:
                continue
            cells = [name]
            for lang in langs + ["avg"]:
                a = s["avg"] if lang == "avg" else s["wer"].get(lang)
                b = base["avg"] if lang == "avg" else base["wer"].get(lang)
                cells.append("n/a" if a is None or not b else f"{100 * (a - b) / b:+.1f}")
            out.append("| " + " | ".join(cells) + " |\n")
    if paper is not None:
        plangs = paper["langs"]
        out.append(f"\n## The paper's rows (MLS test WER %, full MLS; for the ordering, not the scale)\n\n")
        header = ["system"] + plangs + ["avg"]
        out.append("| " + " | ".join(header) + " |\n|" + "---|" * len(header) + "\n")
        notes = []
        for r in paper["rows"]:
            if r.avg is None and all(v is None for v in r.wer.values()):
                continue
            k = len(notes) + 1
            notes.append(f"[{k}] {r.source}")
            cells = [f"{r.name} [{k}]"] + ["n/a" if r.wer.get(l) is None else f"{r.wer[l]:.1f}" for l in plangs]
            cells.append("n/a" if r.avg is None else f"{r.avg:.1f}")
            out.append("| " + " | ".join(cells) + " |\n")
        out.append("\n" + "\n".join(f"{n}  " for n in notes) + "\n")
    out.append("\n## How this was measured\n\n")
    if command:
        out.append(f"- command: `{command}`\n")
    out.append(f"- machine: {machine()}\n")
    if wall_s is not None:
        out.append(f"- wall time: {wall_s / 60:.0f} min\n")
    runs = [r["exp"] for s in systems.values() for r in s["runs"]]
    out.append(f"- runs: {' '.join(runs)}\n")
    return "".join(out)


def write(agg: dict, md: str, out_md: str | Path = "", out_json: str | Path = "", extra: Optional[dict] = None) -> None:
    """Write the table and/or the JSON (``agg`` plus ``extra``), atomically; "" = not that one."""
    if out_md:
        atomic_write_text(out_md, md)
    if out_json:
        atomic_write_text(out_json, json.dumps({**agg, **(extra or {})}, indent=1, ensure_ascii=False) + "\n")


def parse_groups(words: Sequence[str]) -> Dict[str, List[str]]:
    """``name=exp1,exp2`` words -> {name: [exp1, exp2]} (order kept)."""
    groups: Dict[str, List[str]] = {}
    for w in words:
        name, eq, exps = w.partition("=")
        if not eq or not name or not exps:
            raise PaperTableError(f"{w!r}: expected NAME=EXP_DIR[,EXP_DIR...]")
        groups[name] = [e for e in exps.split(",") if e]
    return groups


def load_paper_if(flag: bool) -> Optional[dict]:
    return load_paper() if flag else None
