#!/usr/bin/env bash
# Stage 1 of a new recipe: your corpus -> Kaldi data dirs (see ../../docs/new_recipe.md).
#   local/data.sh --corpus_root DIR --langs "xx yy" [--nj N] data
#
# Contract (docs/interfaces.md, stage 1) -- whatever your corpus looks like, write:
#   data/{train,dev,test}_<lang>/  wav.scp text utt2spk spk2utt utt2lang utt2dur
#   data/train, data/dev           all languages combined
# Utterance ids unique across languages, sorted (C locale), speaker-prefixed.
#
# As shipped it reads the template's TSV layout, <corpus_root>/<lang>/{train,dev,test}.tsv
# with lines "utt<TAB>speaker<TAB>audio<TAB>transcript" (local/prepare_tsv.py). For
# another layout, replace the `prepare` step below (or convert your corpus to the TSVs);
# the combine/validate steps stay as they are.
set -euo pipefail
corpus_root=""
langs=""
nj=1
help_message="Usage: $0 --corpus_root DIR --langs 'xx yy' [--nj N] <data-dir>"

. "$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/path.sh"
. "$JUSTKIT_ROOT/utils/parse_options.sh"
if [ $# -ne 1 ]; then echo "$help_message" >&2; exit 1; fi
data=$1
[ -n "$corpus_root" ] || { echo "$0: --corpus_root is required" >&2; exit 1; }
[ -d "$corpus_root" ] || { echo "$0: --corpus_root $corpus_root: no such directory" >&2; exit 1; }
[ -n "$langs" ] || { echo "$0: --langs is required" >&2; exit 1; }
local_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# 1. prepare: per-language, per-split data dirs (replace for your corpus' layout).
python "$local_dir/prepare_tsv.py" --langs "$langs" "$corpus_root" "$data"

# 2. combine the languages for training and dev.
for split in train dev; do
  "$JUSTKIT_ROOT/utils/combine_data.py" "$data/$split" $(for l in $langs; do echo "$data/${split}_$l"; done)
done

# 3. validate everything stage 2 will read.
for l in $langs; do
  for split in train dev test; do
    "$JUSTKIT_ROOT/utils/validate_data_dir.py" --known_langs "$langs" "$data/${split}_$l"
  done
done
echo "$0: prepared $data for languages: $langs"
