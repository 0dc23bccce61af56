#!/usr/bin/env bash
# Kaldi-style option parsing for recipe scripts. Source it after declaring defaults:
#   stage=1; nj=4; langs="en de"
#   . utils/parse_options.sh
# Then `--stage 3 --nj=8 --langs "en pl"` set those variables. A name with dashes
# maps to underscores (--stop-stage == --stop_stage). An option whose variable was not
# declared is an error (catches typos); `--help` prints $help_message if set.
# Positional arguments are left in "$@". The loop's own variables are _po_*, and no option
# may start with '_', so a script may have options such as --name or --value.
while true; do
  [ -z "${1:-}" ] && break
  case "$1" in
    --help|-h)
      echo "${help_message:-no help message; see the top of $0}"
      exit 0 ;;
    --*=*)
      _po_name=$(echo "${1%%=*}" | sed 's/^--//; s/-/_/g')
      _po_value="${1#*=}"
      shift ;;
    --*)
      _po_name=$(echo "$1" | sed 's/^--//; s/-/_/g')
      if [ $# -lt 2 ]; then echo "$0: option $1 needs a value" >&2; exit 1; fi
      _po_value="$2"
      shift 2 ;;
    *) break ;;
  esac
  if ! [[ "$_po_name" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]]; then
    echo "$0: invalid option name --$_po_name" >&2; exit 1
  fi
  if [ -z "${!_po_name+set}" ] || [[ "$_po_name" == _* ]]; then
    echo "$0: unknown option --$_po_name (no variable '$_po_name' declared before parse_options.sh)" >&2
    exit 1
  fi
  # Quote the value so spaces and shell characters survive.
  printf -v "$_po_name" '%s' "$_po_value"
done
true
