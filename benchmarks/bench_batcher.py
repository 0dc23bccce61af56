"""Padding and batches per epoch of the bucketed frame-budget sampler vs random batching.

    tools/venv/bin/python benchmarks/bench_batcher.py [--utt2num_frames egs/mls/dump/fbank/train/utt2num_frames]

Length distributions: the given utt2num_frames files (default: the mini corpus's, when stage 3
has run), a synthetic MLS-like one (segments of 10-20 s, uniform) and a broader
LibriSpeech-like one (log-normal, 1-35 s). "random" cuts batches greedily in random order
under the same padded budget; "sorted" cuts them in length order (the padding floor).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from justkit.datadir.tables import read_table
from justkit.data.sampler import BucketBatchSampler, greedy_batches, padding_fraction

MINI = Path(__file__).resolve().parents[1] / "egs/mls/dump/fbank/train/utt2num_frames"


def distributions(files, n, seed=0):
    rng = np.random.default_rng(seed)
    out = {}
    for f in files:
        if Path(f).is_file():
            out[f"file:{Path(f).parent.name}"] = np.array([int(v) for v in read_table(f).values()])
    out["mls-like 10-20s"] = rng.integers(1000, 2001, size=n)
    out["librispeech-like 1-35s"] = np.clip(rng.lognormal(np.log(1200), 0.5, size=n), 100, 3500).astype(int)
    return out


def row(name, mf, method, batches, lengths, secs=None):
    sizes = [len(b) for b in batches]
    t = f"{secs * 1000:8.1f}" if secs is not None else " " * 8
    print(f"| {name:24s} | {mf:>7d} | {method:11s} | {len(batches):>8d} | {np.mean(sizes):>7.1f} | "
          f"{100 * padding_fraction(batches, lengths):>7.2f} | {t} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--utt2num_frames", nargs="*", default=[str(MINI)])
    p.add_argument("--num_utts", type=int, default=20000, help="size of the synthetic sets")
    p.add_argument("--max_frames", type=int, nargs="*", default=[5000, 20000, 80000])
    p.add_argument("--buckets", type=int, nargs="*", default=[5, 10, 30])
    args = p.parse_args()
    print("| lengths                  | max_frm | method      | batches  | utt/bat | pad %   | plan ms  |")
    print("|---" * 7 + "|")
    for name, lengths in distributions(args.utt2num_frames, args.num_utts).items():
        n = len(lengths)
        for mf_eff in args.max_frames:
            fits = lengths[lengths <= mf_eff]  # the sampler skips longer ones; compare on the same set
            order = np.random.default_rng(1).permutation(np.nonzero(lengths <= mf_eff)[0])
            row(f"{name} (n={n})", mf_eff, "random", greedy_batches(order, lengths, mf_eff), lengths)
            for b in args.buckets:
                t0 = time.perf_counter()
                s = BucketBatchSampler(lengths, ["en"] * n, max_frames=mf_eff, num_buckets=b, seed=0)
                batches = s.epoch_batches(0)
                row(f"{name} (n={n})", mf_eff, f"bucket x{b}", batches, lengths, time.perf_counter() - t0)
            sorted_order = [i for i in np.argsort(lengths, kind="stable") if lengths[i] <= mf_eff]
            row(f"{name} (n={n})", mf_eff, "sorted", greedy_batches(sorted_order, lengths, mf_eff), lengths)
            if len(fits) < n:
                print(f"|   ({n - len(fits)} utterances over {mf_eff} frames skipped) |||||||")


if __name__ == "__main__":
    main()
