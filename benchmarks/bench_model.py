"""Benchmark: JUST model forward+backward time and peak memory per size and mode (prints a table).

    tools/venv/bin/python benchmarks/bench_model.py                       # tiny, mini; paper at B=1
    tools/venv/bin/python benchmarks/bench_model.py --sizes mini --batch 8 --seconds 10 --device cpu

Each (size, mode) runs in a fresh process, so "peak MiB" is that process's peak resident
memory above the interpreter + torch baseline (CPU) or torch's peak allocated memory (CUDA).
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _run(size: str, mode: str, batch: int, seconds: float, vocab: int, device: str, threads: int,
         repeats: int, q: mp.Queue) -> None:
    import torch

    from justkit.config import load_yaml
    from justkit.losses.terms import LossConfig
    from justkit.models.just import JUSTConfig, JUSTModel

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    base = _rss_mib()
    y = load_yaml(ROOT / f"egs/mls/conf/model/{size}.yaml")
    d = y["model"]
    d.update(mode=mode, vocab_size=vocab)
    model = JUSTModel(JUSTConfig.from_dict(d), LossConfig.from_dict(y.get("loss"))).to(device).train()
    n_params = sum(p.numel() for p in model.parameters())
    frames = int(seconds * 100)
    u = max(2, int(seconds * 3))  # ~3 word pieces per second
    feat_lens = torch.tensor([frames - (i * frames) // (4 * batch) for i in range(batch)])
    b = {
        "feats": torch.randn(batch, frames, 80, device=device),
        "feat_lens": feat_lens.to(device),
        "tokens": torch.randint(1, vocab, (batch, u), device=device),
        "token_lens": torch.full((batch,), u, device=device),
        "labelled": torch.ones(batch, dtype=torch.bool, device=device),
    }
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(repeats + 1):  # first run is warm-up
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = model(b, step=i)
        out["loss"].backward()
        model.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else _rss_mib() - base
    q.put((n_params, statistics.median(times), peak))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="tiny,mini,paper")
    ap.add_argument("--modes", default="supervised,pretrain,just")
    ap.add_argument("--batch", type=int, default=4, help="utterances per batch (paper size: 1)")
    ap.add_argument("--seconds", type=float, default=8.0, help="longest utterance (s); others shorter")
    ap.add_argument("--paper-seconds", type=float, default=4.0)
    ap.add_argument("--vocab", type=int, default=256)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    ctx = mp.get_context("spawn")
    print(f"device={args.device} threads={args.threads} vocab={args.vocab} (median of {args.repeats} after 1 warm-up)")
    print(f"| size | mode | params | batch | frames | fwd+bwd s | frames/s | peak MiB |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for size in args.sizes.split(","):
        batch = 1 if size == "paper" and args.device == "cpu" else args.batch
        seconds = args.paper_seconds if size == "paper" else args.seconds
        for mode in args.modes.split(","):
            q = ctx.Queue()
            p = ctx.Process(target=_run, args=(size, mode, batch, seconds, args.vocab, args.device,
                                               args.threads, args.repeats, q))
            p.start()
            p.join()
            if p.exitcode != 0:
                print(f"| {size} | {mode} | failed (exit {p.exitcode}) | | | | | |")
                continue
            n, t, peak = q.get()
            frames = int(seconds * 100) * batch
            print(f"| {size} | {mode} | {n / 1e6:.2f}M | {batch} | {int(seconds * 100)} | {t:.3f} | {frames / t:.0f} | {peak:.0f} |",
                  flush=True)


if __name__ == "__main__":
    main()
