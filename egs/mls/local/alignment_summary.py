#!/usr/bin/env python3
"""The gradient-alignment monitor's figures of several runs as one markdown table (and JSON).

For each run (an exp dir trained with ``train.grad_alignment_interval``), per loss term: the mean
over the measurements in the given share of training (default: all) of ``galign_<term>`` (cosine
of the term's shared-encoder gradient with the dev recognition-loss gradient), ``gshare_<term>``
(its share of the encoder gradient; needs ``train.grad_balance_interval``, else left blank) and
``gdev_<term>`` (first-order dev-loss change of its Adam-scaled update). docs/training.md,
"Gradient alignment", says how to read them.

  local/alignment_summary.py --out_json results/alignment_paper_lowlabel.json exp_paper_lowlabel/just_s*
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from justkit.fileio import atomic_write_text

TERMS = ("rnnt", "ctc", "contrastive", "mlm", "diversity")


def summarise(exp: Path, start: float) -> dict:
    path = exp / "train.csv"
    if not path.is_file():
        raise SystemExit(f"alignment_summary: {path}: not found")
    with open(path, newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "train"]
    measured = [r for r in rows if r.get("galign_rnnt") not in (None, "")]
    if not measured:
        raise SystemExit(f"alignment_summary: {path}: no galign_* values (train.grad_alignment_interval was 0)")
    last = max(int(r["step"]) for r in rows)
    measured = [r for r in measured if int(r["step"]) >= start * last]
    out: dict = {"exp": str(exp), "measurements": len(measured), "steps": [int(measured[0]["step"]), last]}
    for t in TERMS:
        for key in ("galign", "gshare", "gdev"):
            vals = [float(r[f"{key}_{t}"]) for r in measured if r.get(f"{key}_{t}") not in (None, "")]
            if vals:
                out.setdefault(t, {})[key] = sum(vals) / len(vals)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("exps", nargs="+", type=Path)
    p.add_argument("--from", dest="start", type=float, default=0.0, help="share of training to skip (0-1)")
    p.add_argument("--out_json", default="", help="also write the figures here")
    a = p.parse_args(argv)
    if not 0 <= a.start < 1:
        p.error("--from must be in [0, 1)")
    res = [summarise(e, a.start) for e in a.exps]
    terms = [t for t in TERMS if any(t in r for r in res)]
    print("| run | n | " + " | ".join(f"{t}: cos / share / dev change" for t in terms) + " |")
    print("|---|---|" + "---|" * len(terms))
    fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
    for r in res:
        cells = [f"{fmt(r.get(t, {}).get('galign'), '+.3f')} / {fmt(r.get(t, {}).get('gshare'), '.2f')} / "
                 f"{fmt(r.get(t, {}).get('gdev'), '+.1e')}" for t in terms]
        print(f"| {Path(r['exp']).name} | {r['measurements']} | " + " | ".join(cells) + " |")
    if a.out_json:
        atomic_write_text(a.out_json, json.dumps({"from": a.start, "runs": res}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
