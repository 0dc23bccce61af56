"""Validate a Kaldi data directory (report every problem) and fix it (keep the consistent utterances)."""
from __future__ import annotations

import filecmp
import heapq
import itertools
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Sequence

from justkit.config import from_dict
from justkit.datadir.tables import (
    UTT_TABLES,
    DataDirError,
    iter_sorted_table,
    iter_table,
    utt2spk_to_spk2utt,
    write_spk2utt,
    write_table,
)
from justkit.fileio import atomic_open, is_pipe
from justkit.lang import is_language_code

DEFAULT_REQUIRE = ("wav.scp", "text", "utt2spk", "spk2utt", "utt2lang")
# Tables keyed by speaker that fix_data_dir filters to the speakers it keeps.
SPK_TABLES = ("spk2gender",)
# At most this many ids are spelled out in one message; the rest are counted.
MAX_IDS_IN_MESSAGE = 100


class DataDirInvalid(DataDirError):
    """A data dir failed validation; ``problems`` holds one message per problem."""

    def __init__(self, message: str | Sequence[str], problems: Sequence[str] | None = None):
        if not isinstance(message, str):
            problems = list(message)
            message = "\n".join(problems)
        super().__init__(message)
        self.problems: List[str] = list(problems) if problems is not None else [message]


@dataclass
class ValidateConfig:
    """What ``validate_data_dir`` requires of a data dir."""

    require: Sequence[str] = DEFAULT_REQUIRE
    check_audio: bool = False
    known_langs: Sequence[str] = field(default_factory=tuple)


def _byte_key(s: str) -> bytes:
    return s.encode("utf-8")


def _ids_text(ids: Sequence[str]) -> str:
    shown = ", ".join(ids[:MAX_IDS_IN_MESSAGE])
    more = len(ids) - MAX_IDS_IN_MESSAGE
    return shown + (f" ... and {more} more" if more > 0 else "")


def _value_problem(name: str, value: str, known_langs: frozenset[str]) -> str | None:
    """What is wrong with one table value (by table name), or None."""
    if name == "text":
        return "empty transcript" if not value else None
    if not value:
        return "empty value"
    if name == "utt2lang":
        if not is_language_code(value):
            return f"{value!r} is not a language code (ISO 639: 2-3 lower-case letters, or l1-l2)"
        if known_langs and value not in known_langs:
            return f"unknown language code {value!r} (known: {' '.join(sorted(known_langs))})"
    elif name == "utt2dur":
        try:
            dur = float(value)
        except ValueError:
            dur = float("nan")
        if not (math.isfinite(dur) and dur > 0):
            return f"duration {value!r} is not a positive number of seconds"
    elif name == "utt2num_frames":
        if not (value.isdigit() and int(value) > 0):
            return f"frame count {value!r} is not a positive integer"
    return None


@dataclass
class _Scan:
    """A table read leniently: first value per key, and the problems of each line."""

    entries: Dict[str, str]
    problems: List[str]
    bad_keys: Dict[str, str]  # key -> reason (duplicated, non-UTF-8, bad value)


def _scan(path: Path, name: str, known_langs: frozenset[str]) -> _Scan:
    entries: Dict[str, str] = {}
    problems: List[str] = []
    bad: Dict[str, str] = {}
    prev: str | None = None
    unsorted: List[tuple[int, str, str]] = []
    for t in iter_table(path):
        if t.error:
            problems.append(f"{path}:{t.lineno}: id {t.key}: {t.error}")
            bad.setdefault(t.key, f"not valid UTF-8 in {name}")
            entries.setdefault(t.key, "")  # present (so not also reported missing), but bad
            continue
        if t.key in entries:
            problems.append(f"{path}:{t.lineno}: id {t.key}: duplicated")
            bad.setdefault(t.key, f"duplicated in {name}")
        else:
            entries[t.key] = t.value
        if prev is not None and _byte_key(t.key) <= _byte_key(prev) and t.key != prev:
            unsorted.append((t.lineno, t.key, prev))
        prev = t.key
        msg = _value_problem(name, t.value, known_langs) if name in UTT_TABLES else (
            "empty value" if not t.value else None
        )
        if msg:
            problems.append(f"{path}:{t.lineno}: id {t.key}: {msg}")
            bad.setdefault(t.key, f"{msg} in {name}")
    if unsorted:
        lineno, key, prev_key = unsorted[0]
        more = f" ({len(unsorted)} lines out of order in all)" if len(unsorted) > 1 else ""
        problems.append(
            f"{path}:{lineno}: id {key}: not sorted (comes after {prev_key}; C/byte order){more}; "
            f"run utils/fix_data_dir.py {path.parent}"
        )
    return _Scan(entries, problems, bad)


def _check_speakers(d: Path, utt2spk: Mapping[str, str], spk2utt: Mapping[str, str]) -> List[str]:
    """spk2utt and utt2spk must describe the same mapping, checked both ways."""
    problems: List[str] = []
    listed: Dict[str, str] = {}
    for spk, utts in spk2utt.items():
        for u in utts.split():
            if u in listed:
                problems.append(f"{d}/spk2utt: utt {u} listed under speaker {listed[u]} and {spk}")
                continue
            listed[u] = spk
            if u not in utt2spk:
                problems.append(f"{d}/spk2utt: speaker {spk} lists utt {u}, which is not in utt2spk")
            elif utt2spk[u] != spk:
                problems.append(
                    f"{d}/spk2utt: speaker {spk} lists utt {u}, but utt2spk maps it to {utt2spk[u]}"
                )
    for u, spk in utt2spk.items():
        if u in listed:
            continue
        if spk not in spk2utt:
            problems.append(f"{d}/spk2utt: speaker {spk} of utt {u} (utt2spk) is missing")
        else:
            problems.append(f"{d}/spk2utt: speaker {spk} does not list utt {u} (utt2spk maps it there)")
    return problems


def _sorted_dir_is_valid(d: Path, cfg: ValidateConfig, langs: frozenset[str]) -> bool:
    """True if ``d`` is valid, decided in one streaming pass: every per-utterance table sorted
    with the same ids, values valid, spk2utt = utt2spk grouped (each speaker's utterances
    contiguous, speakers ascending, as every justkit data dir has them), speaker tables sorted.

    Memory does not grow with the dir (a 10M-utterance train set). False means "not shown
    valid this way" (a problem, or a layout this pass does not follow): the caller then reads
    the tables into memory to report every problem.
    """
    if any(not (d / n).is_file() for n in cfg.require):
        return False
    present = [n for n in UTT_TABLES if (d / n).is_file()]
    has_spk2utt = (d / "spk2utt").is_file()
    if not present or (has_spk2utt and "utt2spk" not in present):
        return False
    spk_index = present.index("utt2spk") if "utt2spk" in present else None
    spk2utt = iter_table(d / "spk2utt") if has_spk2utt else None
    group_spk, group = None, []

    def spk2utt_matches() -> bool:
        t = next(spk2utt, None)
        return t is not None and t.error is None and t.key == group_spk and t.value.split() == group

    prev = None
    for rows in itertools.zip_longest(*(iter_table(d / n) for n in present)):
        if any(t is None or t.error for t in rows):
            return False
        key = rows[0].key
        bkey = _byte_key(key)
        if (prev is not None and bkey <= prev) or any(t.key != key for t in rows):
            return False
        prev = bkey
        for name, t in zip(present, rows):
            if _value_problem(name, t.value, langs):
                return False
        if cfg.check_audio and "wav.scp" in present:
            wav = rows[present.index("wav.scp")].value
            if is_pipe(wav) or not Path(wav).is_file():
                return False
        if spk2utt is not None:
            spk = rows[spk_index].value
            if spk != group_spk:
                if group_spk is not None and (_byte_key(spk) <= _byte_key(group_spk) or not spk2utt_matches()):
                    return False
                group_spk, group = spk, []
            group.append(key)
    if spk2utt is not None and ((group_spk is not None and not spk2utt_matches()) or next(spk2utt, None) is not None):
        return False
    for name in SPK_TABLES:
        if (d / name).is_file():
            prev = None
            for t in iter_table(d / name):
                if t.error or not t.value or (prev is not None and _byte_key(t.key) <= prev):
                    return False
                prev = _byte_key(t.key)
    return True


def validate_data_dir(
    path: str | Path,
    require: Sequence[str] = DEFAULT_REQUIRE,
    check_audio: bool = False,
    known_langs: Iterable[str] = (),
) -> List[str]:
    """Every problem of the data dir ``path``, one message each (file, line or id, what); [] if valid.

    A valid sorted dir is recognised in one streaming pass (constant memory); otherwise the
    tables are read into memory to list every problem.
    """
    cfg = from_dict(
        ValidateConfig,
        {"require": tuple(require), "check_audio": check_audio, "known_langs": tuple(known_langs)},
    )
    d = Path(path)
    if not d.is_dir():
        return [f"{d}: not a directory"]
    langs = frozenset(cfg.known_langs)
    if _sorted_dir_is_valid(d, cfg, langs):
        return []
    problems: List[str] = []
    for name in cfg.require:
        if not (d / name).is_file():
            problems.append(f"{d}/{name}: file not found (required)")

    tables: Dict[str, Dict[str, str]] = {}
    for name in (*UTT_TABLES, "spk2utt", *SPK_TABLES):
        if (d / name).is_file():
            scan = _scan(d / name, name, langs)
            tables[name] = scan.entries
            problems.extend(scan.problems)

    # Every utterance must be in every per-utterance table present.
    present = [n for n in UTT_TABLES if n in tables]
    all_ids: Dict[str, None] = {}
    for n in present:
        all_ids.update(dict.fromkeys(tables[n]))
    for n in present:
        missing = [u for u in all_ids if u not in tables[n]]
        if not missing:
            continue
        by_source: Dict[tuple, List[str]] = {}
        for u in sorted(missing, key=_byte_key):
            src = tuple(o for o in present if u in tables[o])
            by_source.setdefault(src, []).append(u)
        for src, ids in by_source.items():
            problems.append(
                f"{d}/{n}: {len(ids)} utterance id(s) missing (present in {', '.join(src)}): {_ids_text(ids)}"
            )

    if "utt2spk" in tables and "spk2utt" in tables:
        problems.extend(_check_speakers(d, tables["utt2spk"], tables["spk2utt"]))

    if cfg.check_audio and "wav.scp" in tables:
        for u, val in tables["wav.scp"].items():
            if is_pipe(val):
                problems.append(f"{d}/wav.scp: id {u}: a shell command, not an audio file "
                                "(justkit reads audio files only; docs/trust.md)")
                continue
            if not Path(val).is_file():  # relative paths are relative to the cwd, as in Kaldi
                problems.append(f"{d}/wav.scp: id {u}: audio file not found: {val}")
    return problems


def assert_valid_data_dir(path: str | Path, **kwargs) -> None:
    """Raise DataDirInvalid listing every problem of ``path`` (see validate_data_dir)."""
    problems = validate_data_dir(path, **kwargs)
    if problems:
        raise DataDirInvalid(
            f"{path}: {len(problems)} problem(s); run utils/fix_data_dir.py {path}:\n  "
            + "\n  ".join(problems),
            problems,
        )


def _backup(d: Path, name: str) -> None:
    """Copy ``d/name`` to ``d/.backup/name`` (atomically, replacing an older backup)."""
    with open(d / name, "rb") as src, atomic_open(d / ".backup" / name, "wb", encoding=None) as dst:
        shutil.copyfileobj(src, dst)


def _write_if_changed(d: Path, name: str, table: Mapping[str, str]) -> bool:
    """Write ``table`` sorted; back up and replace the old file only if the bytes differ."""
    rows = sorted(table.items(), key=lambda kv: _byte_key(kv[0]))
    new = "".join(f"{k} {v}\n" if v != "" else f"{k}\n" for k, v in rows).encode("utf-8")
    target = d / name
    if target.is_file():
        if target.read_bytes() == new:
            return False
        _backup(d, name)
    write_table(target, rows)
    return True


class _NeedDicts(Exception):
    """A table is out of order, repeats an id or has a non-UTF-8 line (or utt2spk is missing):
    the dict-based fix handles and reports it."""


def _iter_sorted(path: Path, tag: int):
    """(id bytes, tag, id, value) of each line; _NeedDicts at a bad, repeated or unsorted line."""
    try:
        for key, t in iter_sorted_table(path, allow_empty_value=True):
            yield key, tag, t.key, t.value
    except DataDirError:  # TableNotSorted included
        raise _NeedDicts from None


def _replace_if_changed(d: Path, name: str, tmp: Path) -> bool:
    """Rename ``tmp`` over ``d/name`` (the old file backed up) unless the bytes are the same."""
    target = d / name
    if target.is_file() and filecmp.cmp(tmp, target, shallow=False):
        tmp.unlink()
        return False
    if target.is_file():
        _backup(d, name)
    os.replace(tmp, target)
    return True


def _fix_sorted(d: Path, present: List[str], drop_reason: Mapping[str, str], langs: frozenset) -> dict:
    """:func:`fix_data_dir` for a dir whose tables are sorted with unique ids, as one streaming walk
    over all of them (memory: the dropped ids and the speakers, not the tables; a 12M-utterance
    stage-3 merge took 3.4 GB per 1.2M utterances the dict way). Raises _NeedDicts, having
    written nothing, on anything else; the same result and messages as the dict path otherwise."""
    if "utt2spk" not in present and (d / "spk2utt").is_file():
        raise _NeedDicts
    tmp = {n: d / f".{n}.fix.tmp" for n in present}
    files = {n: open(tmp[n], "w", encoding="utf-8", newline="\n") for n in present}
    dropped: Dict[str, str] = {}
    kept = 0
    speakers: set = set()
    try:
        streams = [_iter_sorted(d / n, i) for i, n in enumerate(present)]
        for _, group in itertools.groupby(heapq.merge(*streams), key=lambda r: r[0]):
            rows = list(group)  # sorted by table number: the order of `present`
            utt = rows[0][2]
            have = {present[r[1]]: r[3] for r in rows}
            reasons = []
            missing = [n for n in present if n not in have]
            if missing:
                reasons.append("missing in " + ", ".join(missing))
            for n, v in have.items():
                msg = _value_problem(n, v, langs)
                if msg:
                    reasons.append(f"{msg} in {n}")
            if utt in drop_reason:
                reasons.append(drop_reason[utt])
            if reasons:
                dropped[utt] = "; ".join(reasons)
                continue
            kept += 1
            for n, v in have.items():
                files[n].write(f"{utt} {v}\n" if v != "" else f"{utt}\n")
            if "utt2spk" in have:
                speakers.add(have["utt2spk"])
        for f in files.values():
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        for f in files.values():
            f.close()
        for p in tmp.values():
            p.unlink(missing_ok=True)
        raise
    for f in files.values():
        f.close()
    if not kept:
        for p in tmp.values():
            p.unlink(missing_ok=True)
        raise DataDirInvalid(
            f"{d}: fix_data_dir would leave no utterance ({len(dropped)} dropped, e.g. "
            f"{next(iter(dropped.items()), ('-', '-'))}); nothing was changed"
        )
    for n in present:
        _replace_if_changed(d, n, tmp[n])
    if "utt2spk" in present:
        spk_tmp = d / ".spk2utt.fix.tmp"
        write_spk2utt(spk_tmp, d / "utt2spk")
        _replace_if_changed(d, "spk2utt", spk_tmp)
        for n in SPK_TABLES:
            if (d / n).is_file():
                sc = _scan(d / n, n, langs)
                _write_if_changed(d, n, {k: v for k, v in sc.entries.items() if k in speakers and k not in sc.bad_keys})
    return {"kept": kept, "dropped": dropped}


def fix_data_dir(
    path: str | Path,
    drop_utts: Mapping[str, str] | Iterable[str] = (),
    known_langs: Iterable[str] = (),
) -> dict:
    """Keep the utterances that are in every per-utt table, valid there, and not in ``drop_utts``.

    Rewrites each table sorted (atomically; the old file goes to ``<dir>/.backup/``),
    regenerates spk2utt from utt2spk and filters speaker tables. Raises DataDirInvalid
    (and writes nothing) if no utterance would be left.
    Returns ``{"kept": n, "dropped": {utt: reason}}``.
    """
    d = Path(path)
    if not d.is_dir():
        raise DataDirError(f"{d}: not a directory")
    langs = frozenset(known_langs)
    drop_reason = (
        {u: f"dropped by caller: {why}" for u, why in drop_utts.items()}
        if isinstance(drop_utts, Mapping)
        else {u: "dropped by caller" for u in drop_utts}
    )
    present = [n for n in UTT_TABLES if (d / n).is_file()]
    if present:
        try:
            return _fix_sorted(d, present, drop_reason, langs)
        except _NeedDicts:
            pass  # the dict path below reads, fixes and reports whatever it is
    scans = {n: _scan(d / n, n, langs) for n in UTT_TABLES if (d / n).is_file()}
    if "utt2spk" not in scans and (d / "spk2utt").is_file():
        # Recover utt2spk from spk2utt (a dir that only has the speaker-indexed table).
        spk_scan = _scan(d / "spk2utt", "spk2utt", langs)
        derived = {u: s for s, us in spk_scan.entries.items() for u in us.split()}
        scans["utt2spk"] = _Scan(derived, [], {})
    if not scans:
        raise DataDirError(f"{d}: no per-utterance table ({', '.join(UTT_TABLES)})")
    present = [n for n in UTT_TABLES if n in scans]
    all_ids: Dict[str, None] = {}
    for n in present:
        all_ids.update(dict.fromkeys(scans[n].entries))
    kept: List[str] = []
    dropped: Dict[str, str] = {}
    for u in sorted(all_ids, key=_byte_key):
        reasons = []
        missing = [n for n in present if u not in scans[n].entries]
        if missing:
            reasons.append("missing in " + ", ".join(missing))
        reasons.extend(scans[n].bad_keys[u] for n in present if u in scans[n].bad_keys)
        if u in drop_reason:
            reasons.append(drop_reason[u])
        if reasons:
            dropped[u] = "; ".join(reasons)
        else:
            kept.append(u)
    if not kept:
        raise DataDirInvalid(
            f"{d}: fix_data_dir would leave no utterance ({len(dropped)} dropped, e.g. "
            f"{next(iter(dropped.items()), ('-', '-'))}); nothing was changed"
        )

    for n in present:
        _write_if_changed(d, n, {u: scans[n].entries[u] for u in kept})
    utt2spk = {u: scans["utt2spk"].entries[u] for u in kept} if "utt2spk" in scans else None
    if utt2spk is not None:
        _write_if_changed(d, "spk2utt", utt2spk_to_spk2utt(utt2spk))
        speakers = set(utt2spk.values())
        for n in SPK_TABLES:
            if (d / n).is_file():
                s = _scan(d / n, n, langs)
                _write_if_changed(d, n, {k: v for k, v in s.entries.items() if k in speakers and k not in s.bad_keys})
    return {"kept": len(kept), "dropped": dropped}
