"""Atomic file writes: write to a temporary file in the same directory, then rename."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator, Union

from justkit.errors import JustkitError

PathLike = Union[str, os.PathLike]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Files get the permissions an ordinary open() would give them (0666 less the umask):
# mkstemp makes them 0600, which would hide data dirs and models from colleagues.
_MODE = 0o666 & ~_umask()


@contextlib.contextmanager
def atomic_open(path: PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temporary sibling of ``path`` for writing; rename it over ``path`` on success.

    On an exception (or a killed process) the target is left untouched and the
    temporary file is removed (or, after SIGKILL, left as ``.<name>.tmp*``, which no
    reader ever opens).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _MODE)
        if "b" in mode:
            f = os.fdopen(fd, mode)
        else:
            f = os.fdopen(fd, mode, encoding=encoding, newline="\n")
        with f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_open(path, "w") as f:
        f.write(text)


def atomic_torch_save(obj, path: PathLike) -> None:
    """``torch.save`` to ``path`` atomically, so that a half-written file is never loaded."""
    import torch

    with atomic_open(path, "wb", encoding=None) as f:
        torch.save(obj, f)


class PipeRefused(JustkitError, ValueError):
    """A data file or option names a shell command where a file was expected."""


def is_pipe(spec) -> bool:
    """True for a Kaldi "extended filename" that runs a command: ``cmd |`` or ``| cmd``."""
    s = str(spec).strip()
    return s.endswith("|") or s.startswith("|")


def refuse_pipe(spec: str, where: str) -> str:
    """``spec`` unchanged, unless it is a Kaldi "extended filename" that runs a command
    (``cmd |`` or ``| cmd``): kaldiio would execute it. justkit reads files only, unless the
    user opts in with JUSTKIT_ALLOW_PIPES=1 (docs/trust.md)."""
    if is_pipe(spec) and os.environ.get("JUSTKIT_ALLOW_PIPES") != "1":
        raise PipeRefused(f"{where}: {str(spec).strip()!r} is a shell command, not a file; justkit does not run commands "
                       "from data files or options (set JUSTKIT_ALLOW_PIPES=1 to allow it; docs/trust.md)")
    return spec


class Locked(JustkitError, RuntimeError):
    """Another process holds the lock of a directory this one would write."""


def lock_dir(directory: PathLike, what: str):
    """Take the exclusive lock ``<directory>/.lock`` for the life of this process (an open file
    the caller keeps); a second process gets a Locked error naming the holder. The lock is
    released when the process ends, however it ends (flock)."""
    import fcntl
    import time

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    f = open(d / ".lock", "a+", encoding="utf-8")
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "another process"
        f.close()
        raise Locked(f"{d}: {what} is already running ({holder}); wait for it to end or kill it") from None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    f.flush()
    return f
