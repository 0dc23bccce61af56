"""Merge the per-job outputs of a parallel stage (2 or 3) into its output data dir; record and drop bad utterances."""
from __future__ import annotations

import heapq
import logging
import shutil
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple


from justkit.datadir.badutts import BadUtt, read_bad_shard, write_bad_utts
from justkit.datadir.tables import (
    DataDirError, SortedTableWriter, TableNotSorted, iter_sorted_table, iter_table, read_table, write_table)
from justkit.datadir.validate import DataDirInvalid, fix_data_dir, validate_data_dir
from justkit.fileio import atomic_open

log = logging.getLogger(__name__)

# Every top-level file of the source dir is copied (text, utt2spk, spk2utt, utt2lang,
# spk2gender, cs_sources, ...) except those the stage produces and these, which describe
# the source's own stage and would be stale in the output.
NOT_COPIED = ("bad_utts.txt", "feats.scp", "utt2num_frames", "feat_dim", "cmvn.ark")


def merge_job_tables(pattern: str, nj: int, var: str = "JOB") -> Dict[str, str]:
    """Union of the tables ``pattern`` with ``var`` = 1..nj; a missing shard or a repeated id is an error."""
    out: Dict[str, str] = {}
    for j in range(1, nj + 1):
        path = Path(pattern.replace(var, str(j)))
        if not path.is_file():
            raise DataDirError(f"{path}: output of job {j} not found (did the job finish? see its log)")
        for k, v in read_table(path).items():
            if k in out:
                raise DataDirError(f"{path}: utterance {k} also produced by an earlier job")
            out[k] = v
    return out


def _job_paths(pattern: str, nj: int, var: str = "JOB") -> List[Path]:
    paths = [Path(pattern.replace(var, str(j))) for j in range(1, nj + 1)]
    for j, path in enumerate(paths, 1):
        if not path.is_file():
            raise DataDirError(f"{path}: output of job {j} not found (did the job finish? see its log)")
    return paths


def _job_rows(path: Path, j: int) -> Iterator[Tuple[bytes, int, str, str]]:
    for key, t in iter_sorted_table(path):
        yield key, j, t.key, t.value


def write_merged_job_table(dst: Path, pattern: str, nj: int, var: str = "JOB") -> Tuple[int, Optional[str]]:
    """Write the union of the jobs' tables ``pattern`` (``var`` = 1..nj) to ``dst``, sorted, as a
    k-way merge of the jobs' sorted outputs (memory does not grow with the set); a missing
    shard or an id two jobs produced is an error. Returns (rows, first value)."""
    paths = _job_paths(pattern, nj, var)
    try:
        n, first, prev = 0, None, None
        with atomic_open(dst, "w") as f:
            w = SortedTableWriter(f, dst)
            for key, j, k, v in heapq.merge(*(_job_rows(p, j) for j, p in enumerate(paths))):
                if key == prev:
                    raise DataDirError(f"{paths[j]}: utterance {k} also produced by an earlier job")
                prev = key
                w.write(k, v)
                first = v if first is None else first
                n += 1
        return n, first
    except TableNotSorted:  # nothing was renamed into place; a dict sorts it
        table = merge_job_tables(pattern, nj, var)
        write_table(dst, table)
        return len(table), next(iter(table.values()), None)


def copy_file(src: Path, dst: Path) -> None:
    with open(src, "rb") as fi, atomic_open(dst, "wb", encoding=None) as fo:
        shutil.copyfileobj(fi, fo)


def finish(src: Path, dst: Path, nj: int, tables: Sequence[tuple], bad_pattern: str,
           require: Sequence[str] = ("utt2spk", "spk2utt")) -> dict:
    """Copy the source dir's files, write the merged job ``tables`` [(name, pattern)] (the last
    one last), write ``dst/bad_utts.txt`` and drop those utterances (fix_data_dir).

    Languages are checked by stage 1; whatever codes the source's utt2lang uses (e.g. the
    code-switch set's ``en-de``) are accepted here. Returns fix_data_dir's ``{"kept",
    "dropped"}``. Raises DataDirError when a job's output is missing, and DataDirInvalid
    when the result does not validate.
    """
    if src.resolve() == dst.resolve():
        raise DataDirError(f"{dst}: output dir must differ from the input dir {src}")
    for _, pattern in tables:
        _job_paths(pattern, nj)  # every job's output exists before anything is written
    bad: List[BadUtt] = []
    for j in range(1, nj + 1):
        bad.extend(read_bad_shard(bad_pattern.replace("JOB", str(j))))
    produced = {name for name, _ in tables}
    for f in sorted(src.iterdir()):
        if f.is_file() and not f.name.startswith(".") and f.name not in produced and f.name not in NOT_COPIED:
            copy_file(f, dst / f.name)
    langs = {t.value for t in iter_table(src / "utt2lang")} if (src / "utt2lang").is_file() else set()
    write_bad_utts(dst / "bad_utts.txt", dst.name, bad)
    for name, pattern in tables:
        n, _ = write_merged_job_table(dst / name, pattern, nj)
        if name == "feats.scp" and not n:
            raise DataDirInvalid(f"{dst}: no utterance has features (see {dst}/bad_utts.txt)")
    for b in bad:
        log.warning("%s: dropping utterance %s (%s): %s", dst, b.utt, b.file, b.reason)
    res = fix_data_dir(dst, drop_utts={b.utt: f"{b.reason} ({b.file})" for b in bad}, known_langs=langs)
    for utt, why in res["dropped"].items():
        if utt not in {b.utt for b in bad}:
            log.warning("%s: fix_data_dir dropped %s: %s", dst, utt, why)
    problems = validate_data_dir(dst, require=tuple(produced) + tuple(require), known_langs=langs)
    if problems:
        raise DataDirInvalid(problems)
    log.info("%s: %d utterances kept, %d dropped (%d bad, listed in %s)",
             dst, res["kept"], len(res["dropped"]), len(bad), dst / "bad_utts.txt")
    return res
