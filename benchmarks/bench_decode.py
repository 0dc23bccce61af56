"""Decoding speed: greedy vs Graves beam vs modified beam search, batched and one by one; prints a table.

    tools/venv/bin/python benchmarks/bench_decode.py                     # mini model, random weights
    tools/venv/bin/python benchmarks/bench_decode.py --lm                # + each beam search with an LSTM LM
                                                                         # fused (and ILM, and n-best rescoring)
    cd egs/mini_enpl && ../../tools/venv/bin/python ../../benchmarks/bench_decode.py \
        --model exp/smoke/model_avg.pt --packed dump/packed/test_en.jsonl --cmvn dump/fbank/train/cmvn.ark

RTF = search wall time (encoder included) / audio duration (frames x 10 ms). Random
weights emit many labels, a trained model mostly blanks: the two load the searches differently.
With ``--lm`` (a random LSTM LM of ``egs/mls/conf/lm/lstm_mini.yaml``'s size, or ``--lm_dir``) the
fused rows run in the same process right after the plain ones, so the two sides share the machine.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import yaml

from justkit.data.loader import Collate
from justkit.decode.beam import BeamConfig, beam_search
from justkit.decode.greedy import GreedyConfig, greedy_search

ROOT = Path(__file__).resolve().parents[1]


def load(args):
    if args.model:
        from justkit.data.dataset import PackedDataset
        from justkit.models.factory import load_model

        model, _ = load_model(args.model, args.device)
        ds = PackedDataset(args.packed, cmvn=args.cmvn)
        items = [ds[i] for i in range(min(len(ds), args.num))]
        batch = Collate()(items)
        return model, batch["feats"], batch["feat_lens"]
    from justkit.losses.terms import LossConfig
    from justkit.models.just import JUSTConfig, JUSTModel

    y = yaml.safe_load((ROOT / "egs/mls/conf/model/mini.yaml").read_text())
    cfg = y["model"]
    cfg.update(mode="supervised", vocab_size=256)
    torch.manual_seed(0)
    model = JUSTModel(JUSTConfig.from_dict(cfg), LossConfig.from_dict(y.get("loss"))).to(args.device).eval()
    lens = torch.randint(200, 600, (args.num,))
    feats = torch.randn(args.num, int(lens.max()), 80)
    return model, feats, lens


def run(model, feats, lens, search, batch: bool, device) -> float:
    t0 = time.perf_counter()
    with torch.no_grad():
        if batch:
            enc, el = model.encode(feats.to(device), lens.to(device))
            search(model, enc, el)
        else:
            for i in range(len(lens)):
                enc, el = model.encode(feats[i : i + 1, : lens[i]].to(device), lens[i : i + 1].to(device))
                search(model, enc, el)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def load_lm(args, vocab_size: int):
    from justkit.models.lm import LMConfig, TokenLM, load_lm as load

    if args.lm_dir:
        return load(args.lm_dir, args.device, vocab_size=vocab_size)[0]
    cfg = yaml.safe_load((ROOT / "egs/mls/conf/lm/lstm_mini.yaml").read_text())["model"]
    cfg.update(vocab_size=vocab_size)
    torch.manual_seed(1)
    return TokenLM(LMConfig(**cfg)).to(args.device).eval()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model")
    p.add_argument("--packed")
    p.add_argument("--cmvn")
    p.add_argument("--num", type=int, default=16, help="utterances")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--lm", action="store_true", help="also time each beam search with an LM fused")
    p.add_argument("--lm_dir", default="", help="a trained LM (exp/lm_<tag>) instead of a random one")
    p.add_argument("--lm_weight", type=float, default=0.3)
    p.add_argument("--ilm_weight", type=float, default=0.1)
    p.add_argument("--json", default="", help="also write the rows here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model, feats, lens = load(args)
    audio = float(lens.sum()) * 0.01
    searches = {
        "greedy (max 3 sym/frame)": lambda m, e, l: greedy_search(m, e, l, GreedyConfig(3)),
        "beam graves, beam 4": lambda m, e, l: beam_search(m, e, l, BeamConfig(4, algorithm="graves")),
        "beam modified, beam 4": lambda m, e, l: beam_search(m, e, l, BeamConfig(4, algorithm="modified")),
    }
    print(f"{len(lens)} utterances, {audio:.1f} s of audio, device {device}, {args.threads} thread(s)")
    print(f"| {'search':34s} | {'batched':8s} | {'wall s':>7s} | {'RTF':>7s} |")
    print(f"|{'-' * 36}|{'-' * 10}|{'-' * 9}|{'-' * 9}|")
    run(model, feats[:1, : lens[0]], lens[:1], searches["greedy (max 3 sym/frame)"], True, device)  # warm-up
    batch_modes = {name: (True, False) for name in searches}
    if args.lm or args.lm_dir:
        from justkit.decode.fusion import Fusion, rescore_nbest

        lm = load_lm(args, model.cfg.vocab_size)
        w, iw = args.lm_weight, args.ilm_weight
        for algo in ("graves", "modified"):
            bc = BeamConfig(4, algorithm=algo)
            wide = BeamConfig(4, nbest=4, algorithm=algo)
            extra = {
                f"beam {algo} + LM {w:g}": lambda m, e, l, bc=bc: beam_search(m, e, l, bc, Fusion(lm, w)),
                f"beam {algo} + LM - ILM {iw:g}": lambda m, e, l, bc=bc: beam_search(m, e, l, bc, Fusion(lm, w, iw)),
                f"beam {algo} + n-best rescore": lambda m, e, l, wide=wide: rescore_nbest(
                    m, beam_search(m, e, l, wide), Fusion(lm, w)),
            }
            searches.update(extra)
            batch_modes.update({name: (True,) for name in extra})
    rows = []
    for name, fn in searches.items():
        for batched in batch_modes[name]:
            s = run(model, feats, lens, fn, batched, device)
            rows.append({"search": name, "batched": batched, "wall_s": round(s, 3), "rtf": round(s / audio, 5)})
            print(f"| {name:34s} | {str(batched):8s} | {s:7.2f} | {s / audio:7.4f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"utterances": len(lens), "audio_s": audio, "device": str(device),
                                               "threads": args.threads, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
