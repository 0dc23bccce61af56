#!/usr/bin/env bash
# Stage 1 of mini_enpl: English and Polish of the embedded mini-MLS corpus, prepared with
# justkit's MLS preparation (justkit.bin.prepare_mls --langs), nothing recipe-specific.
#   local/data.sh [--corpus_root DIR] [--langs "en pl"] [--nj N] data
# Empty --corpus_root = the embedded mini corpus ($JUSTKIT_ROOT/tools/mini_mls/corpus);
# a real MLS release root (holding mls_<language>_opus/) works the same.
set -euo pipefail
corpus_root=""
langs="en pl"
nj=1
help_message="Usage: $0 [--corpus_root DIR] [--langs 'en pl'] [--nj N] <data-dir>"

. "$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/path.sh"
. "$JUSTKIT_ROOT/utils/parse_options.sh"
if [ $# -ne 1 ]; then echo "$help_message" >&2; exit 1; fi
data=$1
[ -n "$corpus_root" ] || corpus_root=$JUSTKIT_ROOT/tools/mini_mls/corpus
[ -d "$corpus_root" ] || { echo "$0: --corpus_root $corpus_root: no such directory" >&2; exit 1; }

# Writes data/{train,dev,test}_<lang>/, the limited-supervision subsets, data/train,
# data/dev and data/bad_utts.txt (docs/interfaces.md, stage 1).
python -m justkit.bin.prepare_mls --mls_root "$corpus_root" --langs "$langs" --nj "$nj" \
  --log_file "$data/log/prepare_mls.log" "$data"
echo "$0: prepared $data for languages: $langs"
