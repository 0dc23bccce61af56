#!/usr/bin/env bash
# Make a new recipe directory from this template (as ESPnet's egs2/TEMPLATE/asr1/setup.sh):
#   egs/TEMPLATE/setup.sh egs/<name>
# Links what every recipe shares (asr.sh, path.sh, cmd.sh, utils/, conf/{fbank,decode}.yaml, conf/lm/,
# conf/model/, conf/train/) and copies what a recipe makes its own (run.sh, local/,
# conf/tokenizer.yaml, conf/train_*.yaml). Then edit local/data.sh and run.sh's defaults
# (docs/new_recipe.md).
set -euo pipefail
if [ $# -ne 1 ] || [ "$1" = --help ] || [ "$1" = -h ]; then
  echo "Usage: $0 <new-recipe-dir>   (e.g. egs/fleurs_sw)" >&2
  [ $# -eq 1 ] && exit 0 || exit 1
fi
template=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
dir=$1
[ -e "$dir" ] && { echo "$0: $dir exists; not touching it" >&2; exit 1; }
mkdir -p "$dir/conf" "$dir/local"
dir=$(cd "$dir" && pwd)
# Relative links, so that the checkout can move: from <dir> and <dir>/conf to the template.
rel=$(python3 -c 'import os, sys; print(os.path.relpath(sys.argv[1], sys.argv[2]))' "$template" "$dir")
relc=$(python3 -c 'import os, sys; print(os.path.relpath(sys.argv[1], sys.argv[2]))' "$template/conf" "$dir/conf")
for f in asr.sh path.sh cmd.sh utils; do ln -s "$rel/$f" "$dir/$f"; done
for f in fbank.yaml decode.yaml model train lm; do ln -s "$relc/$f" "$dir/conf/$f"; done
cp "$template/run.sh" "$dir/run.sh"
cp "$template"/local/* "$dir/local/"
cp "$template/conf/tokenizer.yaml" "$template"/conf/train_*.yaml "$dir/conf/"
echo "$0: made $dir; next: edit $dir/local/data.sh and the defaults in $dir/run.sh (docs/new_recipe.md)"
