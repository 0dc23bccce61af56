#!/usr/bin/env python3
"""One figure for the paper_mini systems side by side, from their exp dirs' train.csv.

Panels: dev greedy WER per epoch (one line per run, colour per system), dev RNN-T loss per
frame, the share of the shared encoder's gradient norm per term for JUST (first seed), and
the contrastive / MLM accuracies of every system that has them. docs/paper_mini.md reads it.

  local/plot_paper_mini.py --out results/paper_mini_curves.png exp_paper_mini/*_s[0-9]
"""
from __future__ import annotations

import argparse
import csv
import re
import sys
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read(path: Path) -> tuple[list[dict], list[dict]]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    num = lambda r: {k: float(v) for k, v in r.items() if k != "split" and v not in ("", None)}  # noqa: E731
    return [num(r) for r in rows if r["split"] == "train"], [num(r) for r in rows if r["split"] == "dev"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="PNG to write")
    ap.add_argument("exps", nargs="+", help="exp dirs named <system>_s<seed>")
    a = ap.parse_args(argv)
    runs = defaultdict(dict)  # system -> seed -> (train rows, dev rows)
    for e in map(Path, a.exps):
        m = re.fullmatch(r"(.+)_s(\d+)", e.name)
        csv_path = e / "train.csv"
        if not m or not csv_path.is_file():
            print(f"{e}: not <system>_s<seed> with a train.csv; skipped", file=sys.stderr)
            continue
        runs[m.group(1)][int(m.group(2))] = read(csv_path)
    if not runs:
        print("no runs to plot", file=sys.stderr)
        return 2
    colours = dict(zip(sorted(runs), plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    fig, ax = plt.subplots(2, 2, figsize=(12, 8))
    for sys_name, seeds in sorted(runs.items()):
        for seed, (tr, dv) in sorted(seeds.items()):
            dv = [r for r in dv if "dev_wer" in r]
            label = sys_name if seed == min(seeds) else None
            style = "-" if seed == min(seeds) else "--"
            if dv:
                ax[0, 0].plot([r["epoch"] for r in dv], [r["dev_wer"] for r in dv], style,
                              color=colours[sys_name], label=label, lw=1)
                ax[0, 1].plot([r["epoch"] for r in dv], [r.get("rnnt", float("nan")) for r in dv], style,
                              color=colours[sys_name], label=label, lw=1)
            for key, mark in (("contrastive_acc", "-"), ("mlm_acc", ":")):
                pts = [(r["step"], r[key]) for r in tr if r.get(key)]
                if pts and seed == min(seeds):
                    ax[1, 1].plot(*zip(*pts), mark, color=colours[sys_name], lw=1,
                                  label=f"{sys_name} {key.split('_')[0]}")
    just = runs.get("just") or next((v for k, v in sorted(runs.items()) if k.startswith("just")), None)
    if just:
        tr = just[min(just)][0]
        keys = sorted({k for r in tr for k in r if k.startswith("gshare_")})
        steps = [r["step"] for r in tr if keys[0] in r] if keys else []
        if keys:
            ax[1, 0].stackplot(steps, *[[r.get(k, 0.0) for r in tr if keys[0] in r] for k in keys],
                               labels=[k[len("gshare_"):] for k in keys])
    ax[0, 0].set(title="dev greedy WER (%) (solid: first seed, dashed: second)", xlabel="epoch", ylim=(0, 105))
    ax[0, 1].set(title="dev RNN-T loss (per frame)", xlabel="epoch", yscale="log")
    ax[1, 0].set(title="JUST: share of the encoder's gradient norm per term", xlabel="step", ylim=(0, 1))
    ax[1, 1].set(title="unsupervised accuracies (first seed; solid contrastive, dotted MLM)", xlabel="step")
    for x in ax.flat:
        x.grid(alpha=0.3)
        if x.get_legend_handles_labels()[0]:
            x.legend(fontsize=7)
    fig.tight_layout()
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(a.out, dpi=90)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
