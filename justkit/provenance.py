"""Where a result comes from: justkit's git revision and a one-line description of the machine."""
from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def git_revision(root: Path = ROOT) -> str:
    """The checkout's commit (with "+changes" when tracked files differ from it), or "unknown"."""
    try:
        rev = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return rev + ("+changes" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine() -> str:
    """CPU architecture and cores, OS, Python, torch and the GPU if any."""
    out = (f"{platform.machine()} {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
           f"Python {platform.python_version()}")
    try:
        import torch  # lazy: score and system_table describe the machine without loading torch (~2 s)

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
        out += f", torch {torch.__version__}, {gpu}"
    except ImportError:
        pass
    return out
