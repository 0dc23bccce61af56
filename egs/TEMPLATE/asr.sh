#!/usr/bin/env bash
# The stages every justkit recipe shares (as ESPnet's egs2/TEMPLATE/asr1/asr.sh): each recipe
# links this file as ./asr.sh and its run.sh calls it with the recipe's defaults; only
# stage 1 (local/data.sh) is the recipe's own. Stages (docs/interfaces.md):
#   1 local/data.sh -> data/   2 16 kHz audio + code-switch set -> dump/raw/   3 fbank, CMVN -> dump/fbank/
#     (--feats_type raw: no stored features; frame counts and CMVN -> dump/onthefly/, the loader computes fbank)
#   4 sentencepiece -> data/token/   5 pack -> dump/packed/   6 train -> exp/<tag>/
#   7 average + decode -> exp/<tag>/decode_*/   8 score -> exp/<tag>/RESULTS.md (+ paper table)
#   with --use_lm true (ESPnet's LM options; its asr.sh runs its LM stages before ASR training, justkit
#   appends them so that stages 1-8 keep their numbers; 9-10 need only stages 1 and 4):
#   9 LM text (local/lm_data.sh, else the train transcripts) -> data/lm_train/, dump/lm/   10 train the LM -> exp/lm_<tag>/
#   11 dev grid of LM weights, LM-fused decoding of the test sets, scoring   12 the packed model with its LM
set -euo pipefail
# Recorded in RESULTS.md, shell-quoted so that copying it reruns the same thing: the recipe's run.sh
# passes the command the user typed (JUSTKIT_CMDLINE), else this script's own.
cmdline=${JUSTKIT_CMDLINE:-$(printf '%q ' "$0" "$@")}
cmdline=${cmdline% }
. utils/stop_tree.sh      # a signal to this script stops all it started (utils/run.py, jobs, training)

stage=1
stop_stage=12
nj=2                      # parallel jobs for stages 2-3
ngpu=0                    # GPUs for training (torchrun when > 1); 0 = CPU
train_threads=0           # CPU training: torch threads (0 = all cores; the parallel jobs of stages 2-3 use 1 each)
langs=""                  # ISO codes of the corpus' languages, e.g. "en pl" (required)
local_data_opts=""        # options for local/data.sh besides --langs/--nj (split on spaces)
config=""                 # experiment config, e.g. conf/train_just.yaml (required)
tag=""                    # experiment name; default: basename of $config, plus --train_args if any (see --tag)
fbank_config=conf/fbank.yaml
feats_type=fbank          # fbank: stage 3 stores features; raw: the data loader computes them from the 16 kHz audio
cmvn_fraction=1.0         # feats_type raw: share of the training utterances (seeded sample) the CMVN stats come from
token_config=conf/tokenizer.yaml
decode_config=conf/decode.yaml
codeswitch=true           # with >= 2 languages: also make and score a code-switching test set
cs_num=20                 # its number of utterances
labelled_subset=""        # e.g. 9h: only data/train_<lang>_9h keep labels (the rest: unsupervised terms only)
init=""                   # checkpoint to fine-tune from (JUST+finetune); overrides the config
train_args=""             # more options for justkit.bin.train, e.g. "--train.max_epochs 5 --loss.w_u 0.3"
print_config=false        # true: print stage 6's fully resolved experiment config and exit
decode_args=""            # more options for justkit.bin.decode, e.g. "--decode.beam.beam_size 8"
average_by=last           # stage 7 averages the last checkpoints, or the best by dev_wer or loss
paper_table=false         # true: stage 8 also prints the JUST paper's MLS table beside this experiment
paper_compare=""          # more exp dirs to print beside this one in the paper table
use_lm=false              # stages 9-12: an LM over the tokenizer's pieces, fused in beam search (ESPnet's --use_lm)
lm_config=conf/lm/lstm_mini.yaml  # LM experiment config (ESPnet's --lm_config)
lm_tag=""                 # LM experiment name; default: lm_<basename of $lm_config>
lm_exp=""                 # LM experiment dir (ESPnet's --lm_exp); default: exp/$lm_tag
lm_args=""                # more options for justkit.bin.train_lm, e.g. "--train.max_epochs 20"
lm_data_opts=""           # more options for local/lm_data.sh, e.g. "--max_sentences 100000"
lm_weights="0.1 0.2 0.3 0.5"  # stage 11 decodes dev with each and the test sets with the best
ilm_weights="0"           # internal-LM subtraction weights tried with each LM weight, e.g. "0 0.1"
help_message="Usage: $0 --langs 'xx yy' --config conf/X.yaml [options]
Stages: 1 data prep (local/data.sh)  2 16 kHz audio  3 fbank + CMVN  4 sentencepiece  5 pack examples
        6 train  7 average + decode  8 score (docs/interfaces.md)
        with --use_lm true: 9 LM text  10 LM training  11 LM-fused decoding (dev-tuned weight) + score  12 pack with the LM
Options (default):
  --stage N ($stage) --stop_stage M ($stop_stage)   run stages N..M
  --langs 'xx yy' (required)      the corpus' language codes, in the order results are printed
  --config FILE (required)        experiment config, e.g. conf/train_just_mini.yaml
  --tag NAME (config's basename)  experiment directory exp/<tag>; without --tag, --train_args are part of the
                                  name as ESPnet does: '--model.d_model 64' -> <config>_model.d_model64
  --nj N ($nj)                    parallel jobs of stages 2-3
  --ngpu N ($ngpu)                GPUs for training and decoding (torchrun when > 1); 0 = CPU
  --train_threads N ($train_threads)  CPU training threads (0 = all cores)
  --local_data_opts '...' ()      options for local/data.sh besides --langs/--nj
  --fbank_config F ($fbank_config)  --token_config F ($token_config)  --decode_config F ($decode_config)
  --feats_type fbank|raw ($feats_type)  fbank: stage 3 stores features (dump/fbank/); raw: none stored, the
                                  data loader computes them from the audio (dump/onthefly/: frame counts, CMVN)
  --cmvn_fraction F ($cmvn_fraction)  raw: CMVN stats from this seeded share of the training utterances
  --codeswitch B ($codeswitch) --cs_num N ($cs_num)  code-switching test set (>= 2 languages)
  --labelled_subset NAME ()       keep labels only on data/train_<lang>_NAME (e.g. 9h)
  --init CKPT ()                  fine-tune from this checkpoint's encoder
  --train_args '...' ()           passed to justkit.bin.train (--train.X / --model.X / --data.X overrides)
  --print_config B ($print_config)    print stage 6's resolved experiment config (needs stages 1-5) and exit
  --decode_args '...' ()          passed to justkit.bin.decode (--decode.X overrides)
  --average_by last|dev_wer|loss ($average_by)  which checkpoints stage 7 averages (train.average_last of them)
  --paper_table B ($paper_table) --paper_compare 'exp/a exp/b' ()  the JUST paper's table in stage 8
  --use_lm B ($use_lm)          stages 9-12: train a token LM and fuse it in beam search
  --lm_config F ($lm_config) --lm_tag NAME (lm_<config>) --lm_exp DIR (exp/<lm_tag>)
  --lm_args '...' ()              passed to justkit.bin.train_lm (--train.X / --model.X / --data.X overrides)
  --lm_data_opts '...' ()         passed to local/lm_data.sh (stage 9)
  --lm_weights '...' ($lm_weights)  LM weights decoded on dev in stage 11; the test sets use the best
  --ilm_weights '...' ($ilm_weights)  internal-LM subtraction weights tried with each"

# Options first, so that --help answers before anything is installed.
. utils/parse_options.sh
. ./path.sh
. ./cmd.sh

# Stages are numbers 1-12 with stop_stage >= stage: anything else would run nothing and exit 0.
[[ "$stage" =~ ^[0-9]+$ && "$stop_stage" =~ ^[0-9]+$ ]] && [ "$stage" -ge 1 ] && [ "$stop_stage" -le 12 ] \
  && [ "$stop_stage" -ge "$stage" ] || {
  echo "$0: --stage $stage --stop_stage $stop_stage: stages are 1-12 and --stop_stage must not be below --stage" >&2; exit 2; }
[[ "$nj" =~ ^[1-9][0-9]*$ ]] || { echo "$0: --nj must be a positive integer, got '$nj'" >&2; exit 2; }
[[ "$ngpu" =~ ^[0-9]+$ ]] || { echo "$0: --ngpu must be a number of GPUs (0 = CPU), got '$ngpu'" >&2; exit 2; }
[ -n "$langs" ] || { echo "$0: set --langs (the ISO codes of the corpus, e.g. --langs 'en pl')" >&2; exit 1; }
[ -n "$config" ] || { echo "$0: set --config (an experiment config under conf/)" >&2; exit 1; }
if [ -z "$tag" ]; then
  # ESPnet's rule (asr_tag): the config's name, then the overrides with '--' -> '_' and spaces
  # dropped; here also every character a tag may not hold. Over 100 characters: a hash of them.
  tag=$(basename "$config" .yaml)
  if [ -n "$train_args" ]; then
    suffix=$(printf '%s' "$train_args" | sed -e 's/--/_/g' | tr -d -c 'A-Za-z0-9._-')
    [ ${#suffix} -le 100 ] || suffix=_args$(printf '%s' "$train_args" | cksum | cut -d' ' -f1)
    tag=$tag$suffix
  fi
fi
# Names and paths go into job command lines (utils/run.py, as Kaldi's run.pl, passes words
# without spaces to bash as they are): only plain characters, so that nothing is run by accident.
[[ "$tag" =~ ^[A-Za-z0-9._-]+$ ]] || { echo "$0: --tag (or the config's file name) '$tag' may use only A-Z a-z 0-9 . _ -" >&2; exit 2; }
[ -n "$lm_tag" ] || lm_tag=lm_$(basename "$lm_config" .yaml)
[ -n "$lm_exp" ] || lm_exp=exp/$lm_tag
[[ "$lm_tag" =~ ^[A-Za-z0-9._-]+$ ]] || { echo "$0: --lm_tag '$lm_tag' may use only A-Z a-z 0-9 . _ -" >&2; exit 2; }
case "$use_lm" in true|false) ;; *) echo "$0: --use_lm must be true or false, got '$use_lm'" >&2; exit 2 ;; esac
for w in $lm_weights $ilm_weights; do
  [[ "$w" =~ ^[0-9]*\.?[0-9]+$ ]] || { echo "$0: --lm_weights/--ilm_weights: '$w' is not a number >= 0" >&2; exit 2; }
done
for opt in config init fbank_config token_config decode_config lm_config lm_exp; do
  v=${!opt}
  [ -z "$v" ] || [[ "$v" =~ ^[A-Za-z0-9._/+=@:-]+$ ]] || {
    echo "$0: --$opt '$v': a path with spaces or shell characters; rename it (allowed: A-Z a-z 0-9 . _ / + = @ : -)" >&2; exit 2; }
done
case "$feats_type" in
  fbank) featdir=dump/fbank ;;
  raw) featdir=dump/onthefly
       [[ "$cmvn_fraction" =~ ^(0?\.[0-9]+|1|1\.0*)$ ]] && awk -v f="$cmvn_fraction" 'BEGIN { exit !(f > 0) }' || {
         echo "$0: --cmvn_fraction must be in (0, 1] (stage 6 needs the CMVN stats), got '$cmvn_fraction'" >&2; exit 2; } ;;
  *) echo "$0: --feats_type must be fbank or raw, got '$feats_type'" >&2; exit 2 ;;
esac
for l in $langs; do
  [[ "$l" =~ ^[a-z]{2,3}$ ]] || { echo "$0: --langs: '$l' is not a language code (ISO 639: 2-3 lower-case letters)" >&2; exit 2; }
done
exp=exp/$tag
train_sets="train"
dev_sets="dev"
test_sets=""
for l in $langs; do test_sets="$test_sets test_$l"; done
test_sets="${test_sets# }"
n_langs=$(echo $langs | wc -w)
[ "$codeswitch" = true ] && [ "$n_langs" -ge 2 ] && test_sets="$test_sets test_cs"

# The options of stage 6's training command (justkit.bin.train), unquoted.
train_argv() {
  targs=(--config "$config" --exp "$exp" --train_data dump/packed/train.jsonl --dev_data dump/packed/dev.jsonl
         --tokenizer data/token/spm.model --cmvn $featdir/train/cmvn.ark --feats_dir $featdir/train)
  [ -n "$init" ] && targs+=(--init "$init")
  # shellcheck disable=SC2206  # train_args is a list of options, split on spaces
  targs+=($train_args)
}
case "$print_config" in
  true) train_argv; exec python -m justkit.bin.train "${targs[@]}" --print_config ;;
  false) ;;
  *) echo "$0: --print_config must be true or false, got '$print_config'" >&2; exit 2 ;;
esac

log() { echo "$(date '+%F %T') [asr.sh] $*"; }
stage_time() { log "stage $1 done in $(( $(date +%s) - $2 )) s"; }
# model.mode of the experiment (from its resolved config.yaml written by stage 6)
model_mode() {
  python -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))["model"]["mode"])' "$exp/config.yaml"
}

if [ $stage -le 1 ] && [ $stop_stage -ge 1 ]; then
  t0=$(date +%s)
  log "stage 1: data preparation (langs: $langs)"
  # Must write data/{train,dev,test}_<lang>/ and data/{train,dev} (docs/interfaces.md, stage 1).
  # shellcheck disable=SC2086  # local_data_opts is a list of options, split on spaces
  local/data.sh $local_data_opts --langs "$langs" --nj "$nj" data
  for l in $langs; do
    utils/validate_data_dir.py --known_langs "$langs" data/test_$l
  done
  utils/validate_data_dir.py --known_langs "$langs" data/train
  utils/validate_data_dir.py --known_langs "$langs" data/dev
  stage_time 1 $t0
fi

if [ $stage -le 2 ] && [ $stop_stage -ge 2 ]; then
  t0=$(date +%s)
  log "stage 2: resample to 16 kHz"
  for set in $train_sets $dev_sets ${test_sets/test_cs/}; do
    utils/resample_data_dir.sh --nj "$nj" --cmd "$cmd" --fs 16000 data/$set dump/raw/$set
  done
  if [[ " $test_sets " == *" test_cs "* ]]; then
    python -m justkit.bin.make_codeswitch --seed 0 --num "$cs_num" \
      $(for l in $langs; do echo dump/raw/test_$l; done) dump/raw/test_cs
  fi
  stage_time 2 $t0
fi

if [ $stage -le 3 ] && [ $stop_stage -ge 3 ]; then
  t0=$(date +%s)
  if [ "$feats_type" = raw ]; then
    # Nothing stored but frame counts (from the audio headers) and the CMVN stats, computed from
    # fbank of a seeded share of the training utterances in the same jobs.
    log "stage 3: frame counts + global CMVN (features on the fly)"
    for set in $train_sets $dev_sets $test_sets; do
      frac=0; [ "$set" = train ] && frac=$cmvn_fraction
      utils/make_fbank.sh --feats_type raw --cmvn_fraction "$frac" --nj "$nj" --cmd "$cmd" \
        --config "$fbank_config" dump/raw/$set $featdir/$set
    done
  else
    log "stage 3: fbank + global CMVN"
    for set in $train_sets $dev_sets $test_sets; do
      utils/make_fbank.sh --nj "$nj" --cmd "$cmd" --config "$fbank_config" dump/raw/$set $featdir/$set
    done
    python -m justkit.bin.compute_cmvn --nj "$nj" $featdir/train $featdir/train/cmvn.ark
  fi
  stage_time 3 $t0
fi

if [ $stage -le 4 ] && [ $stop_stage -ge 4 ]; then
  t0=$(date +%s)
  log "stage 4: sentencepiece over the corpus' languages"
  python -m justkit.bin.train_tokenizer --config "$token_config" \
    --text data/train/text --utt2lang data/train/utt2lang --out data/token
  stage_time 4 $t0
fi

if [ $stage -le 5 ] && [ $stop_stage -ge 5 ]; then
  t0=$(date +%s)
  log "stage 5: pack examples"
  for set in $train_sets $dev_sets $test_sets; do
    opts=()
    if [ "$set" = train ] && [ -n "$labelled_subset" ]; then
      for l in $langs; do
        [ -d data/train_${l}_${labelled_subset} ] || { echo "$0: --labelled_subset $labelled_subset: no data/train_${l}_${labelled_subset}" >&2; exit 1; }
        opts+=(--labelled_subset data/train_${l}_${labelled_subset})
      done
    fi
    python -m justkit.bin.pack_examples --tokenizer data/token/spm.model "${opts[@]}" $featdir/$set dump/packed/$set.jsonl
  done
  stage_time 5 $t0
fi

if [ $stage -le 6 ] && [ $stop_stage -ge 6 ]; then
  t0=$(date +%s)
  log "stage 6: train $config -> $exp (log: $exp/log/train.log; TensorBoard: $exp/tensorboard)"
  train_argv
  # On the console, before anything is written: the config resolved and checked against what
  # $exp already holds (its changes listed; another model refused, naming the keys).
  python -m justkit.bin.train "${targs[@]}" --check
  mkdir -p $exp/log
  args=("${targs[@]}")
  # Each word quoted for the job's shell: an option's value is data, never a command.
  for i in "${!args[@]}"; do args[$i]=$(printf '%q' "${args[$i]}"); done
  run_train() {
    if [ "$ngpu" -gt 1 ]; then
      $train_cmd $exp/log/train.log torchrun --standalone --nproc_per_node "$ngpu" \
        -m justkit.bin.train "${args[@]}" --device cuda
    elif [ "$ngpu" -eq 1 ]; then
      $train_cmd $exp/log/train.log python -m justkit.bin.train "${args[@]}" --device cuda
    else
      # path.sh keeps OMP_NUM_THREADS=1 for the parallel jobs; training alone may use every core
      # (measured on the mini JUST model, 2 cores: 7540 vs 6444 frames/s with 2 vs 1 thread).
      [ "$train_threads" -gt 0 ] || train_threads=$(nproc)
      OMP_NUM_THREADS=$train_threads \
        $train_cmd $exp/log/train.log python -m justkit.bin.train "${args[@]}" --device cpu
    fi
  }
  run_train &
  train_pid=$!
  # A heartbeat on the console while it trains: each log interval's step, loss, lr, speed and
  # ETA, and each dev pass's loss and WER (the full lines are in the log); ends with the training. Every
  # filter is line-buffered, so the heartbeat also shows at once when the console is a file.
  tail -n0 -F --pid=$train_pid "$exp/log/train.log" 2>/dev/null \
    | grep --line-buffered -E '\] (step [0-9]+ epoch|dev at step|training done|resumed from)' \
    | sed -u -E 's/^([0-9:]+) [A-Z]+ \[[^]]*\] /\1 [train] /; / dev at /s/^(([^|]*\|){3}[^|]*)\|.*$/\1/; s/^(([^|]*\|){4}[^|]*)\|.*$/\1/' || true
  wait $train_pid
  stage_time 6 $t0
fi

if [ $stage -le 7 ] && [ $stop_stage -ge 7 ]; then
  t0=$(date +%s)
  log "stage 7: average checkpoints, decode ($test_sets)"
  python -m justkit.bin.average --exp "$exp" --out "$exp/model_avg.pt" --by "$average_by"
  if [ "$(model_mode)" = pretrain ]; then
    log "stage 7: $exp is a pretrain (w2v-BERT) model without an RNN-T decoder: nothing to decode;" \
        "fine-tune it with --init $exp/model_avg.pt"
  else
    device=cpu; [ "$ngpu" -ge 1 ] && device=cuda
    # The tokenizer and CMVN are the experiment's (exp/<tag>/config.yaml).
    # shellcheck disable=SC2086  # decode_args is a list of options, split on spaces
    python -m justkit.bin.decode --config "$decode_config" --model "$exp/model_avg.pt" --device $device \
      --exp "$exp" $decode_args $(for s in $test_sets; do echo dump/packed/$s.jsonl; done)
  fi
  stage_time 7 $t0
fi

if [ $stage -le 8 ] && [ $stop_stage -ge 8 ]; then
  t0=$(date +%s)
  log "stage 8: score"
  if [ "$(model_mode)" = pretrain ]; then
    log "stage 8: $exp is a pretrain model: nothing to score"
    stage_time 8 $t0
    exit 0
  fi
  python -m justkit.bin.score --exp "$exp" --langs "$langs" --command "$cmdline"
  cat "$exp/RESULTS.md"
  # Everything inference needs in one directory (+ ONNX): python -m justkit.bin.transcribe --model_dir $exp/model x.wav
  python -m justkit.bin.pack_model --onnx "$exp" "$exp/model"
  if [ "$paper_table" = true ]; then
    # shellcheck disable=SC2086
    python -m justkit.bin.paper_table "$exp" $paper_compare | tee "$exp/paper_table.md"
  fi
  stage_time 8 $t0
fi

if [ "$use_lm" = true ] && [ $stop_stage -ge 9 ]; then
  lm_sets=dev
  for l in $langs; do lm_sets="$lm_sets test_$l"; done
fi

if [ "$use_lm" = true ] && [ $stage -le 9 ] && [ $stop_stage -ge 9 ]; then
  t0=$(date +%s)
  log "stage 9: LM text without any dev/test sentence -> data/lm_train, packed -> dump/lm/"
  excl=""
  for s in $lm_sets; do excl="$excl data/$s"; done
  if [ -x local/lm_data.sh ]; then
    # shellcheck disable=SC2086  # local_data_opts / lm_data_opts are lists of options
    local/lm_data.sh $local_data_opts $lm_data_opts --langs "$langs" --exclude "${excl# }" data/lm_train
  else  # no LM text of its own: the training transcripts (ESPnet's default lm_train_text)
    log "stage 9: no local/lm_data.sh: the LM learns the training transcripts (data/train_<lang>)"
    mkdir -p data/lm_train/src
    srcs=()
    for l in $langs; do
      cut -d' ' -f2- data/train_$l/text > data/lm_train/src/$l.txt
      srcs+=(--source "$l=data/lm_train/src/$l.txt")
    done
    # shellcheck disable=SC2046
    python -m justkit.bin.prepare_lm_text "${srcs[@]}" $(for s in $lm_sets; do echo --exclude data/$s; done) data/lm_train
  fi
  python -m justkit.bin.pack_text --tokenizer data/token/spm.model data/lm_train dump/lm/train
  python -m justkit.bin.pack_text --tokenizer data/token/spm.model data/dev dump/lm/dev
  stage_time 9 $t0
fi

if [ "$use_lm" = true ] && [ $stage -le 10 ] && [ $stop_stage -ge 10 ]; then
  t0=$(date +%s)
  log "stage 10: train the LM $lm_config -> $lm_exp (log: $lm_exp/log/train.log)"
  mkdir -p $lm_exp/log
  device=cpu; [ "$ngpu" -ge 1 ] && device=cuda
  [ "$train_threads" -gt 0 ] || train_threads=$(nproc)
  # shellcheck disable=SC2086  # lm_args is a list of options
  OMP_NUM_THREADS=$train_threads $train_cmd $lm_exp/log/train.log python -m justkit.bin.train_lm \
    --config "$lm_config" --exp "$lm_exp" --train_data dump/lm/train --dev_data dump/lm/dev \
    --tokenizer data/token/spm.model --device $device $lm_args
  python -m justkit.bin.average --exp "$lm_exp" --out "$lm_exp/model_avg.pt" --by loss
  grep -h "dev_ppl" $lm_exp/log/train.log | tail -n 1 || true
  stage_time 10 $t0
fi

if [ "$use_lm" = true ] && [ $stage -le 11 ] && [ $stop_stage -ge 11 ]; then
  t0=$(date +%s)
  [ "$(model_mode)" = pretrain ] && { log "stage 11: $exp is a pretrain model: nothing to decode"; exit 0; }
  device=cpu; [ "$ngpu" -ge 1 ] && device=cuda
  tune=$exp/lm_tune_$lm_tag
  log "stage 11: LM weights '$lm_weights' (internal LM '$ilm_weights') on dev -> $tune; the best on the test sets"
  # shellcheck disable=SC2086
  python -m justkit.bin.tune_lm_weight --exp "$exp" --lm_dir "$lm_exp" --lm_weights "$lm_weights" \
    --ilm_weights "$ilm_weights" --config "$decode_config" --device $device --out "$tune" $decode_args \
    dump/packed/dev.jsonl
  cat "$tune/wer.txt"
  read -r lm_w ilm_w < <(python -c 'import sys, yaml; t = yaml.safe_load(open(sys.argv[1]))["tune"]; print(t["lm_weight"], t["ilm_weight"])' "$tune/best.yaml")
  # shellcheck disable=SC2086
  python -m justkit.bin.decode --config "$decode_config" --model "$exp/model_avg.pt" --device $device \
    --exp "$exp" --lm_dir "$lm_exp" $decode_args --decode.methods "[beam]" --decode.lm_weight "$lm_w" \
    --decode.ilm_weight "$ilm_w" $(for s in $test_sets; do echo dump/packed/$s.jsonl; done)
  python -m justkit.bin.score --exp "$exp" --langs "$langs" --command "$cmdline"
  cat "$exp/RESULTS.md"
  stage_time 11 $t0
fi

if [ "$use_lm" = true ] && [ $stage -le 12 ] && [ $stop_stage -ge 12 ]; then
  t0=$(date +%s)
  log "stage 12: pack $exp with the LM $lm_exp -> $exp/model"
  read -r lm_w ilm_w < <(python -c 'import sys, yaml; t = yaml.safe_load(open(sys.argv[1]))["tune"]; print(t["lm_weight"], t["ilm_weight"])' "$exp/lm_tune_$lm_tag/best.yaml")
  python -m justkit.bin.pack_model --onnx "$exp" "$exp/model" --lm_dir "$lm_exp" --lm_weight "$lm_w" --ilm_weight "$ilm_w"
  stage_time 12 $t0
fi
