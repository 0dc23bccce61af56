#!/usr/bin/env python3
"""How much do the encoders of several experiments know? A linear CTC probe on frozen encoders.

For each experiment (its model_avg.pt, any mode, pre-training included), the encoder output of
every labelled training utterance is computed once (eval mode, no masking); a linear layer
over the word pieces is trained with CTC on those frozen frames, then greedy CTC decoding of
the dev set is scored (CER and WER, mean over languages). A random-initialised encoder of the
same config is the floor. Used by docs/paper_mini.md to see whether the unsupervised terms
made the shared encoder more (linearly) useful for recognition.

  local/probe_encoder.py --train dump/packed_paper_mini/train.jsonl --dev dump/packed_paper_mini/dev.jsonl \\
      --tokenizer data/token_paper_mini/spm.model --cmvn dump/fbank/train/cmvn.ark \\
      --out results/probe.json exp_paper_mini/supervised_s0 exp_paper_mini/pretrain_s0 ...
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # justkit of this checkout

from justkit.data.dataset import PackedDataset  # noqa: E402
from justkit.fileio import atomic_write_text  # noqa: E402
from justkit.models.factory import load_model, model_from_config  # noqa: E402
from justkit.score.wer import score_tables  # noqa: E402
from justkit.text.tokenizer import Tokenizer  # noqa: E402


@torch.no_grad()
def encode_all(model, ds: PackedDataset, labelled_only: bool) -> list:
    out = []
    for i, e in enumerate(ds.entries):
        if labelled_only and not e["labelled"]:
            continue
        x = torch.from_numpy(ds.load_feats(i))[None]
        enc, lens = model.encode(x, torch.tensor([x.shape[1]]))
        out.append((e, enc[0, : int(lens[0])].clone()))
    return out


def probe(model, train: PackedDataset, dev: PackedDataset, tok: Tokenizer, epochs: int, seed: int) -> dict:
    model.eval()
    tr = encode_all(model, train, labelled_only=True)
    dv = encode_all(model, dev, labelled_only=False)
    d = tr[0][1].shape[1]
    torch.manual_seed(seed)
    head = torch.nn.Linear(d, tok.vocab_size)
    opt = torch.optim.Adam(head.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(tr), generator=g).split(16):
            feats = [tr[i][1] for i in idx.tolist()]
            toks = [torch.tensor(tr[i][0]["tokens"]) for i in idx.tolist()]
            x = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True)
            logp = head(x).log_softmax(-1).transpose(0, 1)
            loss = F.ctc_loss(logp, torch.cat(toks), torch.tensor([len(f) for f in feats]),
                              torch.tensor([len(t) for t in toks]), blank=0, reduction="sum", zero_infinity=True)
            opt.zero_grad()
            (loss / sum(len(f) for f in feats)).backward()
            opt.step()
    hyps = {}
    with torch.no_grad():
        for e, f in dv:
            best = head(f).argmax(-1).tolist()
            ids = [t for j, t in enumerate(best) if t != 0 and (j == 0 or t != best[j - 1])]
            hyps[e["utt"]] = tok.decode(ids)
    res = score_tables({e["utt"]: e["text"] for e, _ in dv}, hyps, {e["utt"]: e["lang"] for e, _ in dv})
    by_lang: dict = {}
    for u in res.utts:
        by_lang.setdefault(u.lang, []).append(u)
    wer = {l: 100 * sum(u.errors for u in us) / max(sum(len(u.ref) for u in us), 1) for l, us in by_lang.items()}
    cer = {l: 100 * sum(u.char_errors for u in us) / max(sum(u.char_ref for u in us), 1) for l, us in by_lang.items()}
    return {"wer": sum(wer.values()) / len(wer), "cer": sum(cer.values()) / len(cer), "wer_by_lang": wer}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("exps", nargs="+", help="experiment dirs (their model_avg.pt)")
    p.add_argument("--train", required=True, help="packed training set (its labelled utterances train the probe)")
    p.add_argument("--dev", required=True, help="packed dev set (scored)")
    p.add_argument("--tokenizer", required=True, help="the experiments' sentencepiece model")
    p.add_argument("--cmvn", required=True, help="global CMVN stats")
    p.add_argument("--epochs", type=int, default=30, help="passes of the linear head over the labelled frames")
    p.add_argument("--seed", type=int, default=0, help="seed of the probe")
    p.add_argument("--random_init", default="", help="also probe a random encoder of this experiment's config")
    p.add_argument("--out", default="", help="write the results here as JSON")
    a = p.parse_args()
    torch.set_num_threads(1)
    tok = Tokenizer(a.tokenizer)
    train, dev = PackedDataset(a.train, cmvn=a.cmvn), PackedDataset(a.dev, cmvn=a.cmvn)
    results = {}
    todo = [(e, None) for e in a.exps] + ([("random_init", a.random_init)] if a.random_init else [])
    for name, src in todo:
        t0 = time.time()
        if src is None:
            model, _ = load_model(Path(name) / "model_avg.pt")
        else:
            _, cfg = load_model(Path(src) / "model_avg.pt")
            torch.manual_seed(a.seed)
            model = model_from_config(cfg)
        results[name] = probe(model, train, dev, tok, a.epochs, a.seed)
        print(f"{name}: dev CER {results[name]['cer']:.1f} WER {results[name]['wer']:.1f} "
              f"(linear CTC probe, {time.time() - t0:.0f} s)", flush=True)
    if a.out:
        atomic_write_text(a.out, json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
