"""Atomic file writes: write to a temporary file in the same directory, then rename."""
from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import re
import stat
import tempfile
import time
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


def _temp_sibling(path: Path) -> tuple[int, str]:
    """An open fd and the name of a new ``.<name>.*.tmp`` file beside ``path`` (a name no reader opens)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _MODE)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    return fd, tmp


def _fdopen(fd: int, mode: str, encoding: str | None) -> IO:
    return os.fdopen(fd, mode) if "b" in mode else os.fdopen(fd, mode, encoding=encoding, newline="\n")


class OutputError(JustkitError, OSError):
    """An output path that cannot or must not be written (a directory, an input of the same run, ...)."""


def _target(path: Path) -> tuple[Path, os.stat_result | None]:
    """(the path to replace, its stat or None if absent). A symlink is followed, so the link stays
    a link and its target gets the new contents."""
    try:
        st = os.stat(path)  # follows links
    except FileNotFoundError:
        if path.is_symlink():  # a dangling link: write where it points
            return Path(os.path.realpath(path)), None
        return path, None
    return (Path(os.path.realpath(path)) if path.is_symlink() else path), st


@contextlib.contextmanager
def atomic_open(path: PathLike, mode: str = "w", encoding: str | None = "utf-8", fsync: bool = True) -> Iterator[IO]:
    """Open a temporary sibling of ``path`` for writing; rename it over ``path`` on success.

    On an exception (or a killed process) the target is left untouched and the
    temporary file is removed (or, after SIGKILL, left as ``.<name>.tmp*``, which no
    reader ever opens). With ``fsync`` (the default) the data is on disk before the
    rename, so that even a machine crash cannot leave a renamed file without its data;
    ``fsync=False`` skips that (a crash may leave ``path`` empty or short): for callers
    that sync many files at once themselves (``StagedFiles``).

    What is already at ``path`` is respected: a symlink stays a link (its target is replaced),
    an existing file keeps its permission bits, and a target that is not a regular file
    (``/dev/null``, ``/dev/stdout``, a FIFO) is written in place, never replaced by a file;
    a directory is an OutputError.
    """
    named = Path(path)
    path, st = _target(named)
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise OutputError(f"{path}: is a directory, cannot write a file there")
    # /dev/stdout redirected to a file resolves to that file: still written in place, through the fd
    if st is not None and (not stat.S_ISREG(st.st_mode) or str(named).startswith(("/dev/", "/proc/"))):
        path = named
        mode = mode.replace("w", "a")  # never truncate what the device or the redirected stdout already got
        with open(path, mode) if "b" in mode else open(path, mode, encoding=encoding, newline="\n") as f:
            yield f
        return
    fd, tmp = _temp_sibling(path)
    try:
        if st is not None:
            os.fchmod(fd, stat.S_IMODE(st.st_mode))
        with _fdopen(fd, mode, encoding) as f:
            yield f
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def check_writable(path: PathLike, what: str = "output") -> Path:
    """Fail now, before any work, if ``path`` cannot be written later: it is a directory, its
    parent is a file or not writable (a read-only filesystem too). Returns ``path``."""
    path = Path(path)
    if str(path).startswith(("/dev/", "/proc/")):
        return path  # /dev/stdout, /dev/null: written in place (atomic_open)
    if path.is_dir():
        raise OutputError(f"{what} {path}: is a directory")
    parent = path.parent
    while not parent.exists():
        if parent.is_symlink() or parent == parent.parent:
            break
        parent = parent.parent
    if parent.exists() and not parent.is_dir():
        raise OutputError(f"{what} {path}: {parent} is not a directory")
    if path.exists() and not path.is_file():
        return path  # a device or FIFO: written in place
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{what} {path}: directory {parent} is not writable")
    try:  # os.access does not see a read-only mount on every system
        probe = tempfile.NamedTemporaryFile(dir=parent, prefix=".write-test.", delete=True)
        probe.close()
    except OSError as e:
        raise OutputError(f"{what} {path}: cannot write in {parent} ({e.strerror})") from None
    return path


def same_file(a: PathLike, b: PathLike) -> bool:
    """True when ``a`` and ``b`` name the same existing file (links and relative paths resolved)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def sync_filesystem(path: PathLike) -> None:
    """Write everything cached of the filesystem holding ``path`` to disk, and wait: Linux
    ``syncfs`` (that filesystem only), else ``sync`` (all of them)."""
    try:
        syncfs = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        os.sync()
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        if syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"syncfs: {os.strerror(err)}", str(path))
    finally:
        os.close(fd)


class StagedFiles:
    """Many new files made durable with two filesystem syncs instead of one fsync each.

    ``open(path)`` writes a temporary sibling (no fsync); ``commit()`` syncs the filesystem,
    renames every staged file to its name and syncs again (the renames), so that a file under
    its final name always has its data on disk, as with ``atomic_open``, even after a machine
    crash. Uncommitted files stay ``.<name>.*.tmp`` (no reader opens them); ``discard()``
    removes them. ``commit_every`` files are committed as one group while staging goes on, so
    a killed job loses at most that many.
    """

    def __init__(self, commit_every: int = 1000):
        self.commit_every = commit_every
        self.pending: list[tuple[str, Path]] = []
        self.committed = 0

    @contextlib.contextmanager
    def open(self, path: PathLike, mode: str = "wb", encoding: str | None = None) -> Iterator[IO]:
        path = Path(path)
        fd, tmp = _temp_sibling(path)
        try:
            with _fdopen(fd, mode, encoding) as f:
                yield f
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        self.pending.append((tmp, path))
        if len(self.pending) >= self.commit_every:
            self.commit()

    def commit(self) -> None:
        """Make every staged file durable under its final name."""
        if not self.pending:
            return
        one_dir_per_fs = list({os.stat(d).st_dev: d for d in {p.parent for _, p in self.pending}}.values())
        for d in one_dir_per_fs:  # the data first ...
            sync_filesystem(d)
        for tmp, path in self.pending:
            os.replace(tmp, path)
        for d in one_dir_per_fs:  # ... then the names
            sync_filesystem(d)
        self.committed += len(self.pending)
        self.pending = []

    def discard(self) -> None:
        """Remove the staged files not yet committed."""
        for tmp, _ in self.pending:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        self.pending = []


def atomic_write_text(path: PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_open(path, "w") as f:
        f.write(text)


def atomic_torch_save(obj, path: PathLike) -> None:
    """``torch.save`` to ``path`` atomically, so that a half-written file is never loaded."""
    import torch  # lazy: fileio serves every command, most of which never load torch (~2 s)

    with atomic_open(path, "wb", encoding=None) as f:
        torch.save(obj, f)


class PipeRefused(JustkitError, ValueError):
    """A data file or option names a shell command where a file was expected."""


def is_pipe(spec) -> bool:
    """True for a Kaldi "extended filename" that runs a command: ``cmd |`` or ``| cmd``."""
    s = str(spec).strip()
    return s.endswith("|") or s.startswith("|")


class NotRegularFile(JustkitError, ValueError):
    """A data file or option names a device, FIFO or directory where a regular file was expected."""


_RX_OFFSET = re.compile(r"^(.*):(\d+)(\[[^\]]*\])?$")


def spec_path(spec) -> str:
    """The file of a Kaldi rxspecifier (``path``, ``path:offset``, ``path:offset[slice]``)."""
    s = str(spec).strip()
    m = _RX_OFFSET.match(s)
    return m.group(1) if m else s


def refuse_special(spec, where: str) -> str:
    """``spec`` unchanged, unless the file it names exists and is not a regular file: a read of
    ``/dev/zero`` never ends and a FIFO blocks forever, so justkit reads regular files only."""
    path = spec_path(spec)
    try:
        st = os.stat(path)
    except OSError:
        return spec  # missing: the reader's own error names it
    if not stat.S_ISREG(st.st_mode):
        kind = ("a directory" if stat.S_ISDIR(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode)
                else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else "not a regular file")
        raise NotRegularFile(f"{where}: {str(spec).strip()!r}: {path} is {kind}; justkit reads regular files only")
    return spec


def refuse_pipe(spec: str, where: str) -> str:
    """``spec`` unchanged, unless it is a Kaldi "extended filename" that runs a command
    (``cmd |`` or ``| cmd``): kaldiio would execute it. justkit reads files only, unless the
    user opts in with JUSTKIT_ALLOW_PIPES=1 (docs/trust.md). A spec naming a device, FIFO or
    directory is refused too (:func:`refuse_special`)."""
    if is_pipe(spec):
        if os.environ.get("JUSTKIT_ALLOW_PIPES") != "1":
            raise PipeRefused(f"{where}: {str(spec).strip()!r} is a shell command, not a file; justkit does not run "
                              "commands from data files or options (set JUSTKIT_ALLOW_PIPES=1 to allow it; docs/trust.md)")
        return spec
    return refuse_special(spec, where)


class Locked(JustkitError, RuntimeError):
    """Another process holds the lock of a directory this one would write."""


def lock_dir(directory: PathLike, what: str, busy: str | None = None):
    """Take the exclusive lock ``<directory>/.lock`` for the life of this process (an open file
    the caller keeps); a second process gets a Locked error naming the holder. The lock is
    released when the process ends, however it ends (flock). ``busy``: the message when it is held
    (default: "<what> is already running")."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    try:  # never through a link: truncating it below would truncate whatever it points at
        fd = os.open(d / ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, _MODE)
    except OSError as e:
        import errno

        if e.errno == errno.ELOOP:
            raise Locked(f"{d / '.lock'}: is a symbolic link; remove it (justkit makes its own lock file)") from None
        raise
    f = os.fdopen(fd, "a+", encoding="utf-8")
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "another process"
        f.close()
        raise Locked(f"{d}: {busy or what + ' is already running'} ({holder}); wait for it to end or kill it") from None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    f.flush()
    return f
