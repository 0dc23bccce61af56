"""Benchmark: peak memory of checkpoint averaging (stage 7), streamed vs all checkpoints at once.

    tools/venv/bin/python benchmarks/bench_average.py                       # 20M parameters, 5 checkpoints
    tools/venv/bin/python benchmarks/bench_average.py --params 5e6 --num 10 --json out.json
    tools/venv/bin/python benchmarks/bench_average.py --exp egs/mls/exp/train_just   # a trained experiment's

Writes --num checkpoints of a model of --params fp32 parameters with its Adam state (exp_avg,
exp_avg_sq: a training checkpoint is three times its weights), then averages them in a fresh
process per method and reads that process's peak RSS (VmHWM) less its RSS before averaging:

- ``all_at_once``: every checkpoint loaded whole (optimizer included), then
  ``average_state_dicts`` (float64 sums): what stage 7 did before it was streamed;
- ``streamed``: ``average_checkpoints``: one checkpoint mapped at a time, only its weights read.

Memory is linear in the parameter count, so the bytes per parameter measured here project to any
model; the table projects the paper's 595M-parameter model.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PAPER_PARAMS = 595e6


def rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def write_checkpoints(d: Path, params: int, num: int) -> list[Path]:
    import torch

    from justkit.train.checkpoint import save_checkpoint

    n_tensors = 20
    shapes = [(params // n_tensors // 512, 512)] * n_tensors
    g = torch.Generator().manual_seed(0)
    for step in range(1, num + 1):
        model = {f"w{i}": torch.randn(s, generator=g) for i, s in enumerate(shapes)}
        opt = {"state": {i: {"step": torch.tensor(float(step)), "exp_avg": torch.randn(s, generator=g),
                             "exp_avg_sq": torch.rand(s, generator=g)} for i, s in enumerate(shapes)},
               "param_groups": [{"lr": 1e-3, "params": list(range(n_tensors))}]}
        save_checkpoint({"model": model, "optimizer": opt, "step": step, "epoch": 1, "config": {"model": {}}},
                        d, step)
        del model, opt
    return sorted(d.glob("ckpt-*.pt"), key=lambda p: int(p.stem.split("-")[1]))


def run_one(method: str, paths: list[Path], out: Path, q: mp.Queue) -> None:
    import torch  # noqa: F401  (imported before the baseline is read)

    from justkit.train import checkpoint as C

    base = rss_kib("VmRSS")
    t0 = time.perf_counter()
    if method == "all_at_once":
        ckpts = [C.load_checkpoint(p) for p in paths]
        avg = C.average_state_dicts([c["model"] for c in ckpts])
        C.atomic_torch_save({"model": avg, "config": ckpts[-1]["config"], "step": ckpts[-1]["step"],
                             "epoch": ckpts[-1]["epoch"]}, out)
    else:
        C.average_checkpoints(paths, out)
    q.put({"method": method, "peak_MiB": (rss_kib("VmHWM") - base) / 1024, "wall_s": time.perf_counter() - t0})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", type=float, default=20e6, help="model parameters (fp32)")
    ap.add_argument("--num", type=int, default=5, help="checkpoints averaged")
    ap.add_argument("--exp", default="", help="average this experiment's last --num checkpoints instead")
    ap.add_argument("--dir", default="", help="where the checkpoints go (default: a temporary directory)")
    ap.add_argument("--json", default="", help="also write the results here")
    a = ap.parse_args()
    params = int(a.params)
    with tempfile.TemporaryDirectory(dir=a.dir or None) as tmp:
        d = Path(tmp)
        if a.exp:
            from justkit.train.checkpoint import list_checkpoints, load_checkpoint

            paths = list_checkpoints(Path(a.exp) / "checkpoints")[-a.num:]
            if len(paths) < a.num:
                sys.exit(f"{a.exp}/checkpoints: {len(paths)} checkpoints, --num {a.num}")
            params = sum(v.numel() for v in load_checkpoint(paths[-1])["model"].values()
                         if hasattr(v, "is_floating_point") and v.is_floating_point())
        else:
            paths = write_checkpoints(d / "checkpoints", params, a.num)
        ckpt_mib = paths[-1].stat().st_size / 2**20
        rows = []
        ctx = mp.get_context("spawn")
        for method in ("all_at_once", "streamed"):
            q = ctx.Queue()
            p = ctx.Process(target=run_one, args=(method, paths, d / f"{method}.pt", q))
            p.start()
            rows.append(q.get())
            p.join()
    model_mib = params * 4 / 2**20
    print(f"averaging {a.num} checkpoints{' of ' + a.exp if a.exp else ''}: {params / 1e6:.2f}M fp32 parameters + Adam state "
          f"({ckpt_mib:.0f} MiB each; weights {model_mib:.0f} MiB)")
    print(f"{'method':<12} {'peak MiB':>9} {'x weights':>9} {'wall s':>7} {'595M model, GiB':>16}")
    for r in rows:
        r["x_weights"] = r["peak_MiB"] / model_mib
        r["paper_GiB"] = r["peak_MiB"] / params * PAPER_PARAMS / 1024
        print(f"{r['method']:<12} {r['peak_MiB']:9.0f} {r['x_weights']:9.2f} {r['wall_s']:7.2f} {r['paper_GiB']:16.1f}")
    if a.json:
        Path(a.json).write_text(json.dumps({"exp": a.exp, "params": params, "num": a.num, "checkpoint_MiB": ckpt_mib,
                                            "weights_MiB": model_mib, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
