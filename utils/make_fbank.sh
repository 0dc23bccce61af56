#!/usr/bin/env bash
# Stage 3: fbank features of a data dir in parallel jobs (kaldiio ark/scp shards).
#   utils/make_fbank.sh [--nj 4] [--cmd utils/run.py] [--config conf/fbank.yaml] dump/raw/<set> dump/fbank/<set>
# With --feats_type raw (the data loader computes fbank on the fly) no features are stored: <dst>
# gets utt2num_frames (from the audio header and the config's framing), feat_dim, conf/fbank.yaml,
# the source's files (wav.scp, ...) and, with --cmvn_fraction F > 0, cmvn.ark: global CMVN stats of
# the fbank of a seeded share F of the utterances (1 = all), summed over the jobs.
# Writes <dst>/data/feats.JOB.ark (+ .scp), <dst>/feats.scp, utt2num_frames, feat_dim,
# <dst>/conf/fbank.yaml (the options used) and copies the source's other files (wav.scp,
# text, utt2spk, spk2utt, utt2lang, utt2dur, ...); utterances with missing/unusable audio or shorter than one frame are
# listed in <dst>/bad_utts.txt (<set> <utt> <file> <reason>) and dropped.
# Logs: <dst>/log/fbank.JOB.log. A re-run whose source dir (tables and the audio they name, by size
# and mtime), resolved fbank config and options are those of the last finished run, and whose outputs
# are all as that run left them, does nothing and says so (the record: <dst>/.stamp.json,
# justkit/stamp.py). Any other re-run recomputes everything: it first removes the old
# feats.scp and shards (so no index ever points into a rewritten ark); each job writes
# its ark under a temp name, renamed when complete, and feats.scp is written only when
# all jobs have succeeded.
set -euo pipefail
utils=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
nj=4
cmd="$utils/run.py"
config=conf/fbank.yaml
feats_type=fbank
cmvn_fraction=0
cmvn_seed=0
help_message="Usage: $0 [--nj N] [--cmd 'utils/run.py ...'] [--config conf/fbank.yaml] [--feats_type fbank|raw]
       [--cmvn_fraction F (raw: CMVN stats from this share of utterances; 0 = none)] [--cmvn_seed N] <src-data-dir> <dst-dir>"
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
[ -f "$config" ] || die "$config: fbank config not found"
[[ "$nj" =~ ^[1-9][0-9]*$ ]] || die "--nj must be a positive integer, got '$nj'"
[ "$feats_type" = fbank ] || [ "$feats_type" = raw ] || die "--feats_type must be fbank or raw, got '$feats_type'"
[[ "$cmvn_fraction" =~ ^(0|1|0?\.[0-9]+|1\.0*)$ ]] || die "--cmvn_fraction must be a number in [0, 1], got '$cmvn_fraction'"
[[ "$cmvn_seed" =~ ^[0-9]+$ ]] || die "--cmvn_seed must be a non-negative integer, got '$cmvn_seed'"
[ "$(cd "$src" && pwd -P)" != "$(mkdir -p "$dst" && cd "$dst" && pwd -P)" ] || die "source and destination are the same dir: $src"
n=$(grep -c . "$src/wav.scp" || true)
[ "$n" -gt 0 ] || die "$src/wav.scp: no utterances"
[ "$nj" -le "$n" ] || nj=$n

mkdir -p "$dst/log" "$dst/split" "$dst/data" "$dst/conf"
# One writer per output dir: a second run of this stage on it stops here, naming the first.
exec 9>>"$dst/.lock"
flock -n 9 || die "$dst is being written by another run (lock $dst/.lock); wait for it to end or kill it"
# Check the config before anything is removed; keep a copy of the options used (resolved: defaults filled in).
dim=$(python - "$config" "$dst/split/resolved_fbank.yaml" <<'PY'
import sys
from justkit.config import dump_yaml, to_dict
from justkit.frontend.fbank import load_fbank_config
cfg = load_fbank_config(sys.argv[1])
dump_yaml({"fbank": to_dict(cfg)}, sys.argv[2])
print(cfg.dim)
PY
) || die "$config: invalid fbank config"
# Nothing to do when the last finished run had the same inputs and config and its outputs are intact.
stamp=(python -m justkit.bin.stamp --what "$0" --input_dir "$src" --listed "$src/wav.scp"
       --config_file "$dst/split/resolved_fbank.yaml" --opt "feats_type=$feats_type" --tree data --tree conf)
[ "$feats_type" = raw ] && stamp+=(--opt "cmvn_fraction=$cmvn_fraction" --opt "cmvn_seed=$cmvn_seed")
rc=0; "${stamp[@]}" check "$dst" || rc=$?
[ "$rc" -eq 0 ] && exit 0
[ "$rc" -eq 1 ] || die "checking whether $dst is up to date failed (see above)"
mv "$dst/split/resolved_fbank.yaml" "$dst/conf/fbank.yaml"
# Split first (it refuses a repeated id, naming the source's line), so that a bad wav.scp removes nothing;
# then the old index goes, then the shards it pointed into and any temp leftovers.
rm -f "$dst"/split/wav.*.scp
"$utils/split_scp.py" "$src/wav.scp" $(for j in $(seq "$nj"); do echo "$dst/split/wav.$j.scp"; done)
rm -f "$dst/feats.scp" "$dst/utt2num_frames" "$dst/feat_dim" "$dst/cmvn.ark"
rm -f "$dst"/data/feats.*.ark "$dst"/data/feats.*.scp "$dst"/split/fbank.* "$dst"/split/cmvn.*
find "$dst/data" -name '.*.tmp' -type f -delete

eval "cmd_words=($cmd)"   # the runner and its options, quotes respected
qdst=$(printf '%q' "$dst")  # paths are data in the job's command line, never shell syntax

if [ "$feats_type" = raw ]; then
  echo "$0: frame counts of $n utterances of $src with $nj job(s) (features on the fly: none stored;" \
       "CMVN share $cmvn_fraction); logs in $dst/log/fbank.*.log"
  rm -rf "$dst/data"
  stats_opts=(); merge_opts=()
  if awk -v f="$cmvn_fraction" 'BEGIN { exit !(f > 0) }'; then
    stats_opts=(--cmvn_fraction "$cmvn_fraction" --cmvn_seed "$cmvn_seed" --cmvn_stats "$qdst/split/cmvn.JOB.ark")
    merge_opts=(--cmvn_stats "$dst/split/cmvn.JOB.ark=$dst/cmvn.ark")
  fi
  "${cmd_words[@]}" JOB=1:"$nj" "$dst/log/fbank.JOB.log" \
    python -m justkit.bin.fbank --feats_type raw --config "$qdst/conf/fbank.yaml" "${stats_opts[@]}" \
      "$qdst/split/wav.JOB.scp" "$qdst/split/fbank.JOB" \
    || die "frame counting failed; see the job logs named above ($dst/log/fbank.*.log)"
  python -m justkit.bin.merge_jobs --nj "$nj" "${merge_opts[@]}" \
    --table utt2num_frames="$dst/split/fbank.JOB.utt2num_frames" \
    --bad "$dst/split/fbank.JOB.bad" "$src" "$dst" \
    || die "merging the job outputs into $dst failed"
  echo "$dim" > "$dst/feat_dim.tmp" && mv "$dst/feat_dim.tmp" "$dst/feat_dim"
  kept=$(grep -c . "$dst/utt2num_frames"); bad_n=$(grep -c . "$dst/bad_utts.txt" || true)
  "${stamp[@]}" write "$dst" --count "utterances=$kept" --count "bad=$bad_n"
  echo "$0: done: $dst ($kept utterances counted, $bad_n bad; features on the fly)"
  exit 0
fi

echo "$0: fbank of $n utterances of $src with $nj job(s); logs in $dst/log/fbank.*.log"
"${cmd_words[@]}" JOB=1:"$nj" "$dst/log/fbank.JOB.log" \
  python -m justkit.bin.fbank --config "$qdst/conf/fbank.yaml" --ark "$qdst/data/feats.JOB.ark" \
    "$qdst/split/wav.JOB.scp" "$qdst/split/fbank.JOB" \
  || die "fbank failed; see the job logs named above ($dst/log/fbank.*.log)"

python -m justkit.bin.merge_jobs --nj "$nj" \
  --table utt2num_frames="$dst/split/fbank.JOB.utt2num_frames" --table feats.scp="$dst/data/feats.JOB.scp" \
  --bad "$dst/split/fbank.JOB.bad" "$src" "$dst" \
  || die "merging the job outputs into $dst failed"
# feat_dim (Kaldi's file, for tools that read it): the config's dimension, the one source of it
echo "$dim" > "$dst/feat_dim.tmp" && mv "$dst/feat_dim.tmp" "$dst/feat_dim"
kept=$(grep -c . "$dst/feats.scp"); bad_n=$(grep -c . "$dst/bad_utts.txt" || true)
"${stamp[@]}" write "$dst" --count "utterances=$kept" --count "bad=$bad_n"
echo "$0: done: $dst (fbank of $kept utterances computed, $bad_n bad)"
