#!/usr/bin/env bash
# Stage 9 (LM text) of the MLS recipe: mls_lm_<language>/data.txt of each language, normalised as the
# transcripts are, every sentence of the --exclude data dirs (dev, test) removed.
#   local/lm_data.sh [--mls_root DIR] [--download true] [--langs "en pl"] [--exclude "data/dev data/test_en"] \
#                    [--max_sentences N] <lm-data-dir>
# Empty --mls_root = the embedded mini corpus, whose LM text tools/mini_mls/build.py --size lm wrote
# from the corpus grammar (tools/mini_mls/corpus/mls_lm_*/data.txt). With --download true, missing
# mls_lm_<language>.tar.gz archives are fetched from OpenSLR 94 (resumable, md5-checked) into --mls_root.
set -euo pipefail
mls_root=""
download=false
langs="en de nl es fr pt it pl"
exclude=""
max_sentences=0
nj=1                      # accepted with the stage-1 options run.sh hands over; unused
audio_checks=true         # idem
help_message="Usage: $0 [--mls_root DIR] [--download true|false] [--langs 'en pl'] [--exclude 'data/dev ...'] [--max_sentences N] <lm-data-dir>"

. "$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/path.sh"
. "$JUSTKIT_ROOT/utils/parse_options.sh"
if [ $# -ne 1 ]; then echo "$help_message" >&2; exit 1; fi
out=$1
if [ -z "$mls_root" ]; then
  [ "$download" = true ] && { echo "$0: --download true needs --mls_root (where to put MLS)" >&2; exit 1; }
  mls_root=$JUSTKIT_ROOT/tools/mini_mls/corpus
  echo "$0: using the embedded mini-MLS corpus' LM text at $mls_root"
fi
flags=()
[ "$download" = true ] && flags+=(--download)
for d in $exclude; do flags+=(--exclude "$d"); done
python -m justkit.bin.prepare_lm_text --mls_root "$mls_root" --langs "$langs" --max_sentences "$max_sentences" \
  "${flags[@]}" "$out"
