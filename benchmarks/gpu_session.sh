#!/usr/bin/env bash
# The one prepared command of a GPU session (issue 23): the GPU checks, then the JUST comparison,
# each under its own time limit, results copied to $OUT. On the device machine, from the repo root:
#   bash tools/fetch_gpu_wheels.sh          # here, once: .whl/ (about 5 MB, git-ignored)
#   run(command="bash benchmarks/gpu_session.sh", carry=[".whl"], timeout_s=600)
# Budget: the machine's 15 min of device time include its start (~2-3 min); this script stops
# itself after --total seconds (default 540) so that a rerun still fits. Sections:
#   1. pip install the carried wheels into /tmp/site (--no-deps: the machine's torch stays)
#   2. benchmarks/gpu_check.sh (sections a-g, <= --check seconds, default 200)
#   3. egs/mls/local/gpu_compare.sh (data, 9 training runs sharing the GPU, decoding, probe;
#      whatever time is left, at most --compare seconds, default 330)
# Files back in $OUT (the device tool returns at most 8): gpu_check.md/.json, gpu_compare.md/.json,
# alignment_gpu_compare.md, probe_gpu_compare.json, session.log. Exit status: 0 when both passed.
#   bash benchmarks/gpu_session.sh --dry-run    # the same sequence on the CPU at tiny sizes
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
total=540
check=200
compare=330
dry=0
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run|--dry_run) dry=1; shift ;;
    --total) total=$2; shift 2 ;;
    --check) check=$2; shift 2 ;;
    --compare) compare=$2; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "$0: unknown option $1" >&2; exit 2 ;;
  esac
done
out=${OUT:-$root/gpu_session_out}
mkdir -p "$out"
log=$out/session.log
t0=$(date +%s)
left() { echo $(( total - ($(date +%s) - t0) )); }
say() { echo "$(date '+%F %T') [gpu_session] $*" | tee -a "$log"; }

if [ $dry = 1 ]; then
  py=${JUSTKIT_PYTHON:-$root/tools/venv/bin/python}
else
  py=${JUSTKIT_PYTHON:-python3}
  if [ -d .whl ] && ls .whl/*.whl > /dev/null 2>&1; then
    say "installing $(ls .whl/*.whl | wc -l) carried wheels into /tmp/site"
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl >> "$log" 2>&1 \
      || { say "pip install of the carried wheels failed (see $log)"; exit 1; }
    export PYTHONPATH=/tmp/site
  fi
fi
# `python` for the recipe scripts, the machine's interpreter; justkit from this tree
mkdir -p /tmp/gpu_session_bin && ln -sf "$(command -v "$py")" /tmp/gpu_session_bin/python
export PATH=/tmp/gpu_session_bin:$PATH PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" JUSTKIT_ROOT=$root \
  JUSTKIT_NO_INSTALL=1 JUSTKIT_PYTHON=$py
"$py" -c "import torch, kaldiio, soundfile, jiwer, sentencepiece; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" 2>&1 | tee -a "$log"

status=0
say "1/2 gpu_check (limit ${check} s)"
if [ $dry = 1 ]; then
  timeout "$check" bash benchmarks/gpu_check.sh --dry-run --json "$out/gpu_check.json" --out "$out/gpu_check.md" >> "$log" 2>&1 || status=1
else
  bash benchmarks/gpu_check.sh --timeout "$check" --json "$out/gpu_check.json" --out "$out/gpu_check.md" >> "$log" 2>&1 || status=1
fi
say "gpu_check exit: $status; $(left) s left"
budget=$(left); [ "$budget" -gt "$compare" ] && budget=$compare
if [ "$budget" -lt 60 ]; then
  say "no time left for the comparison"; exit 1
fi
say "2/2 gpu_compare (limit ${budget} s)"
dryopt=false; [ $dry = 1 ] && dryopt=true
(cd egs/mls && timeout "$budget" local/gpu_compare.sh --dry_run $dryopt) >> "$log" 2>&1 || { say "gpu_compare failed or ran out of time"; status=1; }
name=gpu_compare; [ $dry = 1 ] && name=gpu_compare_dry
for f in "$name.md" "$name.json" "alignment_$name.md" "probe_$name.json"; do
  [ -f "egs/mls/results/$f" ] && cp "egs/mls/results/$f" "$out/"
done
say "done in $(( $(date +%s) - t0 )) s, status $status"
exit $status
