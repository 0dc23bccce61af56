"""Kaldi data directories: read/write the per-utterance tables (wav.scp, text, utt2spk, ...)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, Iterator, Mapping, Optional, TextIO, Tuple

from justkit.fileio import atomic_open
from justkit.errors import JustkitError

# Files of a data dir that map utterance id -> value, in the order we write them.
UTT_TABLES = ("wav.scp", "text", "utt2spk", "utt2lang", "utt2dur", "feats.scp", "utt2num_frames")


class DataDirError(JustkitError, ValueError):
    """A data-dir file is malformed; the message names the file, the line and the id."""


@dataclass
class TableLine:
    """One non-blank line of a Kaldi table; ``error`` is set (and ``value`` empty) for non-UTF-8 bytes."""

    lineno: int
    key: str
    value: str
    error: str | None = None


UTF8_BOM = b"\xef\xbb\xbf"


def iter_table(path: str | Path) -> Iterator[TableLine]:
    """Yield every non-blank line of a table without judging it (duplicates, empty values pass).

    Used by ``read_table`` and by the validator, which reports all problems instead of
    stopping at the first. The file is read line by line (a 10M-line table is never held
    in memory). Raises DataDirError if the file does not exist.
    """
    path = Path(path)
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise DataDirError(f"{path}: file not found") from None
    with f:
        yield from _parse_lines(f)


def _parse_lines(f) -> Iterator[TableLine]:
    for lineno, bline in enumerate(f, 1):  # binary iteration splits on b"\n" only
        if lineno == 1 and bline.startswith(UTF8_BOM):  # an editor's byte-order mark is not part of the id
            bline = bline[len(UTF8_BOM):]
        if not bline.strip():
            continue
        bline = bline.rstrip(b"\n")
        try:
            line = bline.decode("utf-8")
        except UnicodeDecodeError as e:
            key = bline.split(maxsplit=1)[0].decode("utf-8", "replace")
            yield TableLine(lineno, key, "", f"not valid UTF-8 ({e})")
            continue
        parts = line.rstrip("\r").split(maxsplit=1)
        yield TableLine(lineno, parts[0], parts[1].strip() if len(parts) > 1 else "")


class TableNotSorted(DataDirError):
    """A table's ids are not in strictly increasing C-locale byte order (a repeated id is a
    plain DataDirError)."""


def iter_sorted_table(path: str | Path, allow_empty_value: bool = False) -> Iterator[Tuple[bytes, TableLine]]:
    """(id as bytes, line) of a table whose ids must be sorted and unique: DataDirError naming the
    file, line and id for non-UTF-8 bytes, an empty value (unless allowed) or a repeated id,
    TableNotSorted for an id out of order (callers fall back to a dict for those tables)."""
    prev = None
    for t in iter_table(path):
        if t.error:
            raise DataDirError(f"{path}:{t.lineno}: id {t.key}: {t.error}")
        if not t.value and not allow_empty_value:
            raise DataDirError(f"{path}:{t.lineno}: id {t.key}: empty value")
        key = t.key.encode("utf-8")
        if prev is not None and key <= prev:
            if key == prev:
                raise DataDirError(f"{path}:{t.lineno}: id {t.key}: duplicated")
            raise TableNotSorted(f"{path}:{t.lineno}: id {t.key}: not sorted (C/byte order)")
        prev = key
        yield key, t


class SortedTableReader:
    """Look up keys, in increasing byte order, in a Kaldi table read as a stream.

    A data dir's tables are sorted (C locale), so stages 4 and 5 join them in one pass over
    each instead of holding every table in a dict (4 tables x 11M utterances). Keys passed
    over without being asked for are counted (``skipped``, with the first of them). Problems
    raise ``error`` (DataDirError, or the caller's own kind) naming the file and the line.
    """

    def __init__(self, path: str | Path, allow_empty_value: bool = False, error: type = DataDirError) -> None:
        self.path = Path(path)
        self.allow_empty = allow_empty_value
        self.error = error
        self._it = iter_sorted_table(path, allow_empty_value)
        self._cur: Optional[TableLine] = None
        self._cur_key: Optional[bytes] = None
        self.skipped = 0
        self.first_skipped: Optional[str] = None
        self._advance()

    def _advance(self) -> None:
        try:
            self._cur_key, self._cur = next(self._it, (None, None))
        except TableNotSorted as e:
            raise self.error(f"{e}; utils/fix_data_dir.py sorts a data dir") from None
        except DataDirError as e:
            raise self.error(str(e)) from None

    def get(self, utt: str) -> Optional[str]:
        """The value of ``utt`` (None if the table has no line for it); keys must come in order."""
        key = utt.encode("utf-8")
        while self._cur is not None and self._cur_key < key:
            self.skipped += 1
            if self.first_skipped is None:
                self.first_skipped = self._cur.key
            self._advance()
        if self._cur is not None and self._cur_key == key:
            value = self._cur.value
            self._advance()
            return value
        return None

    def missing(self, utt: str, what: str) -> Exception:
        """The error for ``utt`` not found: a missing line, or a table out of order."""
        where = f"line {self._cur.lineno} is {self._cur.key}" if self._cur is not None else "end of file"
        return self.error(f"{self.path}: utt {utt} has no {what} ({where}; if the line exists, the table "
                         "is not sorted by id in the C locale: utils/fix_data_dir.py sorts a data dir)")

    def drain(self) -> None:
        """Pass over every line not consumed yet (they count as skipped)."""
        while self._cur is not None:
            self.skipped += 1
            if self.first_skipped is None:
                self.first_skipped = self._cur.key
            self._advance()

    def rest(self) -> Iterator[TableLine]:
        """The lines not consumed yet (for the table that drives the join)."""
        while self._cur is not None:
            line = self._cur
            self._advance()
            yield line


def read_table(path: str | Path, allow_empty_value: bool = False) -> Dict[str, str]:
    """Read a Kaldi table ``<key> <value...>`` into an ordered dict.

    Raises DataDirError naming the file and line for non-UTF-8 bytes, a missing value
    (unless ``allow_empty_value``) or a duplicated key.
    """
    path = Path(path)
    out: Dict[str, str] = {}
    for t in iter_table(path):
        if t.error:
            raise DataDirError(f"{path}:{t.lineno}: id {t.key}: {t.error}")
        if not t.value and not allow_empty_value:
            raise DataDirError(f"{path}:{t.lineno}: id {t.key}: empty value")
        if t.key in out:
            raise DataDirError(f"{path}:{t.lineno}: id {t.key}: duplicated")
        out[t.key] = t.value
    return out


def write_table(path: str | Path, table: Mapping[str, str] | Iterable[tuple[str, str]]) -> None:
    """Write ``key value`` lines sorted by key (C-locale byte order), atomically."""
    items = table.items() if isinstance(table, Mapping) else table
    rows = sorted(((str(k), str(v)) for k, v in items), key=lambda kv: kv[0].encode("utf-8"))
    with atomic_open(path, "w") as f:
        for k, v in rows:
            f.write(f"{k} {v}\n" if v != "" else f"{k}\n")


class SortedTableWriter:
    """Write ``key value`` lines to an open file, checking that keys come in strictly increasing
    C-locale byte order (the streaming counterpart of ``write_table``'s sort)."""

    def __init__(self, f: TextIO, path: str | Path):
        self.f, self.path, self.prev, self.n = f, path, None, 0

    def write(self, key: str, value: str) -> None:
        bkey = key.encode("utf-8")
        if self.prev is not None and bkey <= self.prev:
            what = "duplicated" if bkey == self.prev else f"not sorted (comes after {self.prev.decode('utf-8')})"
            raise DataDirError(f"{self.path}: id {key}: {what}")
        self.prev = bkey
        self.n += 1
        self.f.write(f"{key} {value}\n" if value != "" else f"{key}\n")


def write_sorted_table(path: str | Path, rows: Iterable[tuple[str, str]]) -> int:
    """Write ``rows`` that are already sorted by key (C-locale byte order) without holding them,
    atomically; an out-of-order or repeated key is a DataDirError (nothing written). Returns the row count."""
    with atomic_open(path, "w") as f:
        w = SortedTableWriter(f, path)
        for k, v in rows:
            w.write(k, v)
    return w.n


class Spk2uttStream:
    """spk2utt from utt2spk rows given in utterance order, for data dirs whose utterance ids
    sort with their speakers (each speaker's utterances contiguous, speakers ascending, as
    Kaldi recipes and stage 1 make them). ``add`` returns False at the first row that breaks
    this; the caller then falls back to ``utt2spk_to_spk2utt``."""

    def __init__(self, writer: SortedTableWriter):
        self.w, self.spk, self.utts = writer, None, []

    def add(self, utt: str, spk: str) -> bool:
        if spk != self.spk:
            if self.spk is not None and spk.encode("utf-8") <= self.spk.encode("utf-8"):
                return False
            self.flush()
            self.spk = spk
        self.utts.append(utt)
        return True

    def flush(self) -> None:
        if self.spk is not None and self.utts:
            self.w.write(self.spk, " ".join(self.utts))
        self.utts = []


def write_spk2utt(path: str | Path, utt2spk: str | Path) -> None:
    """Write ``path`` (spk2utt) from the sorted table file ``utt2spk``: one streaming pass when
    speakers are contiguous and ascending, else (any data dir) through a dict."""
    try:
        with atomic_open(path, "w") as f:
            stream = Spk2uttStream(SortedTableWriter(f, path))
            for t in iter_table(utt2spk):
                if t.error:
                    raise DataDirError(f"{utt2spk}:{t.lineno}: id {t.key}: {t.error}")
                if not stream.add(t.key, t.value):
                    raise _NotContiguous  # the temporary file is dropped, never renamed
            stream.flush()
    except _NotContiguous:
        write_table(path, utt2spk_to_spk2utt(read_table(utt2spk)))


class _NotContiguous(Exception):
    """utt2spk's speakers are not contiguous and ascending: spk2utt needs the dict path."""


def utt2spk_to_spk2utt(utt2spk: Mapping[str, str]) -> Dict[str, str]:
    """Invert utt2spk into spk2utt (space-joined, utterances sorted)."""
    spk: Dict[str, list] = {}
    for u in sorted(utt2spk, key=lambda s: s.encode("utf-8")):
        spk.setdefault(utt2spk[u], []).append(u)
    return {s: " ".join(us) for s, us in spk.items()}


@dataclass
class DataDir:
    """A Kaldi data directory on disk; tables are read lazily by name."""

    path: Path

    def __post_init__(self) -> None:
        self.path = Path(self.path)

    def has(self, name: str) -> bool:
        return (self.path / name).is_file()

    def read(self, name: str, allow_empty_value: bool = False) -> Dict[str, str]:
        return read_table(self.path / name, allow_empty_value=allow_empty_value)

    def write(self, name: str, table: Mapping[str, str]) -> None:
        write_table(self.path / name, table)

    def num_utts(self) -> int:
        """Number of lines of wav.scp (else feats.scp, else text), counted without reading it into memory."""
        for name in ("wav.scp", "feats.scp", "text"):
            if self.has(name):
                return sum(1 for _ in iter_table(self.path / name))
        raise DataDirError(f"{self.path}: no wav.scp, feats.scp or text")

    def utt_ids(self) -> list[str]:
        """Utterance ids, taken from wav.scp, else feats.scp, else text."""
        for name in ("wav.scp", "feats.scp", "text"):
            if self.has(name):
                return list(self.read(name, allow_empty_value=(name == "text")))
        raise DataDirError(f"{self.path}: no wav.scp, feats.scp or text")
