"""Every GPU path of justkit, run once and measured: the checks of benchmarks/gpu_check.sh.

    bash benchmarks/gpu_check.sh                 # on a GPU machine (installs what it lacks)
    bash benchmarks/gpu_check.sh --dry-run       # the same sequence, tiny sizes, on the CPU

Sections (each prints its figures and PASS/FAIL; one failing section does not stop the others):
  a  RNN-T kernels: justkit's numba.cuda full loss and torchaudio's CUDA loss against the numba
     CPU kernel (loss and gradients); the pruned loss's device path (torch lattice, bounds on
     the device) against its CPU path.
  b  the mini JUST config for --mini_steps steps in bf16 on the GPU through the real trainer
     step: frames/s and audio hours per hour, beside the same config on this machine's CPU.
  c  the paper config (594.7M parameters) for --paper_steps steps on a batch that fits: step
     time, peak memory, model FLOPs per step (justkit.models.flops) and MFU against the GPU's
     dense bf16 peak.
  d  batched greedy and beam decoding RTF on the GPU (random weights unless --model).
  e  a 1-GPU torchrun of justkit.bin.train (DDP on NCCL; gloo with --dry-run), and an exact
     resume: 4 steps + 4 resumed steps == 8 steps, weight for weight.
  f  host syncs: per-frame greedy vs the sync-free search, and the JUST training step, counted by
     torch.cuda.set_sync_debug_mode (HostSyncCounter's Python-level count on the CPU).
  g  fbank on the device (data.features_on device): compute_fbank_batch + CMVN on padded 16 kHz
     batches against the loader's per-utterance compute_fbank (max abs difference), and its
     throughput in x real time against the ~3000x one H200 consumes training paper-size JUST.

Writes the report (markdown) to --out and one JSON record per section to --json.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402

LINES: list[str] = []
RECORDS: list[dict] = []


def say(line: str = "") -> None:
    print(line, flush=True)
    LINES.append(line)


def section(key: str, title: str):
    """Decorator: run a check, print PASS/FAIL with its time, keep its record."""
    def wrap(fn):
        def run(args):
            say(f"\n## {key}. {title}\n")
            t0 = time.time()
            rec = {"section": key, "title": title}
            try:
                rec.update(fn(args) or {})
                ok = rec.get("ok", True)
            except Exception as e:  # a failing check is reported, the next one still runs
                ok = False
                rec["error"] = f"{type(e).__name__}: {e}"
                say("```\n" + traceback.format_exc()[-3000:] + "```")
            rec["ok"], rec["seconds"] = bool(ok), round(time.time() - t0, 1)
            say(f"\n**{key}: {'PASS' if ok else 'FAIL'}** ({rec['seconds']} s)")
            RECORDS.append(rec)
            return rec
        return run
    return wrap


def _maxdiff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach().double().cpu() - b.detach().double().cpu()).abs().max())


# ----------------------------------------------------------------------------- a
@section("a", "RNN-T kernels against the CPU kernel")
def check_kernels(args) -> dict:
    from justkit.losses.rnnt import rnnt_loss
    from justkit.losses import rnnt_pruned as P

    dev = torch.device(args.device)
    B, T, U, V = (2, 30, 8, 20) if args.dry_run else (8, 200, 60, 500)
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(B, T, U + 1, V, generator=g)
    targets = torch.randint(1, V, (B, U), generator=g)
    t_lens = torch.full((B,), T, dtype=torch.long)
    t_lens[1:] = torch.randint(T // 2, T + 1, (B - 1,), generator=g)
    u_lens = torch.full((B,), U, dtype=torch.long)
    u_lens[1:] = torch.randint(1, U + 1, (B - 1,), generator=g)
    t_lens[0], u_lens[0] = T, U

    def loss_grad(backend, device):
        x = logits.clone().to(device).requires_grad_(True)
        loss = rnnt_loss(x, targets.to(device), t_lens.to(device), u_lens.to(device), reduction="sum", backend=backend)
        loss.backward()
        return loss.detach().cpu(), x.grad.cpu()

    ref_l, ref_g = loss_grad("numba", torch.device("cpu"))
    say(f"shape B,T,U,V = {B},{T},{U},{V}; reference: justkit numba CPU kernel, loss {float(ref_l):.4f}")
    say("\n| implementation | device | max abs diff loss | max abs diff grad | within 1e-4 |")
    say("|---|---|---|---|---|")
    rows, ok = [], True
    cases = [("torchaudio", torch.device("cpu"))]
    if dev.type == "cuda":
        cases += [("torchaudio", dev), ("numba", dev)]
    for backend, d in cases:
        l, gr = loss_grad(backend, d)
        dl, dg = _maxdiff(l, ref_l), _maxdiff(gr, ref_g)
        good = dl <= 1e-4 * max(1.0, abs(float(ref_l))) and dg <= 1e-4
        ok &= good
        rows.append({"impl": backend, "device": str(d), "loss_diff": dl, "grad_diff": dg})
        say(f"| {backend} | {d} | {dl:.2e} | {dg:.2e} | {'yes' if good else 'NO'} |")

    # pruned: device path (torch lattice + device bounds) vs the CPU path (numba kernels)
    enc = torch.randn(B, T, V, generator=g)
    pred = torch.randn(B, U + 1, V, generator=g)

    def pruned(device, force_device_path):
        old = P._device_path
        P._device_path = (lambda x: True) if force_device_path else old
        try:
            am = enc.clone().to(device).requires_grad_(True)
            lm = pred.clone().to(device).requires_grad_(True)
            tl, ul, y = t_lens.to(device), u_lens.to(device), targets.to(device)
            lb, ll = P.simple_lattice(am, lm, y)
            nll = P.lattice_nll(lb, ll, tl, ul)
            occ = P.lattice_occupation(lb.detach(), ll.detach(), tl, ul)
            starts = P.prune_ranges(occ, tl, ul, 4)
            nll.sum().backward()
            return nll.detach().cpu(), am.grad.cpu(), lm.grad.cpu(), starts.cpu()
        finally:
            P._device_path = old

    cpu = pruned(torch.device("cpu"), False)
    other = pruned(dev, dev.type == "cpu")
    dl = _maxdiff(other[0], cpu[0])
    dg = max(_maxdiff(other[1], cpu[1]), _maxdiff(other[2], cpu[2]))
    same_bounds = torch.equal(other[3], cpu[3])
    good = dl <= 1e-3 and dg <= 1e-4 and same_bounds
    ok &= good
    say(f"\npruned loss (simple lattice of a trivial joiner, bounds with s_range 4): device path on {dev} vs numba CPU path: "
        f"max abs diff NLL {dl:.2e}, gradients {dg:.2e}, bounds {'identical' if same_bounds else 'DIFFER'}")
    rows.append({"impl": "pruned device path", "device": str(dev), "loss_diff": dl, "grad_diff": dg,
                 "bounds_equal": same_bounds})
    return {"ok": ok, "rows": rows, "shape": [B, T, U, V]}


# ----------------------------------------------------------------------------- b, c
def _bench(name: str, config: str, device: str, steps: int, warmup: int, max_frames: int,
           lengths: tuple[int, int], threads: int) -> dict:
    import bench_train

    a = argparse.Namespace(device=device, steps=steps, warmup=warmup, threads=threads, train="",
                           num_utts=max(40, 4 * max_frames // max(lengths[0], 1)), peak_tflops=ARGS.peak_tflops,
                           labelled=1.0, unmasked_all_rows=False)
    q = mp.get_context("spawn").Queue()
    p = mp.get_context("spawn").Process(target=bench_train.run_one, args=(name, config, a, max_frames, lengths, q))
    p.start()
    p.join()
    if p.exitcode != 0:
        raise RuntimeError(f"{name} on {device}: the benchmark process failed (exit code {p.exitcode})")
    return q.get()


def _row(r: dict) -> str:
    mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") is not None else "n/a"
    gpu = f"{r['peak_gpu_GiB']:.1f}" if r.get("peak_gpu_GiB") is not None else "n/a"
    return (f"| {r['name']} | {r['device']} | {r['params_M']:.1f} | {r['utts_per_step']:.1f} | {r['s_per_step']:.3f} | "
            f"{r['frames_per_s']:.0f} | {r['audio_h_per_h']:.1f} | {r['flops_per_step'] / 1e9:.1f} | "
            f"{r['tflops_per_s']:.1f} | {mfu} | {gpu} |")


HDR = ("| run | device | params M | utts/step | s/step | frames/s | audio h/h | GFLOP/step | TFLOP/s | MFU | peak GPU GiB |\n"
       "|---|---|---|---|---|---|---|---|---|---|---|")


@section("b", "mini JUST training in bf16 (real trainer step)")
def check_mini(args) -> dict:
    conf = "egs/mls/conf/train_just_mini.yaml"
    steps = 3 if args.dry_run else args.mini_steps
    say(HDR)
    dev = _bench("mini", conf, args.device, steps, 1 if args.dry_run else 10, 2000, (150, 350), 1)
    say(_row(dev))
    cpu = _bench("mini", conf, "cpu", 3 if args.dry_run else 20, 1, 2000, (150, 350), os.cpu_count() or 1)
    say(_row(cpu))
    ratio = dev["frames_per_s"] / max(cpu["frames_per_s"], 1e-9)
    say(f"\n{args.device} / CPU ({cpu['device']}) frames/s: {ratio:.1f}x (target >= 20x on a GPU)")
    return {"device_run": dev, "cpu_run": cpu, "ratio": ratio, "ok": True}


@section("c", "paper-size JUST: step time, memory, FLOPs, MFU")
def check_paper(args) -> dict:
    if args.dry_run:
        conf, mf, lengths = "egs/mls/conf/train_just_mini.yaml", 1200, (300, 400)
        say("(dry run: the mini config stands in for the 594.7M-parameter one)")
    else:
        conf, mf, lengths = "egs/mls/conf/train_just_paper.yaml", args.paper_max_frames, (1200, 1600)
    say(HDR)
    r = _bench("paper" if not args.dry_run else "paper (dry run)", conf, args.device,
               2 if args.dry_run else args.paper_steps, 1 if args.dry_run else 3, mf, lengths, 1 if args.dry_run else 0)
    say(_row(r))
    ok = True
    if r.get("mfu") is not None:
        say(f"\nMFU {100 * r['mfu']:.1f}% of the {r['device']}'s dense bf16 peak (target >= 35%)")
    return {"run": r, "ok": ok}


# ----------------------------------------------------------------------------- d
@section("d", "decoding RTF (batched greedy and beam)")
def check_decode(args) -> dict:
    from justkit.decode.beam import BeamConfig, beam_search
    from justkit.decode.greedy import GreedyConfig, greedy_search
    import bench_decode

    dev = torch.device(args.device)
    ns = argparse.Namespace(model=args.model, packed=args.packed, cmvn=args.cmvn,
                            num=4 if args.dry_run else 32, device=dev)
    model, feats, lens = bench_decode.load(ns)
    model = model.to(dev).eval()
    audio_s = float(lens.sum()) * 0.01
    searches = {
        "greedy": lambda m, e, el: greedy_search(m, e, el, GreedyConfig()),
        "greedy (per-frame sync)": lambda m, e, el: greedy_search(m, e, el, GreedyConfig(), sync_free=False),
        "beam 4 (modified)": lambda m, e, el: beam_search(m, e, el, BeamConfig(beam_size=4, algorithm="modified")),
        "beam 4 (Graves)": lambda m, e, el: beam_search(m, e, el, BeamConfig(beam_size=4, algorithm="graves")),
    }
    say(f"{len(lens)} utterances, {audio_s:.0f} s of audio, {'trained model ' + args.model if args.model else 'random weights (mini config)'}")
    say("\n| search | batched | RTF |\n|---|---|---|")
    rows = []
    for name, fn in searches.items():
        bench_decode.run(model, feats, lens, fn, True, dev)  # warm-up (kernels, allocator)
        dt = bench_decode.run(model, feats, lens, fn, True, dev)
        rows.append({"search": name, "rtf": dt / audio_s})
        say(f"| {name} | yes | {dt / audio_s:.4f} |")
    return {"rows": rows}


# ----------------------------------------------------------------------------- e
def _tiny_setup(d: Path) -> tuple[Path, Path, Path]:
    """A sentencepiece model, a packed training set (random fbank, real token ids) and a config."""
    import numpy as np
    import yaml

    import bench_train
    from justkit.text.tokenizer import TokenizerConfig, train_tokenizer

    rng = np.random.default_rng(0)
    words = ["".join(rng.choice(list("abcdefghij"), size=int(rng.integers(2, 6)))) for _ in range(200)]
    texts = {"en": [(f"s{i}", " ".join(rng.choice(words, size=6))) for i in range(300)]}
    vocab = train_tokenizer(texts, d, TokenizerConfig(vocab_size=40, hard_vocab_limit=False)).vocab_size
    packed = bench_train.synthetic_packed(d, 48, (150, 300), vocab)
    cfg = yaml.safe_load((ROOT / "egs/mls/conf/train_just_mini.yaml").read_text())
    conf = d / "conf.yaml"
    inc = cfg.get("include", [])
    cfg["include"] = [str((ROOT / "egs/mls/conf" / i).resolve()) for i in (inc if isinstance(inc, list) else [inc])]
    cfg.setdefault("data", {}).update(max_frames=1200, num_workers=0)
    cfg.setdefault("train", {}).update(max_steps=8, max_epochs=0, log_interval=2, save_interval=4, dev_wer=False,
                                       plots=False, tensorboard=False, grad_balance_interval=0, keep_last=0)
    conf.write_text(yaml.safe_dump(cfg))
    return packed, d / "spm.model", conf


@section("e", "torchrun (DDP path) and exact resume")
def check_ddp(args) -> dict:
    d = Path(tempfile.mkdtemp(prefix="gpu_check_ddp_"))
    packed, spm_model, conf = _tiny_setup(d)
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}

    def train(exp: Path, *extra: str) -> str:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
               "-m", "justkit.bin.train", "--config", str(conf), "--exp", str(exp), "--train_data", str(packed),
               "--tokenizer", str(spm_model), "--device", args.device, *extra]
        p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{p.stderr[-3000:]}")
        return p.stderr

    t0 = time.time()
    log = train(d / "straight")
    backend = "nccl" if args.device == "cuda" else "gloo"
    train(d / "resumed", "--train.max_steps", "4")
    log2 = train(d / "resumed")
    from justkit.train import checkpoint as C

    def final(exp):
        return C.load_latest_checkpoint(exp / "checkpoints")[0]

    a, b = final(d / "straight"), final(d / "resumed")
    diffs = {k: _maxdiff(a["model"][k], b["model"][k]) for k in a["model"] if a["model"][k].is_floating_point()}
    worst = max(diffs.values())
    ok = a["step"] == b["step"] == 8 and worst == 0.0 and "resumed from" in log2
    say(f"torchrun --nproc_per_node 1, backend {backend}, device {args.device}: 8 steps straight vs 4 + 4 resumed "
        f"({time.time() - t0:.0f} s): steps {a['step']} / {b['step']}, largest weight difference {worst:.3g} "
        f"over {len(diffs)} tensors ({'identical' if worst == 0.0 else 'NOT identical'})")
    if "weights identical" in log:
        say("replica check: " + next(line for line in log.splitlines() if "weights identical" in line).split("] ")[-1])
    return {"ok": ok, "backend": backend, "max_weight_diff": worst}


# ----------------------------------------------------------------------------- f
def _count_syncs(device: torch.device, fn) -> tuple[int, dict]:
    """Syncs while fn() runs: CUDA's sync debug mode on a GPU, HostSyncCounter on the CPU."""
    from justkit.train.host_sync import HostSyncCounter

    if device.type == "cuda":
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                fn()
            finally:
                torch.cuda.set_sync_debug_mode("default")
        sites: dict = {}
        for x in w:
            if "synchroniz" in str(x.message):
                k = f"{Path(x.filename).name}:{x.lineno}"
                sites[k] = sites.get(k, 0) + 1
        return sum(sites.values()), sites
    with HostSyncCounter() as c:
        fn()
    return c.count, dict(c.sites)


@section("f", "host syncs: greedy search and the JUST training step")
def check_syncs(args) -> dict:
    from justkit.decode.greedy import GreedyConfig, greedy_search
    from justkit.losses.terms import LossConfig
    from justkit.models.just import JUSTConfig, JUSTModel
    from justkit.config import load_yaml
    from justkit.data.loader import Collate

    dev = torch.device(args.device)
    torch.manual_seed(0)
    mcfg = load_yaml(ROOT / "egs/mls/conf/model/mini.yaml")["model"]
    mcfg.update(mode="just", vocab_size=64)
    loss = LossConfig.from_dict({"w_ctc": 0.0, "rnnt": {"type": "pruned", "s_range": 4, "warm_step": 0}})
    model = JUSTModel(JUSTConfig.from_dict(mcfg), loss).to(dev)
    n_frames = 60 if args.dry_run else 300
    g = torch.Generator().manual_seed(0)
    items = [{"utt": f"u{i}", "feats": torch.randn(n, 80, generator=g).numpy(),
              "tokens": torch.randint(1, 64, (n // 30,), generator=g).tolist(), "lang": "en", "labelled": i % 2 == 0}
             for i, n in enumerate([4 * n_frames, 3 * n_frames, 4 * n_frames - 7, 2 * n_frames])]
    batch = {k: (v.to(dev) if torch.is_tensor(v) else v) for k, v in Collate()(items).items()}

    def step():
        out = model(batch, step=10)
        out["loss"].backward()

    if dev.type == "cpu":  # what a GPU runs: the pruned loss's device path, lengths checked before the copy
        from justkit.losses import rnnt_pruned
        from justkit.nn.subsampling import Conv2dSubsampling

        rnnt_pruned._device_path = lambda x: True
        Conv2dSubsampling.check_lengths = lambda *a: None

    step()  # warm-up
    model.zero_grad()
    n_step, sites_step = _count_syncs(dev, step)
    model.eval()
    with torch.no_grad():
        enc, el = model.encode(batch["feats"], batch["feat_lens"])
    cfg = GreedyConfig()
    n_free, sites_free = _count_syncs(dev, lambda: greedy_search(model, enc, el, cfg, sync_free=True))
    n_sync, _ = _count_syncs(dev, lambda: greedy_search(model, enc, el, cfg, sync_free=False))
    how = "torch.cuda.set_sync_debug_mode" if dev.type == "cuda" else "HostSyncCounter (Python-level reads)"
    say(f"counted by {how}; {enc.size(1)} encoder frames, batch of {len(items)}")
    say("\n| what | host syncs |\n|---|---|")
    say(f"| JUST training step (forward + backward, pruned RNN-T, no CTC) | {n_step} |")
    say(f"| greedy search, sync-free (default on a GPU) | {n_free} |")
    say(f"| greedy search, stopping a frame when nothing emits | {n_sync} |")
    if sites_step:
        say("\ntraining-step sync sites: " + ", ".join(f"{k} x{v}" for k, v in sites_step.items()))
    if sites_free:
        say("sync-free greedy sites: " + ", ".join(f"{k} x{v}" for k, v in sites_free.items()))
    ok = n_free < enc.size(1) and n_free < n_sync
    return {"ok": ok, "train_step_syncs": n_step, "train_step_sites": sites_step,
            "greedy_sync_free": n_free, "greedy_per_frame": n_sync}


# ----------------------------------------------------------------------------- g
@section("g", "fbank on the device: batched fbank + CMVN vs the loader's per-utterance fbank")
def check_device_fbank(args) -> dict:
    import numpy as np

    from justkit.data.loader import device_features
    from justkit.frontend.fbank import FbankConfig, compute_fbank, num_frames

    dev = torch.device(args.device)
    cfg = FbankConfig()
    rng = np.random.default_rng(0)
    # a training batch's worth: 20000-frame budget at 10-20 s (MLS), zero padded
    secs = [1.0, 1.3, 0.9, 1.2] if args.dry_run else list(rng.uniform(10, 20, size=13))
    waves = [(0.1 * rng.standard_normal(int(s * 16000))).astype(np.float32) for s in secs]
    lens = torch.tensor([len(w) for w in waves])
    wave = torch.zeros(len(waves), int(lens.max()))
    for i, w in enumerate(waves):
        wave[i, : len(w)] = torch.from_numpy(w)
    mean, std = torch.full((80,), 10.0), torch.full((80,), 2.0)
    batch = {"wave": wave.to(dev), "wave_lens": lens.to(dev), "utts": [f"u{i}" for i in range(len(waves))],
             "feat_lens": torch.tensor([num_frames(len(w), cfg) for w in waves])}
    out = device_features(dict(batch), cfg, (mean, std))
    worst = 0.0
    for i, w in enumerate(waves):
        ref = (torch.from_numpy(compute_fbank(w, cfg)) - mean) / std
        worst = max(worst, _maxdiff(out["feats"][i, : ref.size(0)], ref))
    reps = 3 if args.dry_run else 50
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        device_features(dict(batch), cfg, (mean, std))
    if dev.type == "cuda":
        torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / reps
    xrt = sum(secs) / dt
    say(f"{len(waves)} utterances, {sum(secs):.1f} s of audio per batch, {reps} batches timed")
    say("\n| what | value |\n|---|---|")
    say(f"| max abs difference from compute_fbank + CMVN (normalised units) | {worst:.2e} |")
    say(f"| batch time | {dt * 1e3:.2f} ms |")
    say(f"| x real time | {xrt:.0f} (one H200 training paper-size JUST consumes ~3000) |")
    return {"ok": worst < 1e-3, "max_abs_diff": worst, "batch_ms": dt * 1e3, "x_real_time": xrt}


ARGS: argparse.Namespace


def main() -> int:
    global ARGS
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry_run", action="store_true", help="tiny sizes on the CPU (what tests/benchmarks/test_benchmarks.py runs)")
    p.add_argument("--sections", default="abcdefg", help="which checks, e.g. 'ace'")
    p.add_argument("--mini_steps", type=int, default=300)
    p.add_argument("--paper_steps", type=int, default=30)
    p.add_argument("--paper_max_frames", type=int, default=48000, help="paper batch (frames incl. padding); conf default")
    p.add_argument("--peak_tflops", type=float, default=0.0, help="dense bf16 peak for MFU (default: from the GPU name)")
    p.add_argument("--model", default="", help="a trained model for d (with --packed and --cmvn)")
    p.add_argument("--packed", default="")
    p.add_argument("--cmvn", default="")
    p.add_argument("--out", default="", help="markdown report (default benchmarks/results/gpu_<date>.md; dry run: none)")
    p.add_argument("--json", default="", help="one JSON record per section")
    ARGS = args = p.parse_args()
    args.device = "cpu" if args.dry_run else "cuda"
    if not args.dry_run and not torch.cuda.is_available():
        print("gpu_check: no CUDA device (use --dry_run on a CPU)", file=sys.stderr)
        return 2
    name = torch.cuda.get_device_name() if args.device == "cuda" else "CPU (dry run)"
    say(f"# justkit GPU check, {_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M} UTC\n")
    say(f"device: {name}; torch {torch.__version__}"
        + (f", CUDA {torch.version.cuda}" if args.device == "cuda" else "")
        + f"; {os.cpu_count()} CPU cores; git {_git_rev()}")
    say(f"command: {' '.join(sys.argv)}")
    checks = {"a": check_kernels, "b": check_mini, "c": check_paper, "d": check_decode, "e": check_ddp, "f": check_syncs,
              "g": check_device_fbank}
    t0 = time.time()
    for k in args.sections:
        checks[k](args)
    failed = [r["section"] for r in RECORDS if not r["ok"]]
    say(f"\n{len(RECORDS) - len(failed)}/{len(RECORDS)} checks passed in {time.time() - t0:.0f} s"
        + (f"; FAILED: {' '.join(failed)}" if failed else ""))
    out = args.out or ("" if args.dry_run else str(ROOT / f"benchmarks/results/gpu_{_dt.date.today():%Y%m%d}.md"))
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text("\n".join(LINES) + "\n")
        print(f"report: {out}")
    if args.json:
        Path(args.json).write_text(json.dumps(RECORDS, indent=1, default=str) + "\n")
    return 1 if failed else 0


def _git_rev() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip() or "?"
    except OSError:
        return "?"


if __name__ == "__main__":
    sys.exit(main())
