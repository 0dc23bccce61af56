#!/usr/bin/env bash
# Stage 1: MLS -> Kaldi data dirs (see ../../docs/interfaces.md, stage 1).
#   local/data.sh [--mls_root DIR] [--download true] [--langs "en pl"] [--nj 2] [--audio_checks false] data
# Empty --mls_root = the embedded mini-MLS corpus ($JUSTKIT_ROOT/tools/mini_mls/corpus).
# With --download true, languages missing under --mls_root are fetched from OpenSLR 94
# (resumable, md5-checked against the published md5sum.txt) and extracted there.
# Writes <data>/{train,dev,test}_<lang>/, <data>/train_<lang>_{9h,1h,10min}/, <data>/train,
# <data>/dev and <data>/bad_utts.txt; log in <data>/log/prepare_mls.log. Re-running is safe.
# --audio_checks false: no audio file is stat'ed or opened and utt2dur comes from each split's
# segments.txt: for a full MLS, where probing 11M audio headers takes hours (missing or broken
# audio then surfaces as bad utterances in stage 2).
set -euo pipefail
mls_root=""
download=false
langs="en de nl es fr pt it pl"
nj=1
flavour=opus              # release --download fetches: opus (48 kHz) or flac (16 kHz)
keep_archive=false
audio_checks=true         # false: durations from segments.txt, no audio file looked at
help_message="Usage: $0 [--mls_root DIR] [--download true|false] [--langs 'en pl'] [--nj N] [--flavour opus|flac] [--keep_archive true] [--audio_checks true|false] <data-dir>"

. "$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/path.sh"
. "$JUSTKIT_ROOT/utils/parse_options.sh"
if [ $# -ne 1 ]; then echo "$help_message" >&2; exit 1; fi
data=$1

if [ -z "$mls_root" ]; then
  [ "$download" = true ] && { echo "$0: --download true needs --mls_root (where to put MLS)" >&2; exit 1; }
  mls_root=$JUSTKIT_ROOT/tools/mini_mls/corpus
  echo "$0: using the embedded mini-MLS corpus at $mls_root"
fi
if [ "$download" = true ]; then
  mkdir -p "$mls_root"
elif [ ! -d "$mls_root" ]; then
  echo "$0: --mls_root $mls_root: no such directory (add --download true to fetch MLS there)" >&2
  exit 1
fi

case "$audio_checks" in true|false) ;; *) echo "$0: --audio_checks must be true or false, got '$audio_checks'" >&2; exit 1;; esac
flags=()
[ "$download" = true ] && flags+=(--download)
[ "$keep_archive" = true ] && flags+=(--keep_archive)
[ "$audio_checks" = false ] && flags+=(--no_audio_checks)
python -m justkit.bin.prepare_mls --mls_root "$mls_root" --langs "$langs" --nj "$nj" --flavour "$flavour" \
  "${flags[@]}" --log_file "$data/log/prepare_mls.log" "$data"
