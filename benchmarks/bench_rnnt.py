"""Benchmark of the RNN-T loss paths: joint + loss, forward and backward, time and peak memory.

Usage: tools/venv/bin/python benchmarks/bench_rnnt.py [--sizes 8,200,40,256 ...] [--reps 3]
           [--backends torchaudio numba chunked pruned] [--joint_dim 512] [--device cpu|cuda]
           [--json results.json]

Each case starts from encoder outputs [B, T, J] and prediction-network outputs [B, U+1, J]
(J = --joint_dim) and times what a training step does with them: the joint network and the
loss, forward and backward, gradients reaching the joint's parameters and both inputs.

- torchaudio: joint on [B, T, U+1] -> logits [B, T, U+1, V] -> torchaudio's rnnt_loss.
- numba:      the same logits -> justkit's numba loss (gradient written in place).
- chunked:    justkit's memory-lean full loss: joint + numba loss one utterance at a time,
              the joint recomputed in backward (model.rnnt_loss.chunk_utts: 1).
- pruned:     justkit's pruned RNN-T (model.rnnt_loss.type: pruned, s_range 5): the simple
              loss from the projections to the vocabulary, the bounds, the joint on
              [B, T, 5] only, the pruned lattice.

Each (size, backend) runs in a fresh subprocess. Numba compilation is excluded (a tiny case
first, then one pass at full size). Time: the best of --reps passes (this machine is shared:
ratios in one run hold, absolute times less). Memory on CPU: the peak resident set during
one pass minus the resident set just before it (inputs already allocated; Linux VmHWM reset
through /proc/self/clear_refs, glibc's mmap threshold at 64 KiB so that freed buffers leave
the resident set). On CUDA: torch's peak allocated bytes minus those before the pass. A case
whose [B, T, U+1, V] logits (4 bytes each) would not fit in --max_gb is not run (n/a).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_SIZES = ["8,200,40,256", "16,300,60,500", "8,500,100,1024", "32,375,70,1024", "32,375,70,16384"]
BACKENDS = ("torchaudio", "numba", "chunked", "pruned")
FULL = ("torchaudio", "numba")  # the ones that build the whole [B, T, U+1, V] logits


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _child(size: str, backend: str, reps: int, device: str, joint_dim: int, s_range: int) -> dict:
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from justkit.losses.rnnt import rnnt_loss
    from justkit.losses.rnnt_pruned import chunked_rnnt_costs, pruned_rnnt_nll
    from justkit.nn.joint import Joint, JointConfig

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    n_batch, n_time, n_u, n_vocab = (int(x) for x in size.split(","))
    gen = torch.Generator().manual_seed(0)

    def make(b: int, t: int, u: int, v: int):
        torch.manual_seed(0)
        joint = Joint(joint_dim, joint_dim, v, JointConfig(joint_dim=joint_dim)).to(device)
        am_proj = torch.nn.Linear(joint_dim, v).to(device)
        lm_proj = torch.nn.Linear(joint_dim, v).to(device)
        enc = torch.randn(b, t, joint_dim, generator=gen).to(device).requires_grad_(True)
        pred = torch.randn(b, u + 1, joint_dim, generator=gen).to(device).requires_grad_(True)
        targets = torch.randint(1, v, (b, u), generator=gen).to(device)
        t_lens = torch.randint(t // 2, t + 1, (b,), generator=gen).to(device)
        u_lens = torch.randint(u // 2, u + 1, (b,), generator=gen).to(device)
        t_lens[0], u_lens[0] = t, u
        return joint, am_proj, lm_proj, enc, pred, targets, t_lens, u_lens

    def step(args) -> None:
        joint, am_proj, lm_proj, enc, pred, y, tl, ul = args
        if backend in FULL:
            logits = joint(enc[:, :, None], pred[:, None])
            loss = rnnt_loss(logits, y, tl, ul, reduction="sum", backend=backend)
        elif backend == "chunked":
            loss = chunked_rnnt_costs(enc, pred, joint, y, tl, ul, chunk=1).sum()
        else:
            simple, pruned = pruned_rnnt_nll(enc, pred, joint, am_proj, lm_proj, y, tl, ul, s_range)
            loss = 0.5 * simple.sum() + pruned.sum()
        loss.backward()
        for p in (*joint.parameters(), *am_proj.parameters(), *lm_proj.parameters(), enc, pred):
            p.grad = None
        if device == "cuda":
            torch.cuda.synchronize()
        return float(loss)

    step(make(2, 5, 3, 7))  # compile / load the numba cache
    args = make(n_batch, n_time, n_u, n_vocab)
    value = step(args)  # first touch at full size
    if device == "cuda":
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step(args)
        peak_mb = (torch.cuda.max_memory_allocated() - base) / 2**20
        how = "torch.cuda.max_memory_allocated over one pass"
    else:
        base = _status_kb("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        step(args)
        peak_mb = (_status_kb("VmHWM") - base) / 1024
        how = "VmHWM - VmRSS before one pass (fresh process)"
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        step(args)
        times.append(time.perf_counter() - start)
    return {"seconds": min(times), "peak_mb": peak_mb, "loss": value, "memory_measured_as": how}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=DEFAULT_SIZES, help="B,T,U,V tuples")
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    parser.add_argument("--reps", type=int, default=3, help="timed passes (the best is reported)")
    parser.add_argument("--joint_dim", type=int, default=512, help="encoder/predictor/joint width")
    parser.add_argument("--s_range", type=int, default=5, help="pruned: label positions per frame")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each case")
    parser.add_argument("--max_gb", type=float, default=16.0, help="skip full-logit cases larger than this")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--json", default="", help="also write one record per case here")
    parser.add_argument("--child", nargs=2, metavar=("SIZE", "BACKEND"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args.child[0], args.child[1], args.reps, args.device, args.joint_dim, args.s_range)))
        return

    print(f"device={args.device} threads={args.threads} joint_dim={args.joint_dim} s_range={args.s_range} "
          f"best of {args.reps}; joint + loss, forward + backward; numba compile excluded")
    cols = " | ".join(f"{b:>10} s {b:>10} MB" for b in args.backends)
    print(f"{'B,T,U,V':>16} | {cols}")
    records = []
    for size in args.sizes:
        b, t, u, v = (int(x) for x in size.split(","))
        logits_gb = b * t * (u + 1) * v * 4 / 2**30
        row = {}
        for backend in args.backends:
            rec = {"backend": backend, "B": b, "T": t, "U": u, "V": v, "joint_dim": args.joint_dim}
            if backend in FULL and 2.2 * logits_gb > args.max_gb:
                rec.update(seconds=None, peak_mb=None, note=f"not run: logits alone {logits_gb:.1f} GB")
            else:
                cmd = [sys.executable, __file__, "--child", size, backend, "--reps", str(args.reps), "--device",
                       args.device, "--joint_dim", str(args.joint_dim), "--s_range", str(args.s_range)]
                env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", BENCH_THREADS=str(args.threads),
                           OMP_NUM_THREADS=str(args.threads))
                out = subprocess.run(cmd, capture_output=True, text=True, env=env)
                if out.returncode != 0:
                    rec.update(seconds=None, peak_mb=None, note=f"failed: {out.stderr.strip().splitlines()[-1][:120]}")
                else:
                    rec.update(json.loads(out.stdout.strip().splitlines()[-1]))
            records.append(rec)
            row[backend] = rec
        cells = []
        for backend in args.backends:
            r = row[backend]
            cells.append("n/a".rjust(12) + "n/a".rjust(14) if r["seconds"] is None
                         else f"{r['seconds']:>12.3f} {r['peak_mb']:>13.1f}")
        print(f"{size:>16} | " + " | ".join(cells))
        ta = row.get("torchaudio")
        if ta and ta["seconds"]:
            ratios = [f"{k}: {ta['seconds'] / r['seconds']:.1f}x faster, {ta['peak_mb'] / max(r['peak_mb'], 1e-3):.1f}x less memory"
                      for k, r in row.items() if k != "torchaudio" and r["seconds"]]
            print(f"{'':>16}   vs torchaudio: " + "; ".join(ratios))
        if args.json:  # after every size: a long run stopped early keeps what it measured
            Path(args.json).write_text(json.dumps(records, indent=1) + "\n")
    if args.json:
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
