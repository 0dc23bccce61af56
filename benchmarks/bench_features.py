"""Stage 3's feature storage formats side by side: bytes per audio hour, read speed, error;
and features computed on the fly (stage 3 --feats_type raw): decode + fbank + CMVN speed.

    tools/venv/bin/python benchmarks/bench_features.py [--feats egs/mls/dump/fbank/train] [--repeats 3]
        [--audio egs/mls/dump/raw/train] [--opus egs/mls/data/train] [--max_utts 300] [--json out.json]

Takes the float32 features stage 3 wrote (feats.scp), writes them again in every format of
``fbank: storage`` (justkit.frontend.fbank.STORAGE_FORMATS) with kaldiio, as stage 3 does, then
reads every matrix back through its scp offset with kaldiio.load_mat, as the data loader does.

Columns: MB per hour of audio (10 ms frames), x real time of reading on one core (seconds of
audio / seconds spent reading, best of --repeats, page cache warm), the largest absolute and
the mean absolute difference from the float32 features (log-mel units).

With --audio (stage 2's 16 kHz FLAC dir) and/or --opus (stage 1's 48 kHz opus dir) a second
table times what a DataLoader worker does per utterance on one core (torch 1 thread) for
examples packed with audio: ``PackedDataset.load_feats`` (decode, [resample,] Kaldi fbank, CMVN),
its parts alone (decode; decode + resample), and ``compute_fbank_batch`` on padded batches (the
``data.features_on: device`` step, here on the CPU). Bytes per audio hour: the compressed audio
the loader reads (no feature bytes). The last column projects to a 16-core GPU node (x real time
per core x 16) against the ~3000 s of audio per second one H200 training paper-size JUST
consumes (issue 13's estimate).
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
NODE_CORES = 16
H200_AUDIO_S_PER_S = 3000.0


def _audio_entries(data_dir: Path, root: Path, max_utts: int):
    """(utt, path, bytes) of the first ``max_utts`` wav.scp entries (relative paths: to the recipe dir ``root``)."""
    out = []
    for u, v in list(read_table(data_dir / "wav.scp").items())[:max_utts]:
        p = Path(v) if Path(v).is_absolute() else root / v
        out.append((u, str(p), p.stat().st_size))
    return out


def _best(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def bench_on_the_fly(name: str, data_dir: Path, root: Path, max_utts: int, repeats: int, cmvn,
                     max_frames: int) -> list:
    """Rows for the audio of ``data_dir``: the loader worker's on-the-fly paths on one core."""
    import torch

    from justkit.data.dataset import PackedDataset
    from justkit.frontend.audio import load_audio
    from justkit.frontend.fbank import FbankConfig, compute_fbank_batch, num_frames
    from justkit.frontend.resample import resample

    torch.set_num_threads(1)
    ents = _audio_entries(data_dir, root, max_utts)
    cfg = FbankConfig()
    waves, rates = {}, set()
    for u, p, _ in ents:
        x, sr = load_audio(p, u)
        rates.add(sr)
        waves[u] = resample(x, sr, 16000) if sr != 16000 else x
    seconds = sum(len(w) for w in waves.values()) / 16000
    mb_h = sum(b for _, _, b in ents) / 1e6 / (seconds / 3600)
    rows = [{"utt": u, "feats": None, "audio": p, "num_frames": num_frames(len(waves[u]), cfg), "tokens": [],
             "lang": "x", "labelled": False, "text": ""} for u, p, _ in ents]
    ds = PackedDataset(rows, cmvn=cmvn, fbank=cfg)
    rate = "/".join(str(r // 1000) + "k" for r in sorted(rates))
    out = []

    def rec(method, t, note):
        xrt = seconds / t
        out.append({"storage": f"on_the_fly_{name}", "method": method, "audio": f"{name} {rate}",
                    "mb_per_hour": 0.0, "audio_mb_per_hour": mb_h, "x_real_time_per_core": xrt,
                    "node_x_real_time": xrt * NODE_CORES, "node_vs_h200_need": xrt * NODE_CORES / H200_AUDIO_S_PER_S,
                    "utterances": len(ents), "hours": seconds / 3600, "note": note})

    rec("decode", _best(lambda: [load_audio(p, u) for u, p, _ in ents], repeats), "soundfile decode only")
    if rates != {16000}:
        rec("decode+resample",
            _best(lambda: [resample(*load_audio(p, u), 16000) for u, p, _ in ents], repeats),
            "decode + 48k->16k (stage 2's resampler)")
    rec("decode+fbank+cmvn (loader)", _best(lambda: [ds.load_feats(i) for i in range(len(ds))], repeats),
        "PackedDataset.load_feats: what a worker does per utterance")
    # the device path's batched fbank, on this CPU: padded batches of <= max_frames
    order = sorted(waves, key=lambda u: len(waves[u]))
    batches, cur = [], []
    for u in order:
        if cur and (len(cur) + 1) * num_frames(len(waves[u]), cfg) > max_frames:
            batches.append(cur)
            cur = []
        cur.append(u)
    batches.append(cur)
    padded = []
    for b in batches:
        n = max(len(waves[u]) for u in b)
        w = torch.zeros(len(b), n)
        for i, u in enumerate(b):
            w[i, : len(waves[u])] = torch.from_numpy(waves[u])
        padded.append((w, torch.tensor([len(waves[u]) for u in b])))
    rec("batched fbank (device path, on CPU)",
        _best(lambda: [compute_fbank_batch(w, n, cfg) for w, n in padded], repeats),
        f"compute_fbank_batch, {len(batches)} batches of <= {max_frames} frames; fbank only, no decode")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--feats", default="egs/mls/dump/fbank/train", help="a stage-3 output dir (feats.scp)")
    ap.add_argument("--repeats", type=int, default=3, help="timed read passes (the best is reported)")
    ap.add_argument("--json", default="", help="also write one record per format here")
    ap.add_argument("--audio", default="", help="stage 2's dir of 16 kHz FLAC (dump/raw/train): on-the-fly rows")
    ap.add_argument("--opus", default="", help="stage 1's dir of 48 kHz opus (data/train): on-the-fly rows with resampling")
    ap.add_argument("--max_utts", type=int, default=300, help="utterances timed per on-the-fly audio dir")
    ap.add_argument("--max_frames", type=int, default=20000, help="frames per batch of the batched-fbank row")
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
    if a.audio or a.opus:
        from justkit.frontend.cmvn import accumulate, stats_to_mean_std

        mean, std = stats_to_mean_std(accumulate(exact.values()))
        cmvn = (mean.astype(np.float32), std.astype(np.float32))
        print(f"\non the fly (stage 3 --feats_type raw): one core (torch 1 thread), best of {a.repeats}; "
              f"node = x {NODE_CORES} cores; one H200 needs ~{H200_AUDIO_S_PER_S:.0f}x real time")
        print(f"{'audio':>14} | {'path':>36} | {'audio MB/h':>10} | {'x real time/core':>16} | "
              f"{'16-core node':>12} | {'node / H200 need':>16}")
        for name, d in (("flac", a.audio), ("opus", a.opus)):
            if not d:
                continue
            for rec in bench_on_the_fly(name, Path(d), root, a.max_utts, a.repeats, cmvn, a.max_frames):
                records.append(rec)
                print(f"{rec['audio']:>14} | {rec['method']:>36} | {rec['audio_mb_per_hour']:10.1f} | "
                      f"{rec['x_real_time_per_core']:16.0f} | {rec['node_x_real_time']:12.0f} | "
                      f"{rec['node_vs_h200_need']:16.2f}")
    if a.json:
        Path(a.json).write_text(json.dumps(records, indent=1) + "\n")
        print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
