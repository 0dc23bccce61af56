#!/usr/bin/env bash
# Install what the tests need (tools/install.sh, idempotent) and run the whole test suite.
# Extra arguments go to pytest, e.g. `bash tools/test.sh -k fbank -x`.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$root/tools/install.sh"
cd "$root"
exec "$root/tools/venv/bin/python" -m pytest "$@"
