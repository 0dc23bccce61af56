#!/usr/bin/env bash
# Kaldi-style option parsing for recipe scripts. Source it after declaring defaults:
#   stage=1; nj=4; langs="en de"
#   . utils/parse_options.sh
# Then `--stage 3 --nj=8 --langs "en pl"` set those variables. A name with dashes
# maps to underscores (--stop-stage == --stop_stage). An option whose variable was not
# declared is an error, exit status 2 (catches typos), as is one naming an environment, shell
# or upper-case variable (--HOME, --IFS, --PATH); `--help` prints $help_message if set.
# Positional arguments are left in "$@".
while true; do
  [ -z "${1:-}" ] && break
  case "$1" in
    --help|-h)
      echo "${help_message:-no help message; see the top of $0}"
      exit 0 ;;
    --*=*)
      name=$(echo "${1%%=*}" | sed 's/^--//; s/-/_/g')
      value="${1#*=}"
      shift ;;
    --*)
      name=$(echo "$1" | sed 's/^--//; s/-/_/g')
      if [ $# -lt 2 ]; then echo "$0: option $1 needs a value" >&2; exit 1; fi
      value="$2"
      shift 2 ;;
    *) break ;;
  esac
  if ! [[ "$name" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]]; then
    echo "$0: invalid option name --$name" >&2; exit 1
  fi
  # Only lower-case option variables (a recipe's own, or cmd.sh's exported ones): not --HOME, --PATH,
  # not the shell's (--IFS, --BASH_ENV), not this loop's own (--name, --value).
  if [ -z "${!name+set}" ] || [[ "$name" =~ [A-Z] ]] || [[ "$name" == _* ]] \
      || [ "$name" = name ] || [ "$name" = value ] || [[ "$(declare -p "$name" 2>/dev/null)" =~ ^declare\ -[a-zA-Z]*r ]]; then
    echo "$0: unknown option --$name (not an option of this script; see --help)" >&2
    exit 2
  fi
  # Quote the value so spaces and shell characters survive.
  printf -v "$name" '%s' "$value"
done
true
