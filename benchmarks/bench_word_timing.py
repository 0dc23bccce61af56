"""How far a model's word start times are from the truth, on the mini corpus's test audio.

    tools/venv/bin/python tools/mini_mls/build.py --word_ctm truth.ctm --split test
    tools/venv/bin/python benchmarks/bench_word_timing.py --model_dir exp/<tag>/model --truth truth.ctm

The truth is the synthesiser's: espeak-ng's word events plus each utterance's leading silence
(``build.py --word_ctm``). Every test utterance of ``--corpus`` (48 kHz Opus, as stage 1 reads it)
is transcribed with ``Speech2Text`` once per ``--timings`` path; the hypothesis words that equal a
reference word in the word-level alignment of the two (difflib) are compared by their start
times. Prints one table row per path (and ``--json``): words matched, mean/median absolute start
error, the share within 0.1/0.2/0.5 s, the mean signed error (positive: the model is late), and
the mean confidence of matched and of unmatched (wrong) hypothesis words. A check first: the
truth's utterance durations against the corpus' ``segments.txt``.
"""
from __future__ import annotations

import argparse
import difflib
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import soundfile as sf

from justkit.decode.align import read_ctm
from justkit.decode.transcribe import Speech2Text

CORPUS = Path(__file__).resolve().parents[1] / "tools/mini_mls/corpus"


def test_audio(corpus: Path, split: str):
    """{utt: (opus path, segments.txt end)} of every language of the corpus."""
    out = {}
    for lang_dir in sorted(corpus.glob("mls_*_opus")):
        seg = {}
        for line in (lang_dir / split / "segments.txt").read_text(encoding="utf-8").splitlines():
            parts = line.split("\t")
            seg[parts[0]] = float(parts[3])
        for p in sorted((lang_dir / split / "audio").rglob("*.opus")):
            out[p.stem] = (p, seg.get(p.stem))
    return out


def compare(hyp_words, ref):
    """(start errors of matched words, confidences of matched, confidences of unmatched hypothesis words)."""
    sm = difflib.SequenceMatcher(a=[w.text for w in hyp_words], b=[w for _, _, w, _ in ref], autojunk=False)
    errs, conf_ok, matched = [], [], set()
    for blk in sm.get_matching_blocks():
        for k in range(blk.size):
            h, r = hyp_words[blk.a + k], ref[blk.b + k]
            errs.append(h.start - r[0])
            conf_ok.append(h.confidence)
            matched.add(blk.a + k)
    conf_bad = [w.confidence for i, w in enumerate(hyp_words) if i not in matched]
    return errs, conf_ok, conf_bad


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_dir", required=True, help="a packed model directory or exp/<tag>")
    p.add_argument("--truth", required=True, help="the true word timings (build.py --word_ctm)")
    p.add_argument("--corpus", default=str(CORPUS), help="the mini corpus (mls_<language>_opus/ below it)")
    p.add_argument("--split", default="test")
    p.add_argument("--timings", default="ctc transducer uniform",
                   help="space-separated: ctc, transducer, uniform (a baseline: the transducer path's words "
                   "spread evenly over the audio, to put the figures in context)")
    p.add_argument("--method", default="greedy", choices=("greedy", "beam"))
    p.add_argument("--json", default="", help="write the table as JSON here too")
    a = p.parse_args(argv)
    truth = read_ctm(a.truth)
    audio = test_audio(Path(a.corpus), a.split)
    utts = [u for u in audio if u in truth]
    if not utts:
        raise SystemExit(f"{a.truth}: no utterance of {a.corpus}/*/{a.split}")
    gaps = [abs(truth[u][-1][0] + truth[u][-1][1] - audio[u][1]) for u in utts if audio[u][1] is not None]
    print(f"{len(utts)} utterances, {sum(len(truth[u]) for u in utts)} reference words; truth check: "
          f"last word's end <= segments.txt end for {sum(truth[u][-1][0] + truth[u][-1][1] <= audio[u][1] + 0.005 for u in utts)}"
          f"/{len(utts)} (the gap is the trailing silence: mean {np.mean(gaps):.3f} s)")
    rows = []
    print("| timing | method | words | matched | mean abs (s) | median abs (s) | <=0.1 s | <=0.2 s | <=0.5 s | "
          "mean signed (s) | conf matched | conf wrong | seconds |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for timing in a.timings.split():
        s2t = Speech2Text.from_dir(a.model_dir, method=a.method, timing="transducer" if timing == "uniform" else timing)
        errs, ok, bad, n_hyp, sources = [], [], [], 0, set()
        t0 = time.perf_counter()
        for u in utts:
            x, sr = sf.read(str(audio[u][0]), dtype="float32")
            r = s2t.transcribe([(x, sr)], [u])[0]
            sources.add(r.timing)
            if timing == "uniform":
                dur = len(x) / sr
                r.words = [replace(w, start=dur * k / len(r.words)) for k, w in enumerate(r.words)]
            e, c1, c2 = compare(r.words, truth[u])
            errs += e
            ok += c1
            bad += c2
            n_hyp += len(r.words)
        secs = time.perf_counter() - t0
        ae = np.abs(errs)
        row = {"timing": timing, "sources": sorted(sources), "method": a.method, "hyp_words": n_hyp,
               "matched": len(errs), "mean_abs": float(ae.mean()), "median_abs": float(np.median(ae)),
               "within_0.1": float((ae <= 0.1).mean()), "within_0.2": float((ae <= 0.2).mean()),
               "within_0.5": float((ae <= 0.5).mean()), "mean_signed": float(np.mean(errs)),
               "conf_matched": float(np.mean(ok)) if ok else None,
               "conf_wrong": float(np.mean(bad)) if bad else None, "seconds": secs}
        rows.append(row)
        print(f"| {timing} | {a.method} | {n_hyp} | {len(errs)} | {row['mean_abs']:.3f} | {row['median_abs']:.3f} | "
              f"{100 * row['within_0.1']:.1f}% | {100 * row['within_0.2']:.1f}% | {100 * row['within_0.5']:.1f}% | "
              f"{row['mean_signed']:+.3f} | {row['conf_matched'] or 0:.3f} | {row['conf_wrong'] or 0:.3f} | {secs:.1f} |")
    if a.json:
        Path(a.json).write_text(json.dumps({"model_dir": a.model_dir, "truth": a.truth, "utterances": len(utts),
                                            "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
