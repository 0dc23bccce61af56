#!/usr/bin/env bash
# Recipe template: stages 1-8 for a new corpus or language set (see ../../docs/new_recipe.md).
# Make a recipe from it with `egs/TEMPLATE/setup.sh egs/<name>` (it links the shared files and
# copies this one), then make local/data.sh prepare your corpus and set the defaults below.
#   ./run.sh --corpus_root /data/mycorpus
#   ./run.sh --stage 6 --stop_stage 8 --config conf/train_baseline.yaml
# Stage 1 (local/data.sh) is the recipe's own; stages 2-8 are the shared ./asr.sh
# (./asr.sh --help lists every option it takes: --langs, --nj, --ngpu, --config, ...).
set -euo pipefail
# RESULTS.md records the command as typed (shell-quoted), not asr.sh's expanded one
JUSTKIT_CMDLINE=$(printf '%q ' "$0" "$@")
export JUSTKIT_CMDLINE=${JUSTKIT_CMDLINE% }
cd "$(dirname "$0")"

# This recipe's own options (stage 1); every other option is handed to asr.sh.
corpus_root=""            # your corpus; local/data.sh reads it
rest=()
while [ $# -gt 0 ]; do
  case "$1" in
    --help|-h) echo "$0: this recipe's own options: --corpus_root DIR (your corpus); the others are asr.sh's:"
      exec ./asr.sh --help ;;
    --corpus_root|--corpus-root) [ $# -ge 2 ] || { echo "$0: $1 needs a value" >&2; exit 1; }
      corpus_root=$2; shift 2 ;;
    --corpus_root=*|--corpus-root=*) corpus_root=${1#*=}; shift ;;
    *) rest+=("$1"); shift ;;
  esac
done
case "$corpus_root" in *" "*) echo "$0: --corpus_root must not contain spaces: $corpus_root" >&2; exit 1 ;; esac

# Set your corpus' languages here (or pass --langs 'xx yy'): asr.sh requires them.
exec ./asr.sh \
  --config conf/train_just.yaml \
  --local_data_opts "${corpus_root:+--corpus_root $corpus_root}" \
  "${rest[@]}"
