"""Combine Kaldi data dirs into one (tables merged in sorted order, spk2utt regenerated)."""
from __future__ import annotations

import contextlib
import heapq
import logging
from pathlib import Path
from typing import Dict, Iterator, List, Sequence, Tuple

from justkit.datadir.tables import (
    UTT_TABLES, DataDir, DataDirError, SortedTableWriter, TableNotSorted, iter_sorted_table, write_spk2utt)
from justkit.datadir.subset import COPY_FILES, SPK_TABLES, read_tables, remove_stale, write_data_dir
from justkit.fileio import atomic_open, atomic_write_text

log = logging.getLogger(__name__)


def _sorted_rows(d: DataDir, name: str, order: int) -> Iterator[Tuple[bytes, int, str, str, Path]]:
    """(byte key, source order, key, value, source dir) of ``d/name`` (TableNotSorted at the first
    key out of order: the caller combines in memory instead)."""
    for bkey, t in iter_sorted_table(d.path / name, allow_empty_value=(name == "text")):
        yield bkey, order, t.key, t.value, d.path


def _merge_sorted(dest: Path, dirs: List[DataDir], common: Sequence[str]) -> int:
    """k-way merge of every table in ``common`` (each source sorted) into ``dest``; memory does not
    grow with the corpus. Every table stays under its temporary name until all are written, so
    an error leaves ``dest`` as it was. Returns the largest row count written."""
    n = 0
    with contextlib.ExitStack() as stack:
        for name in common:
            f = stack.enter_context(atomic_open(dest / name, "w"))
            w = SortedTableWriter(f, dest / name)
            prev_key, prev_src = None, None
            for bkey, _, key, value, src in heapq.merge(*(_sorted_rows(d, name, i) for i, d in enumerate(dirs))):
                if bkey == prev_key:
                    raise DataDirError(f"combine: utterance id {key} is in both {prev_src} and {src}")
                prev_key, prev_src = bkey, src
                w.write(key, value)
            n = max(n, w.n)
    if "utt2spk" in common:
        write_spk2utt(dest / "spk2utt", dest / "utt2spk")
    remove_stale(dest, [*common, *(["spk2utt"] if "utt2spk" in common else [])])
    return n


def _merge_dicts(dest: Path, dirs: List[DataDir], common: Sequence[str]) -> int:
    """The same for sources that are not sorted: every table read into memory."""
    per_src = [read_tables(d) for d in dirs]
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
    return max(len(t) for t in tables.values())


def combine_data_dirs(dest: str | Path, srcs: Sequence[str | Path]) -> int:
    """Combine ``srcs`` into ``dest``; returns the number of utterances.

    A table is combined when every source has it (else it is left out, with a warning).
    An utterance id in two sources is an error naming both dirs. Sorted sources (every data
    dir justkit writes) are merged line by line (``heapq.merge``), so combining the full MLS
    does not hold it in memory; unsorted ones are read into dicts.
    """
    if not srcs:
        raise DataDirError("combine: no source dirs given")
    dirs = [DataDir(s) for s in srcs]
    for d in dirs:
        if not d.path.is_dir():
            raise DataDirError(f"{d.path}: source data dir not found")
    dest = Path(dest)
    for d in dirs:
        if d.path.resolve() == dest.resolve():
            raise DataDirError(f"{dest}: destination is also a source dir; choose another destination")
    names = [n for n in UTT_TABLES if any(d.has(n) for d in dirs)]
    common = [n for n in names if all(d.has(n) for d in dirs)]
    for n in names:
        if n not in common:
            lacking = [str(d.path) for d in dirs if not d.has(n)]
            log.warning("combine: %s left out of %s: missing in %s", n, dest, ", ".join(lacking))
    if not common:
        raise DataDirError(f"combine: no per-utterance table common to {', '.join(map(str, srcs))}")

    dest.mkdir(parents=True, exist_ok=True)
    try:
        n = _merge_sorted(dest, dirs, common)
    except TableNotSorted as e:
        log.info("combine: %s; combining in memory", e)
        n = _merge_dicts(dest, dirs, common)

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
    return n
