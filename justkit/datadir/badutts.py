"""Bad-utterance lists: per-job ``<utt> <file> <reason>`` shards and a data dir's ``bad_utts.txt``."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, List, NamedTuple

from justkit.datadir.tables import DataDirError
from justkit.fileio import atomic_open


class BadUtt(NamedTuple):
    utt: str
    file: str
    reason: str


def write_bad_shard(path: str | Path, bad: Iterable[BadUtt]) -> None:
    """``<utt> <file> <reason>`` lines, atomically (an empty file when there are none)."""
    with atomic_open(path, "w") as f:
        for b in bad:
            f.write(f"{b.utt} {b.file} {' '.join(b.reason.split())}\n")


def read_bad_shard(path: str | Path) -> List[BadUtt]:
    """Read a file written by ``write_bad_shard``; raises DataDirError naming it if absent or malformed."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataDirError(f"{path}: file not found") from None
    out = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=2)
        if len(parts) < 3:
            raise DataDirError(f"{path}:{lineno}: expected '<utt> <file> <reason>', got {line!r}")
        out.append(BadUtt(*parts))
    return out


def write_bad_utts(path: str | Path, set_name: str, bad: Iterable[BadUtt]) -> None:
    """A data dir's ``bad_utts.txt``: ``<set> <utt> <file> <reason>`` (the format of data/bad_utts.txt)."""
    rows = sorted(bad, key=lambda b: b.utt.encode("utf-8"))
    with atomic_open(path, "w") as f:
        for b in rows:
            f.write(f"{set_name} {b.utt} {b.file} {' '.join(b.reason.split())}\n")
