"""Front-end throughput (x real time): stage 2/3 code vs plain per-utterance torchaudio, on the same audio.

    tools/venv/bin/python benchmarks/bench_frontend.py [--num-utts 100] [--min-s 2] [--max-s 15] [--threads 1]

Rows:
  resample  stage: justkit.frontend.resample.resample (Kaiser kernel built once per rate pair);
            48k->16k on all utterances, 44.1k->16k on the first 20 (read as 44.1 kHz)
            torchaudio: torchaudio.functional.resample with the same filter, kernel rebuilt per call
            torchaudio default: F.resample with its default Hann filter (not the stage's quality)
  fbank     stage: justkit.frontend.fbank.compute_fbank; torchaudio: compliance.kaldi.fbank per utterance
  job I/O   the stage jobs' whole per-utterance path in one process: opus decode -> resample ->
            FLAC encode (stage 2), FLAC decode -> fbank -> kaldiio ark write (stage 3)
x real time = seconds of audio / seconds of compute (best of --repeats passes; the job rows: one pass).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.compliance.kaldi as kaldi
import torchaudio.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from justkit.frontend.shards import fbank_shard  # noqa: E402
from justkit.frontend.shards import resample_shard  # noqa: E402
from justkit.frontend.fbank import FbankConfig, compute_fbank  # noqa: E402
from justkit.frontend.resample import ResampleConfig, resample  # noqa: E402


def make_audio(n: int, lo: float, hi: float, seed: int) -> list:
    """Speech-like 48 kHz signals: harmonic voicing with a syllable-rate envelope plus noise."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        m = int(48000 * rng.uniform(lo, hi))
        t = np.arange(m) / 48000
        f0 = rng.uniform(100, 250)
        x = sum(np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 6)) / k for k in range(1, 12))
        x *= 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)
        out.append((0.2 * x / np.abs(x).max() + 0.01 * rng.standard_normal(m)).astype(np.float32))
    return out


def timed(fns, items, repeats: int) -> list:
    """Best-of-``repeats`` seconds of each fn over ``items``; the fns alternate within each
    repeat so that load from other processes (a shared machine) hits them alike."""
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            for it in items:
                fn(it)
            best[i] = min(best[i], time.perf_counter() - t0)
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num-utts", type=int, default=100)
    p.add_argument("--min-s", type=float, default=2.0)
    p.add_argument("--max-s", type=float, default=15.0)
    p.add_argument("--threads", type=int, default=1, help="torch threads (stage jobs run with 1)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    torch.set_num_threads(a.threads)

    audio48 = make_audio(a.num_utts, a.min_s, a.max_s, a.seed)
    secs = sum(len(x) for x in audio48) / 48000
    t48 = [torch.from_numpy(x) for x in audio48]
    rc = ResampleConfig()
    fc = FbankConfig()
    audio16 = [resample(x, 48000, 16000) for x in audio48]
    t16 = [torch.from_numpy(x) for x in audio16]

    rows = []
    stage, plain, default = timed([
        lambda x: resample(x, 48000, 16000),
        lambda x: F.resample(x, 48000, 16000, lowpass_filter_width=rc.lowpass_filter_width, rolloff=rc.rolloff,
                             resampling_method="sinc_interp_kaiser", beta=rc.beta),
        lambda x: F.resample(x, 48000, 16000),
    ], t48, a.repeats)
    rows.append(("resample 48k->16k", secs / stage, secs / plain, f"{plain / stage:.2f}"))
    rows.append(("  (torchaudio default Hann filter)", float("nan"), secs / default, ""))
    # 44.1 kHz sources (other corpora): 441:160 needs 160 kernel phases, where caching matters.
    t44 = t48[:20]
    secs44 = sum(len(x) for x in t44) / 44100
    stage, plain = timed([
        lambda x: resample(x, 44100, 16000),
        lambda x: F.resample(x, 44100, 16000, lowpass_filter_width=rc.lowpass_filter_width, rolloff=rc.rolloff,
                             resampling_method="sinc_interp_kaiser", beta=rc.beta),
    ], t44, a.repeats)
    rows.append(("resample 44.1k->16k (20 utts)", secs44 / stage, secs44 / plain, f"{plain / stage:.2f}"))

    stage, plain = timed([
        lambda x: compute_fbank(x, fc),
        lambda x: kaldi.fbank(x.unsqueeze(0) * 32768.0, num_mel_bins=80, energy_floor=1.0),
    ], t16, a.repeats)
    rows.append(("fbank 80-dim", secs / stage, secs / plain, f"{plain / stage:.2f}"))

    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        (d / "in").mkdir()
        with open(d / "wav.scp", "w") as f:
            for i, x in enumerate(audio48):
                path = d / "in" / f"u{i:04d}.opus"
                sf.write(path, x, 48000, format="OGG", subtype="OPUS")
                f.write(f"u{i:04d} {path}\n")
        t0 = time.perf_counter()
        wav, _, _ = resample_shard(d / "wav.scp", str(d / "out"), 16000, progress_every=1e9)
        t_res = time.perf_counter() - t0
        with open(d / "wav16.scp", "w") as f:
            f.writelines(f"{u} {p}\n" for u, p in wav.items())
        t0 = time.perf_counter()
        fbank_shard(d / "wav16.scp", str(d / "feats.ark"), fc, progress_every=1e9)
        t_fb = time.perf_counter() - t0
    rows.append(("stage 2 job (opus->resample->flac)", secs / t_res, float("nan"), ""))
    rows.append(("stage 3 job (flac->fbank->ark)", secs / t_fb, float("nan"), ""))

    print(f"{a.num_utts} utterances, {a.min_s:g}-{a.max_s:g} s, {secs:.0f} s of audio; torch threads {a.threads}; "
          f"best of {a.repeats}")
    print(f"| {'what':36} | {'stage x RT':>10} | {'torchaudio x RT':>15} | {'stage/torchaudio':>16} |")
    print(f"|{'-' * 38}|{'-' * 12}|{'-' * 17}|{'-' * 18}|")
    fmt = lambda v: "" if v != v else f"{v:.0f}"  # noqa: E731
    for what, s, t, r in rows:
        print(f"| {what:36} | {fmt(s):>10} | {fmt(t):>15} | {r:>16} |")


if __name__ == "__main__":
    main()
