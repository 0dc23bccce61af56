#!/usr/bin/env python3
"""Stage-1 and mini-MLS builder speed: transcript parsing, audio-header probing (nj 1/2), synthesis per utterance.

    tools/venv/bin/python benchmarks/bench_prepare_mls.py [--corpus tools/mini_mls/corpus] [--synth 10]
"""
from __future__ import annotations

import argparse
import importlib.util
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from justkit.corpora.mls import MLS_LANGUAGES, SPLITS, find_language_dir, probe_audio, read_split  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--corpus", type=Path, default=ROOT / "tools" / "mini_mls" / "corpus")
    p.add_argument("--synth", type=int, default=10, help="utterances to synthesise (0: skip)")
    a = p.parse_args()

    t0 = time.perf_counter()
    utts = []
    for lang in MLS_LANGUAGES:
        ld = find_language_dir(a.corpus, lang)
        for split in SPLITS:
            utts += read_split(ld, split).utts
    t_parse = time.perf_counter() - t0
    rows = [("parse transcripts + match audio", len(utts), t_parse)]
    for nj in (1, 2):
        t0 = time.perf_counter()
        durs, _ = probe_audio(utts, nj)
        rows.append((f"probe audio headers (nj={nj})", len(durs), time.perf_counter() - t0))

    if a.synth and shutil.which("espeak-ng"):
        spec = importlib.util.spec_from_file_location("mini_mls_build", ROOT / "tools" / "mini_mls" / "build.py")
        build = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = build
        spec.loader.exec_module(build)
        plan = build.plan_language("de", "mini", 0, set())[: a.synth]
        jobs = [(f"de+{u.spk.variant}", u.spk.pitch, u.spk.speed, u.text, i, u.utt) for i, u in enumerate(plan)]
        build.synthesize(jobs[0])  # warm-up: torch import
        t0 = time.perf_counter()
        wavs = [build.synthesize(j)[0] for j in jobs]
        rows.append(("synthesise (espeak-ng + resample)", len(jobs), time.perf_counter() - t0))
        import soundfile as sf

        out = Path("/tmp") / f"bench_mini_mls_{time.time_ns()}.opus"
        t0 = time.perf_counter()
        for w in wavs:
            sf.write(out, w, 48000, format="OGG", subtype="OPUS", compression_level=build.opus_compression_level(12))
        rows.append(("encode Ogg/Opus 12 kbit/s", len(wavs), time.perf_counter() - t0))
        out.unlink(missing_ok=True)

    print(f"| step | utterances | seconds | utt/s |\n| --- | ---: | ---: | ---: |")
    for name, n, t in rows:
        print(f"| {name} | {n} | {t:.2f} | {n / t:.0f} |")


if __name__ == "__main__":
    main()
