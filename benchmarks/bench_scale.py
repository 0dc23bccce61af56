#!/usr/bin/env python3
"""The data path at Multilingual LibriSpeech's size, simulated: stage 1, packing, a training
rank's manifest and epoch plan, and the disk each feature option needs.

    tools/venv/bin/python benchmarks/bench_scale.py --fraction 0.01 0.1 1 --json benchmarks/results/scale.json

For each fraction F the benchmark writes an MLS-layout tree in ``--workdir`` with F times MLS's
utterance counts per language and split (Pratap et al., 2020, Table 1: English 10,808,037
training utterances, 44,659.74 h; Polish 25,043, 103.65 h; ...), limited-supervision lists,
``metainfo.txt`` and ``segments.txt`` -- but no audio files: stage 1 runs with
``audio_checks=False`` (durations from segments.txt, as a user with 11M files would). Segment
durations are drawn around each language's mean (train hours / utterances, 14.9 s for
English) with sd 2.5 s, clipped to MLS's 10-20 s; transcripts are sentences of the embedded
mini corpus's words, ~2.7 words per second of the mean duration.

Then, each in its own process (time = wall time, start-up included; peak RSS = that process's VmHWM):
  stage1       ``justkit.corpora.prepare_mls.prepare``: data/{train,dev,test}_<lang>, subsets, data/train
  tables3      simulation scaffolding, not a stage: the tables stage 3 would write for data/train
               (feats.scp pointing into arks that are not written, utt2num_frames from utt2dur)
  stage4       ``train_tokenizer_on_data_dir`` on data/train: 256 pieces from 20k drawn transcripts,
               every transcript checked to round-trip (above --stage4_max_fraction, ``stage4_dev``:
               the same on data/dev, only to have a tokenizer for stage 5)
  stage5       ``iter_examples`` -> ``write_packed``: dump/packed/train.jsonl and its index
  rank         what a training rank does before its first batch: map the index, build the
               sampler (language pools, buckets) and plan one epoch; ``plan_s`` is the plan alone
               (measured on the next epoch); ``manifest_mb`` = peak RSS - RSS after the imports
               (the mapped index's pages included: they are shared by the ranks of a node)
  dicts        (F <= 0.1 only) the same manifest as a list of dicts, as the loader held it before
               the index: its memory per utterance
The disk rows project the features of the generated hours with benchmarks/results/features.json
(MB per audio hour of each storage, measured on the mini corpus) and give the sizes measured here.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MINI = ROOT / "tools" / "mini_mls" / "corpus"
FEATURES = ROOT / "benchmarks" / "results" / "features.json"
# MLS (Pratap et al., 2020, Table 1 and the release READMEs): utterances and hours of train,
# utterances of dev/test, training speakers, 9h / 1h limited-supervision utterances.
MLS = {
    #     train utts  train h    dev   test  spk   9h    1h
    "en": (10808037, 44659.74, 3807, 3769, 5490, 2200, 240),
    "de": (469942, 1966.51, 3469, 3394, 176, 2194, 241),
    "nl": (374287, 1554.24, 3095, 3075, 40, 2153, 234),
    "fr": (258213, 1076.58, 2416, 2426, 142, 2167, 241),
    "es": (220701, 917.68, 2408, 2385, 86, 2110, 233),
    "it": (59623, 247.38, 1248, 1262, 65, 2173, 240),
    "pt": (37533, 160.96, 826, 871, 42, 2116, 236),
    "pl": (25043, 103.65, 512, 520, 11, 2173, 238),
}
WORDS_PER_SEC = 2.7


# -- the simulated release ------------------------------------------------------------------------
def words_of(lang: str) -> list:
    from justkit.corpora.mls import lang_name

    words = set()
    for split in ("train", "dev", "test"):
        path = MINI / f"mls_{lang_name(lang)}_opus" / split / "transcripts.txt"
        for line in path.read_text(encoding="utf-8").splitlines():
            words.update(line.split("\t", 1)[1].split())
    return sorted(words)


def write_split(d: Path, lang: str, split: str, n: int, mean_dur: float, n_spk: int,
                rng: np.random.Generator) -> np.ndarray:
    """transcripts.txt + segments.txt of ``n`` utterances in random order; returns the MLS ids."""
    d.mkdir(parents=True, exist_ok=True)
    words = np.array(words_of(lang), dtype=object)
    lens = np.clip(rng.normal(mean_dur * WORDS_PER_SEC, 6, size=4096), 5, 60).astype(int)
    pool = [" ".join(words[rng.integers(len(words), size=k)]) for k in lens]
    spk = rng.integers(n_spk, size=n)
    by_spk = np.argsort(spk, kind="stable")
    rank = np.empty(n, np.int64)  # each utterance's number within its speaker
    starts = np.searchsorted(spk[by_spk], np.arange(n_spk))
    rank[by_spk] = np.arange(n) - np.repeat(starts, np.bincount(spk, minlength=n_spk))
    book = 1000 + rank // 400
    ids = np.array([f"{10000 + s}_{b}_{r % 400:06d}" for s, b, r in zip(spk.tolist(), book.tolist(), rank.tolist())])
    ids = ids[rng.permutation(n)]
    dur = np.clip(rng.normal(mean_dur, 2.5, size=n), 10.0, 20.0)
    text = rng.integers(len(pool), size=n)
    with open(d / "transcripts.txt", "w", encoding="utf-8") as t, open(d / "segments.txt", "w") as s:
        for chunk in range(0, n, 100000):
            sl = slice(chunk, chunk + 100000)
            t.write("".join(f"{i}\t{pool[k]}\n" for i, k in zip(ids[sl].tolist(), text[sl].tolist())))
            s.write("".join(f"{i}\thttp://example.org/{lang}/{i.split('_')[1]}.mp3\t0.00\t{x:.2f}\n"
                            for i, x in zip(ids[sl].tolist(), dur[sl].tolist())))
    return ids


def generate(root: Path, fraction: float, seed: int = 0) -> dict:
    from justkit.corpora.mls import lang_name

    rng = np.random.default_rng(seed)
    facts = {"utts": 0, "hours": 0.0}
    for lang, (n_tr, hours, n_dev, n_test, n_spk, n9, n1) in MLS.items():
        base = root / f"mls_{lang_name(lang)}_opus"
        mean = hours * 3600 / n_tr
        sizes = {"train": max(200, round(n_tr * fraction)), "dev": max(20, round(n_dev * fraction)),
                 "test": max(20, round(n_test * fraction))}
        for split, n in sizes.items():
            ids = write_split(base / split, lang, split, n, mean, n_spk, rng)
            facts["utts"] += n
            if split == "train":
                facts["hours"] += n * mean / 3600
                ls = base / "train" / "limited_supervision"
                pick = rng.permutation(ids)
                k9, k1 = max(10, round(n9 * fraction)), max(6, round(n1 * fraction))
                (ls / "9hr").mkdir(parents=True, exist_ok=True)
                (ls / "9hr" / "handles.txt").write_text("".join(f"{i}\n" for i in pick[:k9]))
                for fold in range(6):
                    f = ls / "1hr" / str(fold)
                    f.mkdir(parents=True, exist_ok=True)
                    part = pick[fold * k1 // 6:(fold + 1) * k1 // 6]
                    f.joinpath("handles.txt").write_text("".join(f"{i}\n" for i in part))
        rows = [" SPEAKER   |   GENDER   | PARTITION  |  MINUTES   |  BOOK ID   |   TITLE   |   CHAPTER   "]
        rows += [f"{10000 + s:>9d}  |     {'MF'[s % 2]}      |   train    |     1.000  |      1000  |  t  |  c"
                 for s in range(n_spk)]
        (base / "metainfo.txt").write_text("\n".join(rows) + "\n")
    return facts


# -- the steps, each run in a child process ---------------------------------------------------------
def step_stage1(w: Path) -> dict:
    from justkit.corpora.prepare_mls import PrepareConfig, prepare

    counts = prepare(PrepareConfig(mls_root=str(w / "mls"), out=str(w / "data"), audio_checks=False))
    return {"utts": counts["train"] + sum(v for k, v in counts.items() if k.startswith(("dev_", "test_"))),
            "bytes": dir_bytes(w / "data")}


def step_tables3(w: Path) -> dict:
    """dump/fbank/train tables as stage 3 would write them, streaming (no features computed)."""
    from justkit.frontend.fbank import FbankConfig, num_frames

    src, dst = w / "data" / "train", w / "dump" / "fbank" / "train"
    dst.mkdir(parents=True, exist_ok=True)
    cfg = FbankConfig()
    n = 0
    offset = 0
    with open(src / "utt2dur", encoding="utf-8") as durs, open(dst / "feats.scp", "w") as scp, \
            open(dst / "utt2num_frames", "w") as nf:
        for line in durs:
            utt, dur = line.split()
            frames = num_frames(int(round(float(dur) * cfg.sample_frequency)), cfg)
            job = n // 500000 + 1
            scp.write(f"{utt} dump/fbank/train/data/feats.{job}.ark:{offset + len(utt) + 1}\n")
            nf.write(f"{utt} {frames}\n")
            offset += len(utt) + 16 + frames * cfg.dim * 4
            n += 1
    for name in ("text", "utt2lang", "utt2spk"):
        shutil.copyfile(src / name, dst / name)
    return {"utts": n}


def step_stage4(w: Path, split: str = "train") -> dict:
    """Stage 4 as run.sh runs it, with a small vocabulary (256 pieces on 20k drawn transcripts;
    the paper config's 16384 on 3M takes sentencepiece itself far longer and several GB)."""
    from justkit.text.tokenizer import TokenizerConfig, train_tokenizer_on_data_dir

    d = w / "data" / split
    train_tokenizer_on_data_dir(d / "text", d / "utt2lang", w / "token",
                                TokenizerConfig(vocab_size=256, num_sentences=20000, lang_alpha=0.3, num_threads=1))
    return {}


def step_stage5(w: Path) -> dict:
    from justkit.data.pack import iter_examples, write_packed
    from justkit.text.tokenizer import Tokenizer

    out = w / "dump" / "packed" / "train.jsonl"
    n = write_packed(iter_examples(w / "dump" / "fbank" / "train", Tokenizer(w / "token" / "spm.model")), out)
    npy, meta = (out.with_name(out.name + s) for s in (".idx.npy", ".idx.json"))
    return {"utts": n, "jsonl_bytes": out.stat().st_size, "index_bytes": npy.stat().st_size + meta.stat().st_size}


def step_rank(w: Path) -> dict:
    import numba  # noqa: F401 (the epoch plan's cut)

    from justkit.data.manifest import PackedIndex
    from justkit.data.sampler import BucketBatchSampler

    base = vm_mb("VmRSS")  # after the imports: what the manifest and the plan add is the rest
    t0 = time.perf_counter()
    idx = PackedIndex.open(w / "dump" / "packed" / "train.jsonl")
    t_open = time.perf_counter() - t0
    s = BucketBatchSampler(idx.lengths, idx.lang_codes, lang_names=idx.lang_names, labelled=idx.labelled,
                           max_frames=60000, num_buckets=30, lang_alpha=0.5, seed=0, rank=3, world_size=64)
    s.epoch_batches(0)
    t_first = time.perf_counter() - t0
    t1 = time.perf_counter()
    plan = s.epoch_batches(1)
    return {"utts": len(idx), "open_s": t_open, "first_plan_s": t_first, "plan_s": time.perf_counter() - t1,
            "rank_batches": len(plan), "padding": plan.padding_fraction(), "manifest_mb": vm_mb("VmHWM") - base}


def step_dicts(w: Path) -> dict:
    """The manifest as the loader held it before the index: every line parsed into a dict."""
    base = vm_mb("VmRSS")
    with open(w / "dump" / "packed" / "train.jsonl", encoding="utf-8") as f:
        entries = [json.loads(line) for line in f]
    return {"utts": len(entries), "manifest_mb": vm_mb("VmHWM") - base}


STEPS = {"stage1": step_stage1, "tables3": step_tables3, "stage4": step_stage4, "stage4_dev": lambda w: step_stage4(w, "dev"), "stage5": step_stage5,
         "rank": step_rank, "dicts": step_dicts}


def vm_mb(field: str = "VmHWM") -> float:
    """This process's peak (VmHWM) or current (VmRSS) resident memory, MB; the peak counts from
    the exec (ru_maxrss would also count the parent's memory copied by fork before it)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def dir_bytes(d: Path) -> int:
    return sum(f.stat().st_size for f in d.rglob("*") if f.is_file())


def run_step(name: str, w: Path) -> dict:
    """Run one step in a child process; its wall time, peak RSS and what it reports."""
    out = w / f".{name}.json"
    cmd = [sys.executable, __file__, "--_step", name, "--workdir", str(w)]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1")
    t0 = time.perf_counter()
    status = subprocess.call(cmd, env=env)
    secs = time.perf_counter() - t0
    if status != 0:
        raise SystemExit(f"bench_scale: step {name} failed (exit status {status}); see its output above")
    rec = json.loads(out.read_text())
    rec.update(step=name, seconds=secs)
    return rec


def feature_projection(hours: float) -> list:
    """(option, MB of features per audio hour, projected GB, note) for each stored-feature storage
    and for features on the fly (``--feats_type raw``), from benchmarks/results/features.json."""
    rows, seen = [], set()
    if FEATURES.is_file():
        for r in json.loads(FEATURES.read_text()):
            st = r.get("storage")
            if st is None or "mb_per_hour" not in r or st in seen:
                continue
            seen.add(st)
            if st == "on_the_fly_flac":
                flac = r.get("audio_mb_per_hour", 0.0)
                rows.append(("raw", 0.0, 0.0, f"no features; the loader reads stage 2's FLAC ({flac:.0f} MB per "
                                              f"audio hour on the mini corpus -> {hours * flac / 1024:.0f} GB)"))
            elif not st.startswith("on_the_fly"):
                rows.append((st, r["mb_per_hour"], hours * r["mb_per_hour"] / 1024, ""))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fraction", type=float, nargs="+", default=[0.01], help="sizes, as fractions of MLS")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/justkit_bench_scale"),
                   help="scratch dir (~25 GB at fraction 1); removed at the end unless --keep")
    p.add_argument("--json", type=Path, help="write one record per (fraction, step) here")
    p.add_argument("--keep", action="store_true", help="keep the workdir")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stage4_max_fraction", type=float, default=0.1,
                   help="above this size the tokenizer for stage 5 is trained on data/dev instead "
                   "(stage 4 grows linearly: see the smaller fractions)")
    p.add_argument("--_step", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a._step:
        rec = STEPS[a._step](a.workdir)
        rec["peak_rss_mb"] = vm_mb("VmHWM")
        (a.workdir / f".{a._step}.json").write_text(json.dumps(rec))
        return

    records = []
    for frac in a.fraction:
        w = a.workdir / f"f{frac:g}"
        if w.exists():
            shutil.rmtree(w)
        w.mkdir(parents=True)
        t0 = time.perf_counter()
        facts = generate(w / "mls", frac, a.seed)
        print(f"fraction {frac:g}: generated {facts['utts']} utterances, {facts['hours']:.0f} h of training "
              f"audio in {time.perf_counter() - t0:.0f} s", flush=True)
        stage4 = "stage4" if frac <= a.stage4_max_fraction else "stage4_dev"
        steps = ["stage1", stage4, "tables3", "stage5", "rank"]
        if frac <= 0.1:
            steps.append("dicts")
        recs = {}
        for name in steps:
            rec = run_step(name, w)
            rec.update(fraction=frac)
            recs[name] = rec
            print(f"  {name:14s} {rec['seconds']:8.1f} s  peak RSS {rec['peak_rss_mb']:8.0f} MB", flush=True)
        for storage, mbh, gb, note in feature_projection(facts["hours"]):
            recs[f"disk_{storage}"] = {"step": f"disk_{storage}", "fraction": frac, "mb_per_hour": mbh, "gb": gb,
                                      "seconds": 0.0, "peak_rss_mb": 0.0, "note": note}
        for r in recs.values():
            r.setdefault("hours", facts["hours"])
        records.extend(recs.values())
        if not a.keep:
            shutil.rmtree(w)
    print_table(records)
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(records, indent=1) + "\n")


def print_table(records: list) -> None:
    print("\n| fraction | train utts | train h | step | seconds | peak RSS MB | notes |")
    print("|---:|---:|---:|---|---:|---:|---|")
    utts = {r["fraction"]: r.get("utts") for r in records if r["step"] == "rank"}
    for r in records:
        notes = ""
        if r["step"] == "stage1":
            notes = f"data/: {r['bytes'] / 2**30:.2f} GiB"
        elif r["step"] == "stage5":
            notes = f"jsonl {r['jsonl_bytes'] / 2**30:.2f} GiB, index {r['index_bytes'] / 2**20:.0f} MiB"
        elif r["step"] == "rank":
            notes = (f"manifest {r['manifest_mb']:.0f} MB ({r['manifest_mb'] * 2**20 / r['utts']:.0f} B/utt); "
                     f"open {r['open_s']:.2f} s, first plan {r['first_plan_s']:.1f} s, epoch plan "
                     f"{r['plan_s']:.2f} s; {r['rank_batches']} batches on rank 3/64, padding "
                     f"{100 * r['padding']:.1f}%")
        elif r["step"] == "dicts":
            notes = f"list of dicts: {r['manifest_mb']:.0f} MB ({r['manifest_mb'] * 2**20 / r['utts']:.0f} B/utt)"
        elif r["step"].startswith("disk_"):
            notes = r.get("note") or f"{r['mb_per_hour']:.1f} MB per audio hour -> {r['gb']:.0f} GB of features"
        secs = f"{r['seconds']:.1f}" if not r["step"].startswith("disk_") else ""
        rss = f"{r['peak_rss_mb']:.0f}" if not r["step"].startswith("disk_") else ""
        print(f"| {r['fraction']:g} | {utts.get(r['fraction']) or ''} | {r['hours']:.0f} | {r['step']} | {secs} | "
              f"{rss} | {notes} |")


if __name__ == "__main__":
    main()
