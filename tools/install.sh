#!/usr/bin/env bash
# Make (or bring up to date) the venv under tools/venv with justkit's pinned
# dependencies and justkit itself (editable). Idempotent: a second run with the same
# tools/requirements.txt and setup.cfg installs nothing and returns in well under a second.
#
# Usage: bash tools/install.sh [--force]
#   PYTHON=python3.11 bash tools/install.sh   # pick the interpreter for the venv
set -euo pipefail
tools_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$tools_dir")
venv=$tools_dir/venv
stamp=$tools_dir/.install_stamp
python=${PYTHON:-python3}
force=false
[ "${1:-}" = "--force" ] && force=true

want=$(cat "$tools_dir/requirements.txt" "$root/setup.cfg" | sha256sum | cut -d' ' -f1)
if ! $force && [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "tools/install.sh: $venv is up to date" >&2
  exit 0
fi

if [ ! -x "$venv/bin/python" ]; then
  echo "tools/install.sh: creating $venv with $($python --version 2>&1)" >&2
  "$python" -m venv "$venv"
fi
echo "tools/install.sh: installing pinned requirements (torch is large: minutes on first run)" >&2
"$venv/bin/python" -m pip install --disable-pip-version-check -q -r "$tools_dir/requirements.txt"
"$venv/bin/python" -m pip install --disable-pip-version-check -q --no-deps --no-build-isolation -e "$root"
# Fail now, not in stage 6, if the torch/torchaudio pair does not load its extension.
"$venv/bin/python" - <<'PY'
import torch, torchaudio, torchaudio.functional as F, torchaudio.compliance.kaldi  # noqa: F401
logits = torch.zeros(1, 2, 2, 3)
F.rnnt_loss(logits, torch.ones(1, 1, dtype=torch.int32), torch.tensor([2], dtype=torch.int32),
            torch.tensor([1], dtype=torch.int32))
print(f"tools/install.sh: torch {torch.__version__}, torchaudio {torchaudio.__version__}: ok")
PY
echo "$want" > "$stamp.tmp" && mv "$stamp.tmp" "$stamp"
