"""Subset a Kaldi data dir to a list of utterances (every per-utt table, spk2utt regenerated)."""
from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Mapping

from justkit.datadir.tables import UTT_TABLES, DataDir, DataDirError, iter_table, utt2spk_to_spk2utt
from justkit.fileio import atomic_write_text

log = logging.getLogger(__name__)

# Speaker-indexed tables kept for the speakers that remain.
SPK_TABLES = ("spk2gender",)
# Small whole-dir files copied unchanged.
COPY_FILES = ("feat_dim", "frame_shift")


@dataclass
class SubsetConfig:
    """How subset_data_dir picks utterances: an explicit list, the first N, or N at random."""

    utt_list: str | None = None
    first: int | None = None
    random: int | None = None
    seed: int = 0


def _sorted_ids(ids: Iterable[str]) -> List[str]:
    return sorted(ids, key=lambda s: s.encode("utf-8"))


def read_tables(src: DataDir) -> Dict[str, Dict[str, str]]:
    """All per-utterance tables of ``src`` that exist (text may hold empty transcripts)."""
    return {n: src.read(n, allow_empty_value=(n == "text")) for n in UTT_TABLES if src.has(n)}


def read_tables_of(src: DataDir, keep: Iterable[str]) -> Dict[str, Dict[str, str]]:
    """The rows of ``keep`` in every per-utterance table of ``src`` that exists, in one streaming
    pass per table: memory grows with ``keep``, not with ``src`` (a 9-hour subset of a
    10M-utterance dir). Every line is still checked (UTF-8, empty value); a repeated id is an
    error when it is one of ``keep`` (the others are not read into memory)."""
    wanted = set(keep)
    out: Dict[str, Dict[str, str]] = {}
    for name in UTT_TABLES:
        if not src.has(name):
            continue
        path = src.path / name
        rows: Dict[str, str] = {}
        for t in iter_table(path):
            if t.error:
                raise DataDirError(f"{path}:{t.lineno}: id {t.key}: {t.error}")
            if not t.value and name != "text":
                raise DataDirError(f"{path}:{t.lineno}: id {t.key}: empty value")
            if t.key in wanted:
                if t.key in rows:
                    raise DataDirError(f"{path}:{t.lineno}: id {t.key}: duplicated")
                rows[t.key] = t.value
        out[name] = rows
    return out


def remove_stale(dest: Path, written: Iterable[str]) -> None:
    """Remove the known tables of ``dest`` not in ``written`` (left by an earlier run), so that the
    dir never mixes two generations."""
    written = set(written)
    out = DataDir(dest)
    for name in (*UTT_TABLES, "spk2utt"):
        if name not in written and out.has(name):
            log.warning("%s: removing stale %s (not in the source dirs)", dest, name)
            (Path(dest) / name).unlink()


def write_data_dir(dest: str | Path, tables: Mapping[str, Mapping[str, str]], sources: Iterable[Path] = ()) -> None:
    """Write per-utt tables (sorted, atomic) and spk2utt into ``dest``.

    Known tables left in ``dest`` by an earlier run that are not written now are removed,
    so the dir never mixes two generations. ``dest`` must not be one of ``sources``.
    """
    dest = Path(dest)
    for s in sources:
        if Path(s).resolve() == dest.resolve():
            raise DataDirError(f"{dest}: destination is also a source dir; choose another destination")
    dest.mkdir(parents=True, exist_ok=True)
    out = DataDir(dest)
    for name, table in tables.items():
        out.write(name, table)
    if "utt2spk" in tables:
        out.write("spk2utt", utt2spk_to_spk2utt(tables["utt2spk"]))
    remove_stale(dest, [*tables, *(["spk2utt"] if "utt2spk" in tables else [])])


def select_utts(src: str | Path, cfg: SubsetConfig) -> List[str]:
    """The utterance ids ``cfg`` picks from ``src`` (sorted)."""
    d = DataDir(src)
    ids = _sorted_ids(d.read("utt2spk") if d.has("utt2spk") else d.utt_ids())
    chosen = [cfg.utt_list is not None, cfg.first is not None, cfg.random is not None]
    if sum(chosen) != 1:
        raise DataDirError("subset: give exactly one of utt_list, first, random")
    if cfg.utt_list is not None:
        wanted = []
        for t in iter_table(cfg.utt_list):
            if t.error:
                raise DataDirError(f"{cfg.utt_list}:{t.lineno}: id {t.key}: {t.error}")
            wanted.append(t.key)
        have = set(ids)
        missing = [u for u in wanted if u not in have]
        if missing:
            log.warning(
                "%s: %d of %d ids in %s are not in the data dir (e.g. %s); skipped",
                src, len(missing), len(wanted), cfg.utt_list, ", ".join(missing[:5]),
            )
        return _sorted_ids(set(wanted) & have)
    n = cfg.first if cfg.first is not None else cfg.random
    if n is None or n <= 0 or n > len(ids):
        raise DataDirError(f"{src}: cannot take {n} utterances of {len(ids)}")
    if cfg.first is not None:
        return ids[:n]
    return _sorted_ids(random.Random(cfg.seed).sample(ids, n))


def subset_data_dir(src: str | Path, dest: str | Path, utts: Iterable[str]) -> int:
    """Write to ``dest`` the utterances ``utts`` of ``src``; returns how many were written.

    One filtering pass over each table of ``src``: memory grows with the subset, not the source.
    """
    s = DataDir(src)
    tables = read_tables_of(s, utts)
    if not tables:
        raise DataDirError(f"{src}: no per-utterance table ({', '.join(UTT_TABLES)})")
    counts = {len(t) for t in tables.values()}
    n = max(counts)
    if n == 0:
        raise DataDirError(f"{src}: none of the requested utterances is in the data dir")
    write_data_dir(dest, tables, sources=[s.path])
    speakers = set(tables.get("utt2spk", {}).values())
    for name in SPK_TABLES:
        if s.has(name):
            DataDir(dest).write(name, {k: v for k, v in s.read(name).items() if k in speakers})
    for name in COPY_FILES:
        if s.has(name):
            atomic_write_text(Path(dest) / name, (s.path / name).read_text(encoding="utf-8"))
    return n
