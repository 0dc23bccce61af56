"""Training curves: ``train.csv`` (one row per logged step or dev evaluation) and ``plots/*.png``."""
from __future__ import annotations

import csv
import io
import logging
import math
from pathlib import Path
from typing import Mapping, Optional

from justkit.fileio import atomic_open, atomic_write_text
from justkit.losses.terms import TERMS

logger = logging.getLogger(__name__)

# Columns that describe a row rather than being a curve of their own (lr gets its own plot).
META = ("split", "step", "epoch", "lr", "grad_norm", "frames_per_s", "skipped", "elapsed_s")
NOT_PLOTTED = ("split", "step", "epoch", "skipped", "elapsed_s", "num_frames")
BALANCE = ("gnorm_", "gshare_")  # per-term encoder gradient norms and shares (trainer grad_balance_interval)
ALIGN = ("galign_", "gdev_")      # per-term gradient alignment with the dev need (grad_alignment_interval)
DEV_WER = "dev_wer"  # dev_wer (mean over languages) and dev_wer_<lang>: one figure together


class TrainCurves:
    """Rows of logged values; rewritten atomically to ``csv_path``; plotted into ``plot_dir``.

    ``split`` is ``train`` (averages over a log interval) or ``dev`` (a dev-set evaluation).
    """

    def __init__(self, csv_path: str | Path, plot_dir: str | Path, tensorboard_dir: str | Path | None = None,
                 references: Optional[Mapping[str, tuple[float, str]]] = None):
        self.csv_path = Path(csv_path)
        self.references = dict(references or {})  # column -> (value, label): a dashed line on its plot
        self.plot_dir = Path(plot_dir)
        self.rows: list[dict] = []
        self.tb_dir = Path(tensorboard_dir) if tensorboard_dir else None
        self._tb = None
        self._tb_purge: int | None = None  # after a resume: events past this step are dropped

    def resume(self, step: int) -> None:
        """Load an existing CSV, dropping rows logged after ``step`` (work that a resume redoes)."""
        self.rows = []
        if not self.csv_path.exists():
            return
        with open(self.csv_path, encoding="utf-8", newline="") as f:
            for i, row in enumerate(csv.DictReader(f), start=2):
                try:
                    s = int(row["step"])
                except (KeyError, TypeError, ValueError):
                    logger.warning("%s:%d: row without a valid step, dropped", self.csv_path, i)
                    continue
                if s <= step:
                    self.rows.append({k: _num(v) for k, v in row.items() if v not in ("", None)})
        dropped = "" if not self.rows else f" up to step {step}"
        logger.info("resumed %s: %d rows kept%s", self.csv_path, len(self.rows), dropped)
        self._tb_purge = step + 1

    def add(self, row: dict) -> None:
        self.rows.append(dict(row))
        self._to_tensorboard(row)

    def _to_tensorboard(self, row: dict) -> None:
        """Every numeric value of the row as a scalar ``<split>/<name>`` at its step."""
        if self.tb_dir is None:
            return
        if self._tb is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:  # tensorboard not installed: say so once, go on without
                logger.warning("TensorBoard logging off (%s); pip install tensorboard", e)
                self.tb_dir = None
                return
            self._tb = SummaryWriter(str(self.tb_dir), purge_step=self._tb_purge)
        split, step = row.get("split", "train"), int(row.get("step", 0))
        for k, v in row.items():
            if k not in ("split", "step", "epoch") and _finite(v):
                group = "grad_balance" if k.startswith(BALANCE) else "grad_alignment" if k.startswith(ALIGN) else split
                self._tb.add_scalar(f"{group}/{k}", float(v), step)
        self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def columns(self) -> list[str]:
        keys: set[str] = set()
        for r in self.rows:
            keys.update(r)
        return [c for c in META if c in keys] + sorted(keys - set(META))

    def write_csv(self) -> None:
        cols = self.columns()
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
        w.writeheader()
        for r in self.rows:
            w.writerow({k: _fmt(r.get(k)) for k in cols})
        atomic_write_text(self.csv_path, buf.getvalue())

    def terms(self) -> list[str]:
        """The curves to plot one by one: every numeric column except row descriptors and the
        gradient-balance columns (``gnorm_*``, ``gshare_*``: one figure together)."""
        return [c for c in self.columns()
                if c not in NOT_PLOTTED and not c.startswith(BALANCE + ALIGN) and not c.startswith(DEV_WER)]

    def plot(self) -> list[Path]:
        """One PNG per term (train line, dev points) plus ``lr.png``; returns the paths written."""
        # Figure + Agg canvas directly: no pyplot global state, no display needed.
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        written = []
        for term in self.terms():
            fig = Figure(figsize=(6, 3.5), dpi=100)
            FigureCanvasAgg(fig)
            ax = fig.add_subplot(1, 1, 1)
            any_line = False
            for split, style in (("train", "-"), ("dev", "o-")):
                pts = [(r["step"], r[term]) for r in self.rows
                       if r.get("split") == split and _finite(r.get(term))]
                if pts:
                    xs, ys = zip(*pts)
                    ax.plot(xs, ys, style, label=split, markersize=4)
                    any_line = True
            vals = [r[term] for r in self.rows if _finite(r.get(term))]
            if not any_line or not any(vals):  # absent, or a term this mode never computes (all 0)
                continue
            if term in self.references:
                value, label = self.references[term]
                ax.axhline(value, color="k", ls="--", lw=0.8, label=label)
                ax.set_ylim(bottom=0, top=max(ax.get_ylim()[1], value * 1.05))
            ax.set_xlabel("step")
            ax.set_ylabel(term)
            ax.set_title(term)
            ax.grid(True, alpha=0.3)
            ax.legend()
            fig.tight_layout()
            path = self.plot_dir / f"{term}.png"
            with atomic_open(path, "wb", encoding=None) as f:
                fig.savefig(f, format="png")
            written.append(path)
        extra = [self.plot_balance(), self.plot_alignment(), self.plot_dev_wer(), self.plot_overview()]
        return written + [p for p in extra if p]

    def plot_overview(self) -> Path | None:
        """``overview.png``: the loss and each term (log scale; train and dev in two panels), the dev
        WER, the learning rate, the gradient shares and the gradient alignment, in one figure."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        cols = self.columns()
        if "loss" not in cols:
            return None
        fig = Figure(figsize=(15, 7), dpi=100)
        FigureCanvasAgg(fig)
        axes = [fig.add_subplot(2, 3, i) for i in range(1, 7)]

        def series(col, split):
            return [(r["step"], r[col]) for r in self.rows if r.get("split") == split and _finite(r.get(col))]

        # the losses: train (lines) and dev (points) in panels of their own, one colour per term
        colours = {col: f"C{i}" for i, col in enumerate(("loss", *TERMS))}
        for ax, split, style, title in ((axes[0], "train", "-", "train losses (log scale)"),
                                        (axes[5], "dev", "o-", "dev losses (log scale)")):
            for col in ("loss", *TERMS):  # every registered loss term (justkit.losses.terms)
                pts = [(x, y) for x, y in series(col, split) if y > 0]
                if pts:
                    xs, ys = zip(*pts)
                    ax.plot(xs, ys, style, color=colours[col], markersize=3, label=col, lw=2 if col == "loss" else 1)
            if ax.lines:
                ax.set_yscale("log")
                ax.legend(fontsize=7, ncol=2)
            ax.set_title(title)
        ax = axes[1]
        pts = series("dev_wer", "dev")
        if pts:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, "o-k", markersize=3)
        ax.set_title("dev WER (%, greedy, mean over languages)")
        ax = axes[2]
        pts = series("lr", "train")
        if pts:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, "-")
        ax.set_title("learning rate")
        ax = axes[3]
        for col in (c for c in cols if c.startswith("gshare_")):
            pts = series(col, "train")
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, "-", label=col[len("gshare_"):])
        ax.set_ylim(0, 1)
        ax.set_title("share of the encoder gradient")
        if ax.lines:
            ax.legend(fontsize=7)
        ax = axes[4]
        for col in (c for c in cols if c.startswith("galign_")):
            pts = series(col, "train")
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, "-", label=col[len("galign_"):])
        ax.axhline(0.0, color="k", lw=0.8)
        ax.set_title("cos(term's encoder gradient, dev RNN-T gradient)")
        if ax.lines[1:]:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "not measured\n(train.grad_alignment_interval: 0)", ha="center", va="center",
                    transform=ax.transAxes, color="0.4")
        for ax in axes:
            ax.grid(True, alpha=0.3)
            ax.set_xlabel("step")
        fig.tight_layout()
        path = self.plot_dir / "overview.png"
        with atomic_open(path, "wb", encoding=None) as f:
            fig.savefig(f, format="png")
        return path

    def plot_dev_wer(self) -> Path | None:
        """``dev_wer.png``: greedy dev WER per language (thin) and their mean (thick)."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        cols = [c for c in self.columns() if c.startswith(DEV_WER + "_")]
        if DEV_WER not in self.columns():
            return None
        fig = Figure(figsize=(7, 4), dpi=100)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(1, 1, 1)
        for col in cols + [DEV_WER]:
            pts = [(r["step"], r[col]) for r in self.rows if r.get("split") == "dev" and _finite(r.get(col))]
            if pts:
                xs, ys = zip(*pts)
                main = col == DEV_WER
                ax.plot(xs, ys, "o-" if main else "-", lw=2.5 if main else 1, markersize=4,
                        label="mean" if main else col[len(DEV_WER) + 1:], color="k" if main else None)
        ax.set_xlabel("step")
        ax.set_ylabel("greedy WER (%)")
        ax.set_title("dev WER")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, ncol=2)
        fig.tight_layout()
        path = self.plot_dir / "dev_wer.png"
        with atomic_open(path, "wb", encoding=None) as f:
            fig.savefig(f, format="png")
        return path

    def plot_alignment(self) -> Path | None:
        """``grad_alignment.png``: each term's gradient cosine with the dev recognition gradient (top)
        and the first-order dev-loss change of its Adam-scaled update (bottom); None when not measured."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        names = [c[len("galign_"):] for c in self.columns() if c.startswith("galign_")]
        if not names:
            return None
        fig = Figure(figsize=(7, 6), dpi=100)
        FigureCanvasAgg(fig)
        top, bottom = fig.add_subplot(2, 1, 1), fig.add_subplot(2, 1, 2)
        for name in names:
            for ax, col in ((top, f"galign_{name}"), (bottom, f"gdev_{name}")):
                pts = [(r["step"], r[col]) for r in self.rows if r.get("split") == "train" and _finite(r.get(col))]
                if pts:
                    xs, ys = zip(*pts)
                    ax.plot(xs, ys, "-", label=name)
        top.set_ylabel("cosine with the dev need")
        top.set_title("gradient alignment with the dev RNN-T loss (shared encoder)")
        bottom.set_ylabel("first-order dev-loss change\nof its Adam update")
        bottom.set_xlabel("step")
        for ax in (top, bottom):
            ax.axhline(0.0, color="k", lw=0.8)
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=8)
        fig.tight_layout()
        path = self.plot_dir / "grad_alignment.png"
        with atomic_open(path, "wb", encoding=None) as f:
            fig.savefig(f, format="png")
        return path

    def plot_balance(self) -> Path | None:
        """``grad_balance.png``: each term's share of the shared-encoder gradient norm (top) and
        the norms themselves on a log scale (bottom); None when nothing was measured."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        cols = self.columns()
        names = [c[len("gshare_"):] for c in cols if c.startswith("gshare_")]
        if not names:
            return None
        fig = Figure(figsize=(7, 6), dpi=100)
        FigureCanvasAgg(fig)
        top, bottom = fig.add_subplot(2, 1, 1), fig.add_subplot(2, 1, 2)
        for name in names:
            for ax, col in ((top, f"gshare_{name}"), (bottom, f"gnorm_{name}")):
                pts = [(r["step"], r[col]) for r in self.rows
                       if r.get("split") == "train" and _finite(r.get(col)) and (ax is top or r[col] > 0)]
                if pts:
                    xs, ys = zip(*pts)
                    ax.plot(xs, ys, "-", label=name)
        top.set_ylabel("share of encoder grad norm")
        top.set_ylim(0, 1)
        top.set_title("gradient balance on the shared encoder")
        bottom.set_ylabel("grad norm (weighted term)")
        bottom.set_yscale("log")
        bottom.set_xlabel("step")
        for ax in (top, bottom):
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=8)
        fig.tight_layout()
        path = self.plot_dir / "grad_balance.png"
        with atomic_open(path, "wb", encoding=None) as f:
            fig.savefig(f, format="png")
        return path


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def _num(v: str):
    if v in ("train", "dev"):
        return v
    try:
        f = float(v)
    except ValueError:
        return v
    return int(f) if f.is_integer() and "." not in v and "e" not in v.lower() else f


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.8g}"
    return str(v)

