"""Benchmark of the RNN-T loss backends (torchaudio vs justkit numba): forward+backward time and peak memory.

Usage: tools/venv/bin/python benchmarks/bench_rnnt.py [--sizes 4,100,20,64 8,200,40,256] [--reps 3] [--device cpu|cuda]

Each (size, backend) runs in a fresh subprocess. Numba compilation is excluded: the
child first runs the loss on a tiny case (compiles or loads the cache) and once at full
size (first-touch), then times ``--reps`` forward+backward passes (median reported).
Memory on CPU is the peak resident set during one timed forward+backward minus the
resident set just before it (the logits and targets already allocated): Linux VmHWM,
reset through /proc/self/clear_refs, with glibc's mmap threshold fixed at 64 KiB
so that freed buffers leave the resident set. On CUDA it is torch's peak allocated bytes minus
the bytes allocated before the pass (numba.cuda allocations made through torch tensors
are counted, since the kernels only see torch-allocated memory).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_SIZES = ["4,100,20,64", "8,200,40,256", "16,300,60,500"]
BACKENDS = ("torchaudio", "numba")


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _child(size: str, backend: str, reps: int, device: str) -> dict:
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from justkit.losses.rnnt import rnnt_loss

    n_batch, n_time, n_u, n_vocab = (int(x) for x in size.split(","))
    gen = torch.Generator().manual_seed(0)

    def make(b: int, t: int, u: int, v: int):
        logits = torch.randn(b, t, u + 1, v, generator=gen).to(device).requires_grad_(True)
        targets = torch.randint(1, v, (b, u), generator=gen, dtype=torch.int32).to(device)
        logit_lens = torch.randint(t // 2, t + 1, (b,), generator=gen, dtype=torch.int32).to(device)
        target_lens = torch.randint(u // 2, u + 1, (b,), generator=gen, dtype=torch.int32).to(device)
        logit_lens[0], target_lens[0] = t, u
        return logits, targets, logit_lens, target_lens

    def step(args) -> None:
        loss = rnnt_loss(*args, reduction="mean", backend=backend)
        loss.backward()
        args[0].grad = None
        if device == "cuda":
            torch.cuda.synchronize()

    step(make(2, 5, 3, 7))  # compile / load the numba cache
    args = make(n_batch, n_time, n_u, n_vocab)
    step(args)  # first touch at full size
    if device == "cuda":
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step(args)
        peak_mb = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        base = _status_kb("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        step(args)
        peak_mb = (_status_kb("VmHWM") - base) / 1024
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        step(args)
        times.append(time.perf_counter() - start)
    return {"time_s": statistics.median(times), "peak_mb": peak_mb}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=DEFAULT_SIZES, help="B,T,U,V tuples")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--child", nargs=2, metavar=("SIZE", "BACKEND"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args.child[0], args.child[1], args.reps, args.device)))
        return

    import torch

    print(f"device={args.device} torch_threads={torch.get_num_threads()} reps={args.reps} (median; numba compile excluded)")
    header = f"{'B,T,U,V':>16} | {'torchaudio s':>12} {'numba s':>9} {'ratio':>6} | {'torchaudio MB':>13} {'numba MB':>9} {'ratio':>6}"
    print(header)
    print("-" * len(header))
    for size in args.sizes:
        res = {}
        for backend in BACKENDS:
            cmd = [sys.executable, __file__, "--child", size, backend, "--reps", str(args.reps), "--device", args.device]
            # a fixed mmap threshold makes glibc return freed buffers to the OS, so RSS follows allocations
            env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
            out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout
            res[backend] = json.loads(out.strip().splitlines()[-1])
        ta, nb = res["torchaudio"], res["numba"]
        print(
            f"{size:>16} | {ta['time_s']:>12.4f} {nb['time_s']:>9.4f} {nb['time_s'] / ta['time_s']:>6.2f} | "
            f"{ta['peak_mb']:>13.1f} {nb['peak_mb']:>9.1f} {nb['peak_mb'] / max(ta['peak_mb'], 1e-9):>6.2f}"
        )
    print("ratio = numba / torchaudio (lower is better for numba)")


if __name__ == "__main__":
    main()
