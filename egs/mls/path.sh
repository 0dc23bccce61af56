# Sourced by run.sh and every stage script: puts justkit's venv and utils/ on PATH.
# Makes the venv on first use (tools/install.sh is idempotent and quick when up to date).
# A recipe copied outside the checkout (tests do this) sets JUSTKIT_ROOT itself.
JUSTKIT_ROOT=${JUSTKIT_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
export JUSTKIT_ROOT
if [ -z "${JUSTKIT_NO_INSTALL:-}" ]; then
  bash "$JUSTKIT_ROOT/tools/install.sh" || { echo "path.sh: tools/install.sh failed" >&2; return 1 2>/dev/null || exit 1; }
fi
export PATH="$JUSTKIT_ROOT/tools/venv/bin:$JUSTKIT_ROOT/utils:$PATH"
export PYTHONUNBUFFERED=1
export LC_ALL=C.UTF-8
# Keep each job to its share of the cores; the job runner starts --nj of them.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
