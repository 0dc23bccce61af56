#!/usr/bin/env bash
# Run every GPU path of justkit once and write benchmarks/results/gpu_<date>.md
# (benchmarks/gpu_check.py says what each section checks; about 5 minutes on one H100/H200).
#
#   bash benchmarks/gpu_check.sh                       # on a GPU machine with its own PyTorch
#   bash benchmarks/gpu_check.sh --wheels /path/wheels # install what is missing from local wheels
#   bash benchmarks/gpu_check.sh --dry-run             # the same sequence, tiny sizes, on the CPU
#   bash benchmarks/gpu_check.sh --sections ace        # some sections only
#
# On a GPU machine the machine's own python3 and torch are used: the packages justkit needs
# besides torch (kaldiio, soundfile, jiwer, sentencepiece, numba, pyyaml, matplotlib) are
# installed with --no-deps when they are missing, so torch is never replaced. The dry run
# uses the project's venv (tools/install.sh). Exit status: 0 when every section passed.
set -euo pipefail
cd "$(dirname "$0")/.."

dry=0
wheels=""
timeout_s=480
pass=()
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run|--dry_run) dry=1; shift ;;
    --wheels) wheels=$2; shift 2 ;;
    --timeout) timeout_s=$2; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) pass+=("$1"); shift ;;
  esac
done

if [ $dry = 1 ]; then
  if [ -z "${JUSTKIT_NO_INSTALL:-}" ]; then bash tools/install.sh >/dev/null; fi
  py=${JUSTKIT_PYTHON:-tools/venv/bin/python}
  exec "$py" benchmarks/gpu_check.py --dry_run ${pass[@]+"${pass[@]}"}
fi

py=${JUSTKIT_PYTHON:-python3}
"$py" -c "import torch; assert torch.cuda.is_available(), 'torch sees no CUDA device'" || {
  echo "gpu_check.sh: no usable CUDA device for $py (use --dry-run on a CPU)" >&2; exit 2; }
missing=()
for m in kaldiio:kaldiio soundfile:soundfile jiwer:jiwer sentencepiece:sentencepiece numba:numba yaml:pyyaml matplotlib:matplotlib; do
  "$py" -c "import ${m%%:*}" 2>/dev/null || missing+=("${m#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "gpu_check.sh: installing ${missing[*]} (--no-deps: the machine's torch stays)" >&2
  if [ -n "$wheels" ]; then
    "$py" -m pip install -q --no-deps --no-index --find-links "$wheels" "${missing[@]}"
  else
    "$py" -m pip install -q --no-deps "${missing[@]}"
  fi
fi
# numba.cuda needs the CUDA target package on recent numba; say so instead of failing later
"$py" -c "from numba import cuda; assert cuda.is_available()" 2>/dev/null \
  || echo "gpu_check.sh: numba.cuda is not usable here (pip install numba-cuda); section a will say so" >&2
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec timeout "$timeout_s" "$py" benchmarks/gpu_check.py ${pass[@]+"${pass[@]}"}
