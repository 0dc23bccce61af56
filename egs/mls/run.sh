#!/usr/bin/env bash
# JUST on Multilingual LibriSpeech: stages 1-8 (see README and ../../docs/interfaces.md).
#   ./run.sh                                  # the embedded mini-MLS corpus, all stages
#   ./run.sh --mls_root /data/mls --download true --config conf/train_just_paper.yaml \
#            --token_config conf/tokenizer_paper.yaml --ngpu 8 --nj 32
#   ./run.sh --stage 6 --stop_stage 8 --config conf/train_baseline_mini.yaml
#   ./run.sh --langs "en pl" --labelled_subset 9h
#   ./run.sh --stage 9 --use_lm true                # + LM text, LM training, LM-fused decoding, packing (9-12)
# Stage 1 (local/data.sh) is this recipe's own; stages 2-8 are the shared ./asr.sh
# (a link to ../TEMPLATE/asr.sh: ./asr.sh --help lists every option it takes).
set -euo pipefail
# RESULTS.md records the command as typed (shell-quoted), not asr.sh's expanded one
JUSTKIT_CMDLINE=$(printf '%q ' "$0" "$@")
export JUSTKIT_CMDLINE=${JUSTKIT_CMDLINE% }
cd "$(dirname "$0")"

# This recipe's own options (stage 1); every other option is handed to asr.sh.
mls_root=""               # MLS release root (mls_<language>_opus/ below it); empty = embedded mini corpus
download=false            # stage 1 downloads missing MLS languages from OpenSLR into $mls_root
audio_checks=true         # false: stage 1 takes durations from segments.txt and opens no audio (full MLS)
rest=()
while [ $# -gt 0 ]; do
  case "$1" in
    --help|-h) echo "$0: this recipe's own options: --mls_root DIR (embedded mini-MLS)  --download true|false (false)  --audio_checks true|false (true); the others are asr.sh's:"
      exec ./asr.sh --help ;;
    --mls_root|--mls-root|--download|--audio_checks|--audio-checks) [ $# -ge 2 ] || { echo "$0: $1 needs a value" >&2; exit 1; }
      opt=${1#--}; printf -v "${opt//-/_}" '%s' "$2"; shift 2 ;;
    --mls_root=*|--mls-root=*) mls_root=${1#*=}; shift ;;
    --download=*) download=${1#*=}; shift ;;
    --audio_checks=*|--audio-checks=*) audio_checks=${1#*=}; shift ;;
    *) rest+=("$1"); shift ;;
  esac
done
case "$mls_root" in *" "*) echo "$0: --mls_root must not contain spaces: $mls_root" >&2; exit 1 ;; esac
data_opts="--download $download --audio_checks $audio_checks"
[ -n "$mls_root" ] && data_opts="$data_opts --mls_root $mls_root"

exec ./asr.sh \
  --langs "en de nl es fr pt it pl" \
  --config conf/train_just_mini.yaml \
  --token_config conf/tokenizer_mini.yaml \
  --paper_table true \
  --local_data_opts "$data_opts" \
  "${rest[@]}"
