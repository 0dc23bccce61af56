#!/usr/bin/env bash
# Source this at the top of a recipe script (after `set -euo pipefail`):
#   . utils/stop_tree.sh
# A signal sent to the script's process alone (`timeout ./run.sh`, `kill <pid>`) then stops
# everything it started (utils/run.py, its jobs, training) instead of leaving them running,
# holding locks. bash runs no trap while it waits for a foreground command, so the script
# re-runs itself as a child in its own process group and this first copy only waits: on
# SIGTERM/SIGINT/SIGHUP it passes the signal to that whole group and exits with the child's
# status. The child sees JUSTKIT_TREE set and goes on with the script.
if [ -z "${JUSTKIT_TREE:-}" ]; then
  export JUSTKIT_TREE=$$
  set -m                     # job control: the child gets a process group of its own
  "$0" "$@" &
  _tree_pid=$!
  set +m
  for _sig in TERM INT HUP; do
    # shellcheck disable=SC2064  # expand the signal name now
    trap "kill -s $_sig -- -$_tree_pid 2>/dev/null || true" "$_sig"
  done
  set +e
  while :; do
    wait "$_tree_pid"
    _tree_rc=$?
    kill -0 "$_tree_pid" 2>/dev/null || exit "$_tree_rc"  # a trap interrupted wait: wait again
  done
fi
