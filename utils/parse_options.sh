#!/usr/bin/env bash
# Kaldi-style option parsing for recipe scripts. Source it after declaring defaults:
#   stage=1; nj=4; langs="en de"
#   . utils/parse_options.sh
# Then `--stage 3 --nj=8 --langs "en pl"` set those variables. A name with dashes
# maps to underscores (--stop-stage == --stop_stage). An option whose variable was not
# declared is an error, exit status 2 (catches typos), as is one naming an environment, shell
# or upper-case variable (--HOME, --IFS, --PATH); `--help` prints $help_message if set.
# Positional arguments are left in "$@". The loop's own variables are _po_* (no option may
# start with '_'), so a script may have options such as --name or --value.
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
  # Only lower-case option variables (a recipe's own, or cmd.sh's exported ones): not --HOME, --PATH,
  # not the shell's (--IFS, --BASH_ENV), not this loop's own (--_po_name).
  if [ -z "${!_po_name+set}" ] || [[ "$_po_name" =~ [A-Z] ]] || [[ "$_po_name" == _* ]] \
      || [[ "$(declare -p "$_po_name" 2>/dev/null)" =~ ^declare\ -[a-zA-Z]*r ]]; then
    echo "$0: unknown option --$_po_name (not an option of this script; see --help)" >&2
    exit 2
  fi
  # Quote the value so spaces and shell characters survive.
  printf -v "$_po_name" '%s' "$_po_value"
done
true
