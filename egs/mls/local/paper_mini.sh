#!/usr/bin/env bash
# The paper's comparison on a limited-supervision mini-MLS, on a CPU (docs/paper_mini.md):
# labels only on the MLS "9hr" lists of the embedded corpus (40% of its training utterances,
# imbalanced like MLS: en 100 ... pt/pl 18), all training audio plus the unlabelled pool
# (tools/mini_mls/pool: 1800 utterances read by 9 voices per language the corpus does not use)
# available unlabelled. Systems, each with every seed:
#   supervised      RNN-T on the labelled subset only (the B0-like baseline)
#   finetune        w2v-BERT pre-training on all audio, then RNN-T fine-tuning (2-stage)
#   just            JUST from scratch
#   just_finetune   JUST started from the w2v-BERT pre-trained encoder
#   just_local      JUST with local attention
# Writes exp_paper_mini/<system>_s<seed>/ (every stage-6..8 output) and, from stage 5,
# results/<name>.{md,json} (per-language test WER, mean and spread over seeds).
# The low-label setting (docs/paper_mini.md, "Low labels"): labels on --labels_per_lang utterances
# of each language drawn at random (seed 0) from its training set instead of the --subset lists:
#   local/paper_mini.sh --labels_per_lang 10 --systems "supervised just just_finetune" \
#     --seeds "0 1 2" --pretrain_seed 0 --conf conf/paper_lowlabel --exp exp_paper_lowlabel --name paper_lowlabel
#   local/paper_mini.sh                      # everything (about 3 h on 2 cores)
#   local/paper_mini.sh --seeds "0" --systems "supervised just" --stage 3
# Options (default): --stage 1 --stop_stage 5 --seeds "0 1" --jobs 2 (training processes at
# once, one thread each) --nj 2 --subset 9h --systems "supervised finetune just just_finetune
# just_local" --exp exp_paper_mini --train_args '' (more overrides for every training run)
# --labels_per_lang 0 (N > 0: N random labelled utterances per language) --name paper_mini
# --probe true (stage 5 also runs the linear probe of local/probe_encoder.py on every run)
# --pretrain_seed '' (N: finetune/just_finetune of every seed start from pretrain_sN, one
# pre-training shared by all seeds; default: each seed from its own pre-training)
# --conf conf/paper_mini (the systems' configs: <conf>/<system>.yaml and <conf>/pretrain.yaml)
# --device cpu (cuda: every training run on the GPU, --jobs of them sharing it) --langs (all 8).
set -euo pipefail
cd "$(dirname "$0")/.."

stage=1
stop_stage=5
seeds="0 1"
jobs=2
nj=2
subset=9h
systems="supervised finetune just just_finetune just_local"
exp=exp_paper_mini
train_args=""
labels_per_lang=0
name=paper_mini
probe=true
pretrain_seed=""
conf=conf/paper_mini
device=cpu
langs="en de nl es fr pt it pl"
help_message="Usage: $0 [--stage N] [--stop_stage M] [--seeds '0 1'] [--jobs N] [--nj N] [--subset 9h]
  [--systems 'supervised finetune just just_finetune just_local'] [--exp DIR] [--train_args '...']
  [--labels_per_lang N] [--name paper_mini] [--probe true] [--pretrain_seed N] [--conf conf/paper_mini] [--device cpu] [--langs '...']
Stages: 1 corpus (run.sh 1-3) + unlabelled pool  2 tokenizer (labelled text only) + packing
        3 pre-training  4 the systems  5 decode, score, results/paper_mini.{md,json}"
. utils/parse_options.sh
. ./path.sh
. ./cmd.sh

log() { echo "$(date '+%F %T') [paper_mini] $*"; }
t_start=$(date +%s)
[ "$labels_per_lang" -ge 0 ] 2>/dev/null || { echo "$0: --labels_per_lang must be an integer >= 0" >&2; exit 2; }
[ -z "$pretrain_seed" ] || [[ "$pretrain_seed" =~ ^[0-9]+$ ]] || { echo "$0: --pretrain_seed must be a seed number" >&2; exit 2; }
if [ "$labels_per_lang" -gt 0 ]; then
  subset=n$labels_per_lang   # the labelled lists: data/train_<lang>_n<N>
fi
tok=data/token_${name}
packed=dump/packed_${name}

if [ $stage -le 1 ] && [ $stop_stage -ge 1 ]; then
  log "stage 1: the embedded corpus (run.sh stages 1-3) and the unlabelled pool"
  ./run.sh --stop_stage 3 --nj "$nj" --langs "$langs"
  python -m justkit.bin.prepare_mls --mls_root "$JUSTKIT_ROOT/tools/mini_mls/pool" --langs "$langs" \
    --splits train --nj "$nj" --log_file data_pool/log/prepare_mls.log data_pool
  utils/resample_data_dir.sh --nj "$nj" --cmd "$cmd" --fs 16000 data_pool/train dump/raw/pool
  utils/make_fbank.sh --nj "$nj" --cmd "$cmd" --config conf/fbank.yaml dump/raw/pool dump/fbank/pool
fi

if [ $stage -le 2 ] && [ $stop_stage -ge 2 ]; then
  log "stage 2: tokenizer on the labelled transcripts only; packed examples"
  if [ "$labels_per_lang" -gt 0 ]; then
    for l in $langs; do
      utils/subset_data_dir.py --random "$labels_per_lang" --seed 0 data/train_$l data/train_${l}_$subset
    done
  fi
  mkdir -p data/train_labelled_$subset
  lab_dirs=()
  for l in $langs; do lab_dirs+=(data/train_${l}_$subset); done
  utils/combine_data.py data/train_labelled_$subset "${lab_dirs[@]}"
  python -m justkit.bin.train_tokenizer --config conf/tokenizer_mini.yaml \
    --text data/train_labelled_$subset/text --utt2lang data/train_labelled_$subset/utt2lang --out $tok
  opts=()
  for d in "${lab_dirs[@]}"; do opts+=(--labelled_subset "$d"); done
  python -m justkit.bin.pack_examples --tokenizer $tok/spm.model "${opts[@]}" dump/fbank/train $packed/train.jsonl
  # The pool's transcripts are never used: every pool utterance is unlabelled.
  python -m justkit.bin.pack_examples --unlabelled dump/fbank/pool $packed/pool.jsonl
  cat $packed/train.jsonl $packed/pool.jsonl > $packed/train_all.jsonl.tmp && mv $packed/train_all.jsonl.tmp $packed/train_all.jsonl
  for s in dev $(for l in $langs; do echo test_$l; done); do
    python -m justkit.bin.pack_examples --tokenizer $tok/spm.model dump/fbank/$s $packed/$s.jsonl
  done
fi

# train NAME CONFIG SEED [extra options...]: one training run, one thread, log in its exp dir
train() {
  local name=$1 config=$2 seed=$3
  shift 3
  local dir=$exp/${name}_s$seed
  mkdir -p $dir/log
  # shellcheck disable=SC2086  # train_args is a list of options
  OMP_NUM_THREADS=1 python -m justkit.bin.train --config $config --exp $dir --train_data $packed/train_all.jsonl \
    --dev_data $packed/dev.jsonl --tokenizer $tok/spm.model --cmvn dump/fbank/train/cmvn.ark \
    --feats_dir dump/fbank/train --device "$device" --train.seed "$seed" --data.seed "$seed" \
    --train.num_threads 1 "$@" $train_args >> $dir/log/train.log 2>&1 \
    && python -m justkit.bin.average --exp $dir --out $dir/model_avg.pt >> $dir/log/train.log 2>&1 \
    || { log "FAILED: $dir (see $dir/log/train.log)"; return 1; }
  log "done: $dir"
}

# run_all "NAME CONFIG SEED [opts]" ...: at most --jobs at once; fails if any failed
run_all() {
  local failed=0 spec
  for spec in "$@"; do
    while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || failed=1; done
    # shellcheck disable=SC2086  # spec is "name config seed [opts]"
    train $spec &
  done
  while [ "$(jobs -rp | wc -l)" -gt 0 ]; do wait -n || failed=1; done
  return $failed
}

want() { [[ " $systems " == *" $1 "* ]]; }

if [ $stage -le 3 ] && [ $stop_stage -ge 3 ]; then
  if want finetune || want just_finetune; then
    pre_seeds=${pretrain_seed:-$seeds}
    log "stage 3: w2v-BERT pre-training on all audio (seeds: $pre_seeds)"
    specs=()
    for s in $pre_seeds; do specs+=("pretrain $conf/pretrain.yaml $s"); done
    run_all "${specs[@]}"
  fi
fi

if [ $stage -le 4 ] && [ $stop_stage -ge 4 ]; then
  log "stage 4: systems $systems (seeds: $seeds; $jobs at once)"
  specs=()
  for s in $seeds; do
    for sys in $systems; do
      case $sys in
        finetune|just_finetune) specs+=("$sys $conf/$sys.yaml $s --init $exp/pretrain_s${pretrain_seed:-$s}/model_avg.pt") ;;
        *) specs+=("$sys $conf/$sys.yaml $s") ;;
      esac
    done
  done
  run_all "${specs[@]}"
fi

if [ $stage -le 5 ] && [ $stop_stage -ge 5 ]; then
  log "stage 5: decode and score the test sets; results/paper_mini.{md,json}"
  sets=$(for l in $langs; do echo $packed/test_$l.jsonl; done)
  groups=()
  all_dirs=()
  for s in ${pretrain_seed:-$seeds}; do [ -f $exp/pretrain_s$s/train.csv ] && all_dirs+=("$exp/pretrain_s$s"); done
  for sys in $systems; do
    dirs=()
    for s in $seeds; do
      d=$exp/${sys}_s$s
      # shellcheck disable=SC2086
      OMP_NUM_THREADS=$(nproc) python -m justkit.bin.decode --exp $d --config conf/decode.yaml $sets
      python -m justkit.bin.score --exp $d --langs "$langs"
      dirs+=("$d")
      all_dirs+=("$d")
    done
    groups+=("$sys=$(IFS=,; echo "${dirs[*]}")")
  done
  mkdir -p results
  labels="$subset lists"
  [ "$labels_per_lang" -gt 0 ] && labels="$labels_per_lang random utterances per language"
  python -m justkit.bin.system_table --method beam --langs "$langs" --paper \
    --title "$name: limited supervision ($labels labelled) + unlabelled pool, mini-MLS" \
    --command "local/paper_mini.sh --seeds '$seeds' --systems '$systems' --subset $subset --labels_per_lang $labels_per_lang --conf $conf${pretrain_seed:+ --pretrain_seed $pretrain_seed} --exp $exp --name $name" \
    --wall_s $(( $(date +%s) - t_start )) --out_md results/$name.md --out_json results/$name.json \
    "${groups[@]}"
  local/plot_paper_mini.py --out results/${name}_curves.png "${all_dirs[@]}"
  if [ "$probe" = true ]; then
    runs=()
    for sys in $systems; do for s in $seeds; do runs+=("$exp/${sys}_s$s"); done; done
    OMP_NUM_THREADS=$(nproc) python local/probe_encoder.py --train $packed/train.jsonl --dev $packed/dev.jsonl \
      --tokenizer $tok/spm.model --cmvn dump/fbank/train/cmvn.ark --out results/probe_$name.json "${runs[@]}"
  fi
  # The gradient-alignment monitor's means per term (runs trained with train.grad_alignment_interval)
  aligned=()
  for d in "${all_dirs[@]}"; do head -1 "$d/train.csv" | grep -q galign_ && aligned+=("$d"); done
  if [ ${#aligned[@]} -gt 0 ]; then
    local/alignment_summary.py --out_json results/alignment_$name.json "${aligned[@]}" > results/alignment_$name.md
  fi
  cat results/$name.md
fi
log "done in $(( $(date +%s) - t_start )) s"
