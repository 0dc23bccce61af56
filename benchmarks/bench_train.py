"""Benchmark: training throughput of the real trainer step (frames/s, audio hours per training hour), padding, MFU.

    tools/venv/bin/python benchmarks/bench_train.py                        # mini + paper (short batch), CPU
    tools/venv/bin/python benchmarks/bench_train.py --configs mini --steps 20 --train egs/mls/dump/packed/train.jsonl
    tools/venv/bin/python benchmarks/bench_train.py --device cuda --configs paper --paper-max-frames 48000

One timed step = Trainer._micro_step (forward + backward under the configured AMP) +
Trainer._apply_update (clip, non-finite check, Adam, schedule) on one batch of the real
loader (accum_grad forced to 1). Frames are real (unpadded) 10 ms input frames, so
"audio h / train h" = frames/s x 0.01. Model FLOPs per step are counted from the architecture
(justkit.models.flops.training_flops over the batch's utterances; torch's FlopCounterMode
over-counts depthwise-conv backward 512x and skips the CPU attention kernel); MFU = achieved
FLOP/s / --peak-tflops (CUDA only; default looked up from the GPU name). Each config runs in a fresh process.
Without --train, a synthetic packed set (random fbank, lengths uniform in --lengths) is used.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Dense bf16 tensor-core peaks (TFLOP/s) from the vendors' data sheets, for the MFU column.
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "A10": 125.0, "L4": 121.0, "V100": 125.0}


def synthetic_packed(d: Path, n: int, lengths: tuple[int, int], vocab: int, seed: int = 0,
                     labelled: float = 1.0) -> Path:
    import kaldiio
    import numpy as np

    rng = np.random.default_rng(seed)
    mats = {f"b{i:05d}": rng.standard_normal((int(rng.integers(lengths[0], lengths[1] + 1)), 80)).astype("float32")
            for i in range(n)}
    kaldiio.save_ark(str(d / "feats.ark"), mats, scp=str(d / "feats.scp"))
    scp = dict(line.split(None, 1) for line in (d / "feats.scp").read_text().splitlines())
    langs = ["en", "de", "nl", "es", "fr", "pt", "it", "pl"]
    with open(d / "packed.jsonl", "w", encoding="utf-8") as f:
        for i, (u, m) in enumerate(mats.items()):
            n_tok = max(2, m.shape[0] // 30)  # ~3 word pieces per second
            f.write(json.dumps({"utt": u, "feats": scp[u].strip(), "num_frames": int(m.shape[0]),
                                "tokens": rng.integers(2, vocab, size=n_tok).tolist(), "lang": langs[i % 8],
                                "labelled": i % 10 < round(labelled * 10), "text": ""}) + "\n")
    return d / "packed.jsonl"


def run_one(name: str, config: str, args: argparse.Namespace, max_frames: int, lengths: tuple[int, int],
            q: mp.Queue) -> None:
    import torch

    from justkit.config import load_yaml
    from justkit.train.distributed import init_distributed
    from justkit.train.asr import ASRTask
    from justkit.train.trainer import Trainer

    if args.threads:
        torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="bench_train_"))
    vocab = 256
    train = Path(args.train) if args.train else synthetic_packed(tmp, args.num_utts, lengths, vocab,
                                                                 labelled=args.labelled)
    cfg = load_yaml(ROOT / config)
    cfg["model"]["vocab_size"] = vocab
    cfg["data"]["max_frames"] = max_frames
    cfg["data"]["num_workers"] = 0
    cfg["train"].update(accum_grad=1, max_steps=10**9, max_epochs=0, plots=False, init="",
                        num_threads=args.threads or 0)
    cfg["train"]["grad_balance_interval"] = 0  # measured separately; not part of a step's cost
    cfg["paths"] = {"train": str(train)}
    dist = init_distributed(args.device)
    t = Trainer(ASRTask(cfg), tmp / "exp", dist)
    t.model.unmasked_all_rows = args.unmasked_all_rows  # JUST's unmasked pass over every row (before 2026-12)
    t.model.train()
    n_params = sum(p.numel() for p in t.model.parameters())
    padding = t.train_loader.padding_fraction()

    def batches():
        while True:
            yield from t.train_loader

    it = batches()
    sync = torch.cuda.synchronize if t.device.type == "cuda" else (lambda: None)

    def one_step():
        b = next(it)
        _, finite, frames = t._micro_step(b, 1.0, sync=True)
        t._apply_update(finite)
        return frames, len(b["utts"])

    for _ in range(args.warmup):
        one_step()
    from justkit.models.flops import training_flops

    ds = t.train_loader.dataset
    flops_per_frame = (sum(training_flops(t.model.cfg, e["num_frames"], len(e["tokens"]), bool(e["labelled"]))
                           for e in ds.entries) / max(sum(e["num_frames"] for e in ds.entries), 1))
    sync()
    frames = utts = 0
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(args.steps):
        f, u = one_step()
        frames += f
        utts += u
    sync()
    dt = time.perf_counter() - t0
    cpu = time.process_time() - c0  # this process's CPU time: steadier than wall time on a shared machine
    fps = frames / dt
    mfu = None
    if t.device.type == "cuda":
        peak = args.peak_tflops or next((v for k, v in PEAK_TFLOPS.items() if k in torch.cuda.get_device_name()), 0)
        mfu = fps * flops_per_frame / (peak * 1e12) if peak else None
    peak_gpu = torch.cuda.max_memory_allocated() / 2**30 if t.device.type == "cuda" else None
    q.put({
        "name": name, "peak_gpu_GiB": peak_gpu, "flops_per_step": fps * flops_per_frame * dt / args.steps, "params_M": n_params / 1e6, "max_frames": max_frames, "steps": args.steps,
        "s_per_step": dt / args.steps, "cpu_s_per_step": cpu / args.steps, "utts_per_step": utts / args.steps, "frames_per_s": fps,
        "audio_h_per_h": fps * 0.01, "tflops_per_s": fps * flops_per_frame / 1e12, "mfu": mfu,
        "padding": padding, "peak_rss_GiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "device": torch.cuda.get_device_name() if t.device.type == "cuda" else f"cpu x{torch.get_num_threads()} threads",
    })


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default="mini,paper", help="comma list of mini, paper")
    p.add_argument("--mode", default="just", help="config family: just, baseline, pretrain")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--steps", type=int, default=10, help="timed steps (paper: --paper-steps)")
    p.add_argument("--paper-steps", type=int, default=2)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 = what path.sh sets; 0: torch default)")
    p.add_argument("--train", default="", help="a real packed jsonl instead of synthetic data")
    p.add_argument("--num-utts", type=int, default=200)
    p.add_argument("--mini-max-frames", type=int, default=0, help="default: the config's data.max_frames")
    p.add_argument("--paper-max-frames", type=int, default=800, help="short batch for a CPU smoke of the paper size")
    p.add_argument("--mini-lengths", default="150:350", help="synthetic lengths lo:hi (frames; mini-MLS-like)")
    p.add_argument("--paper-lengths", default="300:400")
    p.add_argument("--peak-tflops", type=float, default=0.0)
    p.add_argument("--labelled", type=float, default=1.0, help="share of the synthetic utterances that are labelled")
    p.add_argument("--unmasked-all-rows", action="store_true",
                   help="JUST's unmasked (RNN-T) pass over every row, as before 2026-12 (default: labelled rows only)")
    args = p.parse_args()

    from justkit.config import load_yaml

    rows = []
    ctx = mp.get_context("spawn")
    for name in args.configs.split(","):
        config = f"egs/mls/conf/train_{args.mode}_{name}.yaml"
        mf = getattr(args, f"{name}_max_frames") or load_yaml(ROOT / config)["data"]["max_frames"]
        lo, hi = (int(x) for x in getattr(args, f"{name}_lengths").split(":"))
        a = argparse.Namespace(**vars(args))
        if name == "paper":
            a.steps = args.paper_steps
            a.warmup = min(args.warmup, 1)
        q = ctx.Queue()
        proc = ctx.Process(target=run_one, args=(name, config, a, mf, (lo, hi), q))
        proc.start()
        proc.join()
        if proc.exitcode != 0:
            print(f"{name}: failed (exit code {proc.exitcode})", file=sys.stderr)
            continue
        rows.append(q.get())

    print(f"\nbench_train: mode {args.mode}, device {rows[0]['device'] if rows else args.device}, "
          f"data {'synthetic' if not args.train else args.train} ({args.labelled:.0%} labelled), unmasked pass over "
          f"{'every row' if args.unmasked_all_rows else 'the labelled rows'}; one step = one batch fwd+bwd+Adam\n")
    hdr = ("config", "params M", "max_frames", "utts/step", "s/step", "CPU s/step", "frames/s", "audio h/h",
           "TFLOP/s", "MFU", "padding", "peak RSS GiB")
    print("| " + " | ".join(hdr) + " |")
    print("|" + "---|" * len(hdr))
    for r in rows:
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "n/a"
        print(f"| {r['name']} | {r['params_M']:.1f} | {r['max_frames']} | {r['utts_per_step']:.1f} | "
              f"{r['s_per_step']:.2f} | {r['cpu_s_per_step']:.2f} | {r['frames_per_s']:.0f} | {r['audio_h_per_h']:.1f} | "
              f"{r['tflops_per_s']:.3f} | {mfu} | {100 * r['padding']:.1f}% | {r['peak_rss_GiB']:.2f} |")


if __name__ == "__main__":
    main()
