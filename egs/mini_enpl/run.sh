#!/usr/bin/env bash
# mini_enpl: English + Polish of the embedded mini-MLS corpus, a recipe made from
# egs/TEMPLATE (see ../../docs/new_recipe.md); only local/data.sh and the defaults differ.
#   ./run.sh                                  # all stages on the embedded corpus
#   ./run.sh --corpus_root /data/mls          # the same two languages of a real MLS release
#   ./run.sh --stage 6 --stop_stage 8 --config conf/train_baseline.yaml
# Stage 1 (local/data.sh) is the recipe's own; stages 2-8 are the shared ./asr.sh
# (./asr.sh --help lists every option it takes: --langs, --nj, --ngpu, --config, ...).
set -euo pipefail
cd "$(dirname "$0")"

# This recipe's own options (stage 1); every other option is handed to asr.sh.
corpus_root=""            # MLS release root; empty = the embedded mini-MLS corpus
rest=()
while [ $# -gt 0 ]; do
  case "$1" in
    --help|-h) echo "$0: this recipe's own options: --corpus_root DIR (embedded mini-MLS); the others are asr.sh's:"
      exec ./asr.sh --help ;;
    --corpus_root|--corpus-root) [ $# -ge 2 ] || { echo "$0: $1 needs a value" >&2; exit 1; }
      corpus_root=$2; shift 2 ;;
    --corpus_root=*|--corpus-root=*) corpus_root=${1#*=}; shift ;;
    *) rest+=("$1"); shift ;;
  esac
done
case "$corpus_root" in *" "*) echo "$0: --corpus_root must not contain spaces: $corpus_root" >&2; exit 1 ;; esac

exec ./asr.sh \
  --langs "en pl" \
  --config conf/train_just.yaml \
  --local_data_opts "${corpus_root:+--corpus_root $corpus_root}" \
  "${rest[@]}"
