#!/usr/bin/env bash
# What the quantizer should read (docs/training.md, "The quantizer's input"): short JUST runs of
# conf/paper_mini/just.yaml (paper_mini's data: run local/paper_mini.sh --stop_stage 2 first), one
# per variant, one thread each, then a table of the target statistics (train.csv, the last log
# interval), the codebook use and the dev loss / greedy WER at the end. Variants (name=overrides):
#   legacy         input proj, no LayerNorm (justkit before 2026-12, but reading pre-dropout features)
#   proj_ln        input proj + LayerNorm
#   features_ln    input features (before the projection) + LayerNorm      <- the default input
#   features_ln_default_init   as features_ln with PyTorch's Linear init instead of N(0, 1)
#   features_ln_wdiv0.3, ..._wdiv1.0   features_ln with loss.w_div 0.3 / 1.0 (0.3 is conf/model/mini.yaml's)
#   proj_ln_wdivX, legacy_wdivX        those inputs with loss.w_div X
# Variants without a _wdiv suffix use wav2vec 2.0's w_div 0.1.
#   local/quantizer_input.sh [--steps 300] [--jobs 2] [--seed 0] [--variants "legacy features_ln"]
set -euo pipefail
cd "$(dirname "$0")/.."

steps=300
jobs=2
seed=0
exp=exp_quantizer_input
variants="legacy proj_ln features_ln features_ln_default_init features_ln_wdiv0.3 features_ln_wdiv1.0"
help_message="Usage: $0 [--steps 300] [--jobs 2] [--seed 0] [--exp DIR] [--variants '...']"
. utils/parse_options.sh
. ./path.sh

opts_of() {
  case $1 in
    legacy) echo "--model.quantizer.input proj --model.quantizer.input_norm false --loss.w_div 0.1" ;;
    proj_ln) echo "--model.quantizer.input proj --model.quantizer.input_norm true --loss.w_div 0.1" ;;
    features_ln) echo "--model.quantizer.input features --model.quantizer.input_norm true --loss.w_div 0.1" ;;
    features_ln_default_init) echo "--model.quantizer.input features --model.quantizer.init default --loss.w_div 0.1" ;;
    features_ln_wdiv*) echo "--model.quantizer.input features --loss.w_div ${1#features_ln_wdiv}" ;;
    proj_ln_wdiv*) echo "--model.quantizer.input proj --model.quantizer.input_norm true --loss.w_div ${1#proj_ln_wdiv}" ;;
    legacy_wdiv*) echo "--model.quantizer.input proj --model.quantizer.input_norm false --loss.w_div ${1#legacy_wdiv}" ;;
    *) echo "$0: unknown variant $1" >&2; return 2 ;;
  esac
}

packed=dump/packed_paper_mini
run_one() {
  local v=$1 dir=$exp/$1
  local opts
  opts=$(opts_of "$v")
  mkdir -p "$dir/log"
  # shellcheck disable=SC2086  # opts is a list of options
  OMP_NUM_THREADS=1 python -m justkit.bin.train --config conf/paper_mini/just.yaml --exp "$dir" \
    --train_data $packed/train_all.jsonl --dev_data $packed/dev.jsonl --tokenizer data/token_paper_mini/spm.model \
    --cmvn dump/fbank/train/cmvn.ark --feats_dir dump/fbank/train --train.max_steps "$steps" --train.max_epochs 0 \
    --train.log_interval 50 --train.save_interval 0 --train.seed "$seed" --data.seed "$seed" \
    --train.num_threads 1 --train.plots false --train.dev_wer_max_utts 10 $opts > "$dir/log/train.log" 2>&1
}

echo "At initialisation (seed $seed, the first training batch of epoch 0, training mode):"
echo "| variant | code_entropy (ln V = 4.852) | code_agreement | codebook_perplexity |"
echo "|---|---|---|---|"
for v in $variants; do
  # shellcheck disable=SC2046  # the variant's options, word-split on purpose
  OMP_NUM_THREADS=1 python - "$v" "$seed" $(opts_of "$v") <<'PY'
import sys
import torch
from justkit.experiment import Experiment
from justkit.train.asr import ASRTask
from justkit.train.dev import seed_everything
from justkit.train.distributed import DistInfo
name, seed, opts = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
p = "dump/packed_paper_mini"
exp = Experiment.resolve("conf/paper_mini/just.yaml", opts + ["--train.seed", str(seed), "--data.seed", str(seed)],
                         {"train": f"{p}/train_all.jsonl", "tokenizer": "data/token_paper_mini/spm.model",
                          "cmvn": "dump/fbank/train/cmvn.ark", "features": "dump/fbank/train"})
task = ASRTask(exp)
seed_everything(seed)
model = task.build_model().train()
batch = next(iter(task.train_loader(DistInfo(), False)))
task.batch_frames(batch)
with torch.no_grad():
    out = model(task.to_device(batch, torch.device("cpu")), step=0)
print(f"| {name} | {float(out['code_entropy']):.3f} | {float(out['code_agreement']):.3f} | "
      f"{float(out['codebook_perplexity']):.1f} |")
PY
done
for v in $variants; do
  opts_of "$v" > /dev/null
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n; done
  echo "$(date '+%F %T') $v: $(opts_of "$v")"
  run_one "$v" &
done
wait
python - "$exp" $variants <<'PY'
import csv, sys
exp, variants = sys.argv[1], sys.argv[2:]
cols = ["code_entropy", "code_agreement", "codebook_perplexity", "contrastive_acc", "mlm_acc"]
print(f"| variant | step | " + " | ".join(cols) + " | dev loss | dev rnnt | dev codebook ppl | dev greedy WER |")
print("|---" * (len(cols) + 6) + "|")
for v in variants:
    rows = list(csv.DictReader(open(f"{exp}/{v}/train.csv")))
    tr = [r for r in rows if r["split"] == "train"][-1]
    dv = [r for r in rows if r["split"] == "dev"][-1]
    f = lambda r, k: f"{float(r[k]):.3f}" if r.get(k) else "-"
    print(f"| {v} | {tr['step']} | " + " | ".join(f(tr, c) for c in cols)
          + f" | {f(dv, 'loss')} | {f(dv, 'rnnt')} | {f(dv, 'codebook_perplexity')} | {f(dv, 'dev_wer')} |")
PY
