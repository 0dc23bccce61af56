"""Stage 3's feature storage formats side by side: bytes per audio hour, read speed, error.

    tools/venv/bin/python benchmarks/bench_features.py [--feats egs/mls/dump/fbank/train] [--repeats 3]
        [--json out.json]

Takes the float32 features stage 3 wrote (feats.scp), writes them again in every format of
``fbank: storage`` (justkit.frontend.fbank.STORAGE_FORMATS) with kaldiio, as stage 3 does, then
reads every matrix back through its scp offset with kaldiio.load_mat, as the data loader does.

Columns: MB per hour of audio (10 ms frames), x real time of reading on one core (seconds of
audio / seconds spent reading, best of --repeats, page cache warm), the largest absolute and
the mean absolute difference from the float32 features (log-mel units).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import kaldiio
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from justkit.datadir.tables import read_table  # noqa: E402
from justkit.frontend.fbank import STORAGE_FORMATS  # noqa: E402

FRAME_S = 0.01


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--feats", default="egs/mls/dump/fbank/train", help="a stage-3 output dir (feats.scp)")
    ap.add_argument("--repeats", type=int, default=3, help="timed read passes (the best is reported)")
    ap.add_argument("--json", default="", help="also write one record per format here")
    a = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    scp = Path(a.feats) / "feats.scp"
    if not scp.is_file():
        print(f"{scp}: not found; run the recipe's stage 3 first (cd egs/mls && ./run.sh --stop_stage 3)",
              file=sys.stderr)
        return 2
    root = Path(a.feats).resolve().parents[2]  # scp paths are relative to the recipe dir
    exact = {u: kaldiio.load_mat(str(root / v) if not Path(v.split(":")[0]).is_absolute() else v)
             for u, v in read_table(scp).items()}
    hours = sum(m.shape[0] for m in exact.values()) * FRAME_S / 3600
    print(f"{len(exact)} utterances, {hours:.3f} h of audio, dim {next(iter(exact.values())).shape[1]}; "
          f"reading: one core, best of {a.repeats}")
    print(f"{'storage':>18} | {'MB per hour':>11} | {'vs float32':>10} | {'read x real time':>16} | "
          f"{'max abs err':>11} | {'mean abs err':>12}")
    records, base_mb = [], None
    with tempfile.TemporaryDirectory() as tmp:
        for name, method in STORAGE_FORMATS.items():
            ark = Path(tmp) / f"{name}.ark"
            offsets = {}
            with open(ark, "wb") as f:
                for u, m in exact.items():
                    offsets[u] = f"{ark}:{f.tell() + len(u.encode()) + 1}"
                    kaldiio.save_ark(f, {u: m}, compression_method=method)
            mb_h = ark.stat().st_size / 1e6 / hours
            base_mb = base_mb or mb_h
            best = float("inf")
            for _ in range(a.repeats):
                t0 = time.perf_counter()
                got = {u: kaldiio.load_mat(o) for u, o in offsets.items()}
                best = min(best, time.perf_counter() - t0)
            err = np.concatenate([np.abs(got[u] - exact[u]).ravel() for u in exact])
            rec = {"storage": name, "mb_per_hour": mb_h, "ratio_to_float32": mb_h / base_mb,
                   "read_x_real_time": hours * 3600 / best, "max_abs_err": float(err.max()),
                   "mean_abs_err": float(err.mean()), "utterances": len(exact), "hours": hours}
            records.append(rec)
            print(f"{name:>18} | {mb_h:11.1f} | {mb_h / base_mb:10.3f} | {rec['read_x_real_time']:16.0f} | "
                  f"{rec['max_abs_err']:11.4f} | {rec['mean_abs_err']:12.5f}")
    if a.json:
        Path(a.json).write_text(json.dumps(records, indent=1) + "\n")
        print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
