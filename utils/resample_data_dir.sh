#!/usr/bin/env bash
# Stage 2: resample a data dir's audio to FLAC at --fs in parallel jobs.
#   utils/resample_data_dir.sh [--nj 4] [--cmd utils/run.py] [--fs 16000] data/<set> dump/raw/<set>
# Writes <dst>/data/xx/<utt>.flac, <dst>/wav.scp pointing at them, <dst>/utt2dur (of the
# new audio) and copies the source's other files (text, utt2spk, spk2utt, utt2lang, ...);
# utterances whose audio is missing or unusable are listed in <dst>/bad_utts.txt
# (<set> <utt> <file> <reason>) and dropped.
# Logs: <dst>/log/resample.JOB.log. A re-run whose source dir (tables and the audio they name, by size
# and mtime) and --fs are those of the last finished run, and whose outputs are all as that run left
# them, does nothing and says so (the record: <dst>/.stamp.json, justkit/stamp.py); any other re-run
# skips the files that are already complete and says how many it resampled and skipped;
# every file is written under a temp name and renamed (FLACs in groups of 1000, after one
# filesystem sync: no fsync per file, and none is under its name before its data is on disk),
# and wav.scp is written only when all jobs have succeeded, so a killed run leaves nothing
# that a later stage reads.
set -euo pipefail
utils=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
nj=4
cmd="$utils/run.py"
fs=16000
help_message="Usage: $0 [--nj N] [--cmd 'utils/run.py ...'] [--fs 16000] <src-data-dir> <dst-dir>"
. "$utils/parse_options.sh"
if [ $# -ne 2 ]; then echo "$help_message" >&2; exit 1; fi
src=${1%/}
dst=${2%/}
die() { echo "$0: $*" >&2; exit 1; }

[ -f "$src/wav.scp" ] || die "$src/wav.scp: file not found"
[ -f "$src/segments" ] && die "$src/segments: segmented data dirs are not supported (one file per utterance)"
for f in utt2spk spk2utt; do  # the merge needs them: find out now, not after all the work
  [ -f "$src/$f" ] || die "$src/$f: file not found (utils/fix_data_dir.py makes spk2utt from utt2spk)"
done
[[ "$nj" =~ ^[1-9][0-9]*$ ]] || die "--nj must be a positive integer, got '$nj'"
[[ "$fs" =~ ^[1-9][0-9]*$ ]] || die "--fs must be a positive integer (Hz), got '$fs'"
[ "$(cd "$src" && pwd -P)" != "$(mkdir -p "$dst" && cd "$dst" && pwd -P)" ] || die "source and destination are the same dir: $src"
n=$(grep -c . "$src/wav.scp" || true)
[ "$n" -gt 0 ] || die "$src/wav.scp: no utterances"
[ "$nj" -le "$n" ] || nj=$n

mkdir -p "$dst/log" "$dst/split" "$dst/data"
# One writer per output dir: a second run of this stage on it stops here, naming the first.
exec 9>>"$dst/.lock"
flock -n 9 || die "$dst is being written by another run (lock $dst/.lock); wait for it to end or kill it"
stamp=(python -m justkit.bin.stamp --what "$0" --input_dir "$src" --listed "$src/wav.scp" --opt "fs=$fs" --tree data)
rc=0; "${stamp[@]}" check "$dst" || rc=$?
[ "$rc" -eq 0 ] && exit 0
[ "$rc" -eq 1 ] || die "checking whether $dst is up to date failed (see above)"
# Leftovers of killed jobs: temp files (never read) and per-job outputs of earlier runs.
find "$dst/data" -name '.*.tmp' -type f -delete
rm -f "$dst"/split/resample.* "$dst"/split/wav.*.scp
"$utils/split_scp.py" "$src/wav.scp" $(for j in $(seq "$nj"); do echo "$dst/split/wav.$j.scp"; done)

echo "$0: resampling $n utterances of $src to $fs Hz with $nj job(s) (files an earlier run finished are kept);" \
     "logs in $dst/log/resample.*.log"
eval "cmd_words=($cmd)"   # the runner and its options, quotes respected
qdst=$(printf '%q' "$dst")  # paths are data in the job's command line, never shell syntax
"${cmd_words[@]}" JOB=1:"$nj" "$dst/log/resample.JOB.log" \
  python -m justkit.bin.resample --fs "$fs" --audio_dir "$qdst/data" \
    "$qdst/split/wav.JOB.scp" "$qdst/split/resample.JOB" \
  || die "resampling failed; see the job logs named above ($dst/log/resample.*.log)"

python -m justkit.bin.merge_jobs --nj "$nj" \
  --table utt2dur="$dst/split/resample.JOB.utt2dur" --table wav.scp="$dst/split/resample.JOB.scp" \
  --bad "$dst/split/resample.JOB.bad" "$src" "$dst" \
  || die "merging the job outputs into $dst failed"
# What the jobs did: resampled, kept from an earlier run, bad (each job's <prefix>.counts)
read -r done_n kept_n < <(cat "$dst"/split/resample.*.counts | awk '
  $1 == "resampled" { r += $2 } $1 == "skipped" { s += $2 } END { print r + 0, s + 0 }')
kept=$(grep -c . "$dst/wav.scp")
bad_n=$(grep -c . "$dst/bad_utts.txt" || true)
"${stamp[@]}" write "$dst" --count "utterances=$kept" --count "bad=$bad_n"
echo "$0: done: $dst ($kept utterances: $done_n resampled, $kept_n already done by an earlier run (skipped), $bad_n bad)"
