"""Combine Kaldi data dirs into one (tables concatenated, spk2utt regenerated)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, Sequence

from justkit.datadir.tables import UTT_TABLES, DataDir, DataDirError
from justkit.datadir.subset import COPY_FILES, SPK_TABLES, read_tables, write_data_dir
from justkit.fileio import atomic_write_text

log = logging.getLogger(__name__)


def combine_data_dirs(dest: str | Path, srcs: Sequence[str | Path]) -> int:
    """Concatenate ``srcs`` into ``dest``; returns the number of utterances.

    A table is combined when every source has it (else it is left out, with a warning).
    An utterance id in two sources is an error naming both dirs.
    """
    if not srcs:
        raise DataDirError("combine: no source dirs given")
    dirs = [DataDir(s) for s in srcs]
    for d in dirs:
        if not d.path.is_dir():
            raise DataDirError(f"{d.path}: source data dir not found")
    per_src = [read_tables(d) for d in dirs]
    names = [n for n in UTT_TABLES if any(n in t for t in per_src)]
    common = [n for n in names if all(n in t for t in per_src)]
    for n in names:
        if n not in common:
            lacking = [str(d.path) for d, t in zip(dirs, per_src) if n not in t]
            log.warning("combine: %s left out of %s: missing in %s", n, dest, ", ".join(lacking))
    if not common:
        raise DataDirError(f"combine: no per-utterance table common to {', '.join(map(str, srcs))}")

    owner: Dict[str, Path] = {}
    tables: Dict[str, Dict[str, str]] = {n: {} for n in common}
    for d, t in zip(dirs, per_src):
        ids = set().union(*(t[n].keys() for n in t))
        for u in sorted(ids):
            if u in owner:
                raise DataDirError(f"combine: utterance id {u} is in both {owner[u]} and {d.path}")
            owner[u] = d.path
        for n in common:
            tables[n].update(t[n])
    write_data_dir(dest, tables, sources=[d.path for d in dirs])

    for name in SPK_TABLES:
        if all(d.has(name) for d in dirs):
            merged: Dict[str, str] = {}
            for d in dirs:
                for spk, v in d.read(name).items():
                    if merged.get(spk, v) != v:
                        raise DataDirError(f"combine: speaker {spk} has {merged[spk]!r} and {v!r} in {name} ({d.path})")
                    merged[spk] = v
            DataDir(dest).write(name, merged)
    for name in COPY_FILES:
        values = {(d.path / name).read_text(encoding="utf-8") for d in dirs if d.has(name)}
        if len(values) > 1:
            raise DataDirError(f"combine: {name} differs between {', '.join(map(str, srcs))}")
        if values and all(d.has(name) for d in dirs):
            atomic_write_text(Path(dest) / name, values.pop())
    return max(len(t) for t in tables.values())
