"""ONNX Runtime vs PyTorch: real-time factor of the same greedy transcription, side by side; prints a table.

    tools/venv/bin/python benchmarks/bench_onnx.py                       # mini-size model, random weights
    tools/venv/bin/python benchmarks/bench_onnx.py --blank_bias 6        # ... emitting as sparsely as a trained one
    cd egs/mls && ../../tools/venv/bin/python ../../benchmarks/bench_onnx.py \
        --model_dir exp/train_just_mini/model --wav_scp data/test_pl/wav.scp

Both backends go through the same front door (``justkit.decode.transcribe.Transcriber``):
``Speech2Text.from_dir(dir)`` (PyTorch) and ``OnnxTransducer.from_dir(dir)`` (``dir/onnx`` under
ONNX Runtime), greedy search, the same audio, the same number of CPU threads (``torch.set_num_threads``
and ONNX Runtime's intra-op threads). Two timings per backend: ``audio`` = waveform -> text
(resampling and fbank included, the same code for both), ``search`` = features -> text (encoder and
greedy search, the part the backends do differently). Repetitions alternate the backends (torch,
onnx, torch, onnx, ...) so that both see the machine in the same state; the table gives the median
and the best RTF (wall time / audio duration) and ``torch/onnx`` = the ratio of the medians (> 1:
ONNX Runtime is faster). ``same text`` counts the utterances whose two transcripts are equal.

Without ``--model_dir`` a packed model is built in a temporary directory: ``egs/mls/conf/model/mini.yaml``'s
architecture with random weights (seed 0), a tokenizer of ``--vocab`` pieces trained on the test
transcripts, CMVN of the test audio, exported with ``pack_model --onnx``. Random weights emit a label
at most frames, which loads the prediction network and joiner (many small ONNX Runtime calls) far more
than a trained model does; ``--blank_bias B`` adds B to the blank logit to bring the emission rate
down to a trained model's (the table's ``tokens/s``).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tools/mini_mls/corpus"
LANG_DIRS = {"en": "english", "de": "german", "nl": "dutch", "es": "spanish", "fr": "french", "pt": "portuguese",
             "it": "italian", "pl": "polish"}


def mini_test_set(langs, num: int):
    """[(utt, path, text, lang)] of the embedded mini-MLS test sets (48 kHz opus), ``num`` per language."""
    out = []
    for lang in langs:
        d = CORPUS / f"mls_{LANG_DIRS[lang]}_opus/test"
        lines = (d / "transcripts.txt").read_text(encoding="utf-8").splitlines()[:num]
        for line in lines:
            utt, text = line.split("\t", 1)
            spk, book, _ = utt.split("_")
            out.append((utt, d / "audio" / spk / book / f"{utt}.opus", text, lang))
    return out


def build_packed(out: Path, items, vocab: int, blank_bias: float) -> Path:
    """A packed model dir (with onnx/) of the mini architecture, random weights (seed 0)."""
    from justkit.experiment import Experiment
    from justkit.fileio import atomic_torch_save
    from justkit.config import dump_yaml
    from justkit.frontend.audio import load_audio
    from justkit.frontend.cmvn import accumulate, write_cmvn
    from justkit.frontend.fbank import FbankConfig, compute_fbank
    from justkit.frontend.resample import resample
    from justkit.models.just import JUSTModel
    from justkit.models.package import pack_model
    from justkit.text.tokenizer import TokenizerConfig, train_tokenizer

    texts: dict = {}
    for utt, _, text, lang in items:
        texts.setdefault(lang, []).append((utt, text))
    tok = train_tokenizer(texts, out / "token", TokenizerConfig(vocab_size=vocab, hard_vocab_limit=False, model_type="bpe"))
    fb = FbankConfig()
    (out / "fbank/conf").mkdir(parents=True)
    dump_yaml({"fbank": fb.__dict__}, out / "fbank/conf/fbank.yaml")
    feats = []
    for utt, path, _, _ in items:
        x, sr = load_audio(path, utt)
        feats.append(compute_fbank(resample(x, sr, 16000), fb, 16000, utt))
    write_cmvn(out / "fbank/cmvn.ark", accumulate(feats))
    cfg = yaml.safe_load((ROOT / "egs/mls/conf/model/mini.yaml").read_text())
    cfg["model"].update(mode="supervised", vocab_size=tok.vocab_size)
    exp = Experiment.from_dict({"model": cfg["model"], "loss": cfg.get("loss") or {}, "train": {"max_steps": 1},
                                "paths": {"tokenizer": str(out / "token/spm.model"), "cmvn": str(out / "fbank/cmvn.ark"),
                                          "features": str(out / "fbank")}})
    torch.manual_seed(0)
    model = JUSTModel(exp.model, exp.loss)
    with torch.no_grad():
        model.joint.out.bias[0] += blank_bias
    exp.save(out / "exp")
    atomic_torch_save({"model": model.state_dict(), "config": exp.to_dict(), "step": 1, "epoch": 0},
                      out / "exp/model_avg.pt")
    return pack_model(out / "exp", out / "model", onnx=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_dir", default="", help="a packed model dir with onnx/ (default: a random mini model)")
    p.add_argument("--wav_scp", default="", help="audio to transcribe (default: the mini-MLS test sets of --langs)")
    p.add_argument("--langs", default="en pl", help="mini-MLS test sets (without --wav_scp)")
    p.add_argument("--num", type=int, default=18, help="utterances per language (without --wav_scp)")
    p.add_argument("--vocab", type=int, default=256, help="tokenizer size of the random model")
    p.add_argument("--blank_bias", type=float, default=0.0, help="added to the random model's blank logit")
    p.add_argument("--threads", type=int, default=1, help="CPU threads of both backends")
    p.add_argument("--batch_sizes", default="1 8", help="utterances decoded together (one row each)")
    p.add_argument("--reps", type=int, default=3, help="timed repetitions per backend (after one warm-up)")
    p.add_argument("--json", default="", help="also write the rows here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from justkit.datadir.tables import read_table
    from justkit.decode.transcribe import Speech2Text
    from justkit.frontend.audio import load_audio
    from justkit.models.onnx import OnnxTransducer

    if args.wav_scp:
        items = [(u, Path(pth), "", "") for u, pth in read_table(args.wav_scp).items()]
    else:
        items = mini_test_set(args.langs.split(), args.num)
    tmp = tempfile.TemporaryDirectory(prefix="bench_onnx_")
    model_dir = Path(args.model_dir) if args.model_dir else build_packed(Path(tmp.name), items, args.vocab, args.blank_bias)
    audio = [load_audio(pth, u) for u, pth, _, _ in items]
    names = [u for u, _, _, _ in items]
    seconds = sum(len(x) / sr for x, sr in audio)
    rows = []
    load = os.getloadavg()[0]
    print(f"{len(audio)} utterances, {seconds:.1f} s of audio; model {args.model_dir or 'mini, random weights'}"
          f"{f' (blank bias {args.blank_bias:g})' if not args.model_dir else ''}; {args.threads} thread(s); "
          f"{args.reps} reps; load average {load:.2f}")
    print("| batch | timed | torch RTF median (best) | onnx RTF median (best) | torch/onnx | same text | tokens/s |")
    print("|---|---|---|---|---|---|---|")
    for bs in (int(b) for b in args.batch_sizes.split()):
        backends = {"torch": Speech2Text.from_dir(model_dir, batch_size=bs),
                    "onnx": OnnxTransducer.from_dir(model_dir, threads=args.threads, batch_size=bs)}
        feats = {k: [b.features(x, sr, u) for (x, sr), u in zip(audio, names)] for k, b in backends.items()}
        # text only (timed=False): no word timings, which only the PyTorch backend aligns for
        jobs = {"audio": lambda b, k: b.transcribe(audio, names, timed=False),
                "search": lambda b, k: b.transcribe_features(feats[k], names, timed=False)}
        for what, job in jobs.items():
            times = {k: [] for k in backends}
            texts = {k: job(b, k) for k, b in backends.items()}     # warm-up (and the transcripts)
            for _ in range(args.reps):
                for k, b in backends.items():
                    t0 = time.perf_counter()
                    job(b, k)
                    times[k].append(time.perf_counter() - t0)
            rtf = {k: [t / seconds for t in v] for k, v in times.items()}
            med = {k: statistics.median(v) for k, v in rtf.items()}
            same = sum(a.text == b.text for a, b in zip(texts["torch"], texts["onnx"]))
            tps = sum(len(r.pieces) for r in texts["torch"]) / seconds
            row = {"batch_size": bs, "timed": what, "torch_rtf": rtf["torch"], "onnx_rtf": rtf["onnx"],
                   "torch_rtf_median": med["torch"], "onnx_rtf_median": med["onnx"],
                   "torch_over_onnx": med["torch"] / med["onnx"], "same_text": same, "utterances": len(audio),
                   "tokens_per_s": tps}
            rows.append(row)
            print(f"| {bs} | {what} | {med['torch']:.4f} ({min(rtf['torch']):.4f}) | {med['onnx']:.4f} "
                  f"({min(rtf['onnx']):.4f}) | {row['torch_over_onnx']:.2f} | {same}/{len(audio)} | {tps:.1f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "utterances": len(audio), "audio_s": seconds, "model_dir": args.model_dir, "blank_bias": args.blank_bias,
            "threads": args.threads, "reps": args.reps, "load_average_1min": load,
            "torch": torch.__version__, "onnxruntime": __import__("onnxruntime").__version__, "rows": rows},
            indent=1) + "\n")
    tmp.cleanup()


if __name__ == "__main__":
    main()
