"""Benchmark of the data-dir utilities and the job runner: wall time on a synthetic data dir.

Usage: tools/venv/bin/python benchmarks/bench_datadir_utils.py [--utts 100000] [--jobs 100] [--max_jobs_run 2]

Prints one table: validate_data_dir / fix_data_dir (library calls), split_scp.py,
subset_data_dir.py and combine_data.py (CLIs, including Python start-up) on a data dir
of --utts utterances, and utils/run.py running --jobs trivial jobs (`true`) next to a
plain loop of `bash -c true`, so the per-job overhead of the runner can be read off.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from justkit.datadir.validate import fix_data_dir, validate_data_dir  # noqa: E402

LANGS = ("en", "de", "nl", "es", "fr", "pt", "it", "pl")


def make_dir(d: Path, n: int, prefix: str = "") -> None:
    d.mkdir(parents=True)
    ids = sorted(f"{prefix}spk{i // 50:06d}-{i:08d}" for i in range(n))
    tables = {
        "wav.scp": (f"{u} /corpus/audio/{u}.opus" for u in ids),
        "text": (f"{u} some words of a transcript for utterance {u}" for u in ids),
        "utt2spk": (f"{u} {u.split('-')[0]}" for u in ids),
        "utt2lang": (f"{u} {LANGS[i % 8]}" for i, u in enumerate(ids)),
        "utt2dur": (f"{u} {10 + i % 7:.2f}" for i, u in enumerate(ids)),
    }
    for name, lines in tables.items():
        (d / name).write_text("".join(line + "\n" for line in lines))
    spk: dict[str, list[str]] = {}
    for u in ids:
        spk.setdefault(u.split("-")[0], []).append(u)
    (d / "spk2utt").write_text("".join(f"{s} {' '.join(us)}\n" for s, us in spk.items()))


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def cli(*args) -> None:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    subprocess.run([str(a) for a in args], check=True, env=env, capture_output=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--utts", type=int, default=100_000)
    p.add_argument("--jobs", type=int, default=100)
    p.add_argument("--max_jobs_run", type=int, default=2)
    a = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        make_dir(t / "d", a.utts)
        make_dir(t / "d2", a.utts // 10, prefix="x")
        rows.append(("validate_data_dir", a.utts, timed(lambda: validate_data_dir(t / "d"))))
        # Make the dir need fixing: drop every 10th text line.
        lines = (t / "d" / "text").read_text().splitlines(keepends=True)
        (t / "d" / "text").write_text("".join(l for i, l in enumerate(lines) if i % 10))
        rows.append(("fix_data_dir (10% dropped)", a.utts, timed(lambda: fix_data_dir(t / "d"))))
        outs = [t / f"wav.{j}.scp" for j in range(1, 9)]
        rows.append(("split_scp.py (8 parts)", a.utts, timed(lambda: cli(ROOT / "utils/split_scp.py", t / "d/wav.scp", *outs))))
        rows.append(("split_scp.py --utt2spk (8 parts)", a.utts, timed(
            lambda: cli(ROOT / "utils/split_scp.py", "--utt2spk", t / "d/utt2spk", t / "d/wav.scp", *outs))))
        rows.append(("subset_data_dir.py --random 10%", a.utts, timed(
            lambda: cli(ROOT / "utils/subset_data_dir.py", "--random", a.utts // 10, t / "d", t / "s"))))
        rows.append(("combine_data.py (2 dirs)", a.utts * 9 // 10 + a.utts // 10, timed(
            lambda: cli(ROOT / "utils/combine_data.py", t / "c", t / "d", t / "d2"))))
        rows.append((f"run.py JOB=1:{a.jobs} true (max {a.max_jobs_run})", a.jobs, timed(
            lambda: cli(sys.executable, ROOT / "utils/run.py", f"--max_jobs_run={a.max_jobs_run}",
                        f"JOB=1:{a.jobs}", t / "log/x.JOB.log", "true"))))
        rows.append((f"bash -c true x {a.jobs} (sequential loop)", a.jobs, timed(
            lambda: [subprocess.run(["bash", "-c", "true"], check=True) for _ in range(a.jobs)])))
    w = max(len(r[0]) for r in rows)
    print(f"{'operation':<{w}}  {'items':>9}  {'seconds':>8}  {'us/item':>9}")
    for name, n, s in rows:
        print(f"{name:<{w}}  {n:>9}  {s:>8.2f}  {1e6 * s / n:>9.1f}")


if __name__ == "__main__":
    main()
