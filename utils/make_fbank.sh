#!/usr/bin/env bash
# Stage 3: fbank features of a data dir in parallel jobs (kaldiio ark/scp shards).
#   utils/make_fbank.sh [--nj 4] [--cmd utils/run.py] [--config conf/fbank.yaml] dump/raw/<set> dump/fbank/<set>
# Writes <dst>/data/feats.JOB.ark (+ .scp), <dst>/feats.scp, utt2num_frames, feat_dim,
# <dst>/conf/fbank.yaml (the options used) and copies the source's other files (wav.scp,
# text, utt2spk, spk2utt, utt2lang, utt2dur, ...); utterances with missing/unusable audio or shorter than one frame are
# listed in <dst>/bad_utts.txt (<set> <utt> <file> <reason>) and dropped.
# Logs: <dst>/log/fbank.JOB.log. A re-run recomputes everything: it first removes the old
# feats.scp and shards (so no index ever points into a rewritten ark); each job writes
# its ark under a temp name, renamed when complete, and feats.scp is written only when
# all jobs have succeeded.
set -euo pipefail
utils=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
nj=4
cmd="$utils/run.py"
config=conf/fbank.yaml
help_message="Usage: $0 [--nj N] [--cmd 'utils/run.py ...'] [--config conf/fbank.yaml] <src-data-dir> <dst-dir>"
. "$utils/parse_options.sh"
if [ $# -ne 2 ]; then echo "$help_message" >&2; exit 1; fi
src=${1%/}
dst=${2%/}
die() { echo "$0: $*" >&2; exit 1; }

[ -f "$src/wav.scp" ] || die "$src/wav.scp: file not found"
[ -f "$src/segments" ] && die "$src/segments: segmented data dirs are not supported (one file per utterance)"
[ -f "$config" ] || die "$config: fbank config not found"
[[ "$nj" =~ ^[1-9][0-9]*$ ]] || die "--nj must be a positive integer, got '$nj'"
[ "$(cd "$src" && pwd -P)" != "$(mkdir -p "$dst" && cd "$dst" && pwd -P)" ] || die "source and destination are the same dir: $src"
n=$(grep -c . "$src/wav.scp" || true)
[ "$n" -gt 0 ] || die "$src/wav.scp: no utterances"
[ "$nj" -le "$n" ] || nj=$n

mkdir -p "$dst/log" "$dst/split" "$dst/data" "$dst/conf"
# One writer per output dir: a second run of this stage on it stops here, naming the first.
exec 9>>"$dst/.lock"
flock -n 9 || die "$dst is being written by another run (lock $dst/.lock); wait for it to end or kill it"
# Check the config before anything is removed; keep a copy of the options used.
python - "$config" "$dst/conf/fbank.yaml" <<'PY' || die "$config: invalid fbank config"
import sys
from justkit.config import dump_yaml, to_dict
from justkit.frontend.fbank import load_fbank_config
dump_yaml({"fbank": to_dict(load_fbank_config(sys.argv[1]))}, sys.argv[2])
PY
# The old index goes first, then the shards it pointed into and any temp leftovers.
rm -f "$dst/feats.scp" "$dst/utt2num_frames" "$dst/feat_dim"
rm -f "$dst"/data/feats.*.ark "$dst"/data/feats.*.scp "$dst"/split/fbank.* "$dst"/split/wav.*.scp
find "$dst/data" -name '.*.tmp' -type f -delete
"$utils/split_scp.py" "$src/wav.scp" $(for j in $(seq "$nj"); do echo "$dst/split/wav.$j.scp"; done)

echo "$0: fbank of $n utterances of $src with $nj job(s); logs in $dst/log/fbank.*.log"
eval "cmd_words=($cmd)"   # the runner and its options, quotes respected
qdst=$(printf '%q' "$dst")  # paths are data in the job's command line, never shell syntax
"${cmd_words[@]}" JOB=1:"$nj" "$dst/log/fbank.JOB.log" \
  python -m justkit.bin.fbank --config "$qdst/conf/fbank.yaml" --ark "$qdst/data/feats.JOB.ark" \
    "$qdst/split/wav.JOB.scp" "$qdst/split/fbank.JOB" \
  || die "fbank failed; see the job logs named above ($dst/log/fbank.*.log)"

python -m justkit.bin.merge_jobs --nj "$nj" --feat_dim \
  --table utt2num_frames="$dst/split/fbank.JOB.utt2num_frames" --table feats.scp="$dst/data/feats.JOB.scp" \
  --bad "$dst/split/fbank.JOB.bad" "$src" "$dst" \
  || die "merging the job outputs into $dst failed"
echo "$0: done: $dst ($(grep -c . "$dst/feats.scp") utterances, $(grep -c . "$dst/bad_utts.txt" || true) bad)"
