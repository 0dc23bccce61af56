"""The index of a packed jsonl: one fixed-size row per example, memory-mapped, read lazily.

Stage 5 writes ``<set>.jsonl`` and beside it ``<set>.jsonl.idx.npy``, a numpy structured
array with one row per line (byte offset and size of the line, line number, frame count,
token count, language code, labelled flag), and ``<set>.jsonl.idx.json`` (the language codes
and the jsonl's size). A training rank maps the index (26 bytes per utterance, shared with
the other ranks of the node through the page cache) and reads an example's line only when
the loader asks for it, so its memory does not grow with the corpus the way a list of
dicts does (1.2 KB per utterance: 13 GB for MLS English on every rank).

A jsonl without an index (written by hand, or by an older stage 5) is scanned once into an
index held in memory; :func:`write_index` (``python -m justkit.bin.pack_examples
--index_only``) writes one for it.
"""
from __future__ import annotations

import json
import logging
import os
from array import array
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from justkit.errors import JustkitError
from justkit.fileio import atomic_open

log = logging.getLogger(__name__)

PACKED_KEYS = ("utt", "feats", "num_frames", "tokens", "lang", "labelled", "text")
# Optional: "audio" (the wav.scp entry) when "feats" is null: fbank is computed on the fly
# (stage 3 with --feats_type raw; docs/interfaces.md).
PACKED_OPTIONAL_KEYS = ("audio",)
INDEX_VERSION = 1
INDEX_DTYPE = np.dtype([
    ("offset", "<i8"), ("nbytes", "<i4"), ("line", "<i4"), ("num_frames", "<i4"),
    ("num_tokens", "<i4"), ("lang", "u1"), ("labelled", "?"),
])
MAX_LANGS = 255
# array typecodes of the index's integer widths (``i`` is 4 bytes on every platform numpy supports)
_ARRAY_CODE = {"i8": "q", "i4": "i"}
assert array("i").itemsize == 4 and array("q").itemsize == 8
# Scanning a jsonl without an index costs ~10 s per million lines: say so above this size.
SCAN_WARN_LINES = 200_000


class PackedDataError(JustkitError, ValueError):
    """A packed jsonl line or the features it points to are bad; names the file and utterance."""


def index_paths(jsonl: Union[str, os.PathLike]) -> Tuple[Path, Path]:
    """(``<jsonl>.idx.npy``, ``<jsonl>.idx.json``)."""
    p = Path(jsonl)
    return p.with_name(p.name + ".idx.npy"), p.with_name(p.name + ".idx.json")


def check_example(ex: Any, where: str) -> Dict[str, Any]:
    """``ex`` if it is an example with the keys of docs/interfaces.md, else PackedDataError naming ``where``."""
    if not isinstance(ex, dict):
        raise PackedDataError(f"{where}: not a JSON object")
    missing = [k for k in PACKED_KEYS if k not in ex]
    if missing:
        raise PackedDataError(f"{where}: utt {ex.get('utt', '?')}: missing key(s) {missing}")
    n = ex["num_frames"]
    if not isinstance(n, int) or isinstance(n, bool) or n <= 0:
        raise PackedDataError(f"{where}: utt {ex['utt']}: bad num_frames {n!r}")
    return ex


class IndexBuilder:
    """Collects index rows one example at a time (compact arrays, not dicts), then :meth:`finish`."""

    def __init__(self) -> None:
        # Typed arrays of the index's own widths (26 bytes a row, no Python object per row).
        self._cols = {name: array(_ARRAY_CODE[INDEX_DTYPE[name].str[1:]])
                      for name in INDEX_DTYPE.names if name not in ("lang", "labelled")}
        self._lang = array("B")
        self._lab = array("B")
        self.langs: Dict[str, int] = {}

    def add(self, ex: Dict[str, Any], offset: int, nbytes: int, line: int, where: str) -> None:
        lang = str(ex["lang"])
        code = self.langs.get(lang)
        if code is None:
            if len(self.langs) >= MAX_LANGS:
                raise PackedDataError(f"{where}: more than {MAX_LANGS} languages")
            code = self.langs[lang] = len(self.langs)
        c = self._cols
        c["offset"].append(offset)
        c["nbytes"].append(nbytes)
        c["line"].append(line)
        c["num_frames"].append(int(ex["num_frames"]))
        c["num_tokens"].append(len(ex["tokens"]))
        self._lang.append(code)
        self._lab.append(1 if ex["labelled"] else 0)

    def __len__(self) -> int:
        return len(self._lang)

    def finish(self) -> Tuple[np.ndarray, List[str]]:
        """(rows sorted as added, language names by code); the builder is empty afterwards
        (each column is freed once copied, so the peak is about two copies of the index)."""
        n = len(self)
        rows = np.empty(n, dtype=INDEX_DTYPE)
        for name in list(self._cols):
            col = self._cols.pop(name)
            rows[name] = np.frombuffer(col, dtype=INDEX_DTYPE[name]) if n else 0
            del col
        rows["lang"] = np.frombuffer(self._lang, dtype=np.uint8) if n else 0
        rows["labelled"] = np.frombuffer(self._lab, dtype=np.uint8).astype(bool) if n else False
        self._lang, self._lab = array("B"), array("B")
        names = [l for l, _ in sorted(self.langs.items(), key=lambda kv: kv[1])]
        return rows, names


def write_jsonl_with_index(examples: Iterable[Dict[str, Any]], path: Union[str, os.PathLike]) -> int:
    """Write examples as jsonl and its index, each atomically (the index last); returns the count.

    ``examples`` may be a generator: nothing but the index rows is held in memory.
    """
    path = Path(path)
    builder = IndexBuilder()
    with atomic_open(path, "wb", encoding=None) as f:
        offset = 0
        for ex in examples:
            data = (json.dumps(ex, ensure_ascii=False) + "\n").encode("utf-8")
            builder.add(ex, offset, len(data), len(builder) + 1, f"{path}:{len(builder) + 1}")
            f.write(data)
            offset += len(data)
    rows, names = builder.finish()
    _save_index(path, rows, names, offset)
    return len(rows)


def _save_index(path: Path, rows: np.ndarray, names: List[str], size: int) -> None:
    npy, meta = index_paths(path)
    with atomic_open(npy, "wb", encoding=None) as f:
        np.save(f, rows, allow_pickle=False)
    with atomic_open(meta, "w") as f:
        json.dump({"version": INDEX_VERSION, "count": int(len(rows)), "jsonl_bytes": int(size),
                   "langs": names}, f)
        f.write("\n")


def scan_jsonl(path: Union[str, os.PathLike]) -> Tuple[np.ndarray, List[str], int]:
    """Index rows of a jsonl by reading it once, checking every line; (rows, languages, bytes)."""
    path = Path(path)
    builder = IndexBuilder()
    offset = 0
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise PackedDataError(f"{path}: packed file not found (run stage 5)") from None
    with f:
        for lineno, raw in enumerate(f, 1):
            if raw.strip():
                where = f"{path}:{lineno}"
                try:
                    ex = json.loads(raw)
                except (json.JSONDecodeError, UnicodeDecodeError) as e:
                    raise PackedDataError(f"{where}: not valid JSON ({e})") from None
                builder.add(check_example(ex, where), offset, len(raw), lineno, where)
            offset += len(raw)
    if not len(builder):
        raise PackedDataError(f"{path}: no utterances")
    rows, names = builder.finish()
    return rows, names, offset


def write_index(path: Union[str, os.PathLike]) -> int:
    """Scan ``path`` and write its index beside it; returns the number of examples."""
    rows, names, size = scan_jsonl(path)
    _save_index(Path(path), rows, names, size)
    return len(rows)


class PackedIndex(Sequence):
    """The examples of a packed jsonl as a lazy sequence: ``index[i]`` reads line i's dict.

    Columns for planning without reading a line: :attr:`lengths` (frames), :attr:`lang_codes`
    with :attr:`lang_names`, :attr:`labelled`, :attr:`num_tokens`. Lines are read with
    ``os.pread`` on a descriptor opened per process, so DataLoader workers (forked or
    spawned) each read on their own. :meth:`select` keeps a subset of the rows.
    """

    def __init__(self, path: Union[str, os.PathLike], rows: np.ndarray, lang_names: Sequence[str]) -> None:
        self.path = Path(path)
        self.rows = rows
        self.lang_names = list(lang_names)
        self._fd: Optional[int] = None
        self._pid = -1

    # -- opening ----------------------------------------------------------------------------
    @classmethod
    def open(cls, path: Union[str, os.PathLike], mmap: bool = True) -> "PackedIndex":
        """The index stage 5 wrote beside ``path`` (memory-mapped), or one scanned now if there is
        none or it does not match the jsonl (a warning says so; the scan checks every line)."""
        path = Path(path)
        if not path.is_file():
            raise PackedDataError(f"{path}: packed file not found (run stage 5)")
        npy, meta = index_paths(path)
        why = "no index beside it"
        if npy.is_file() and meta.is_file():
            loaded = cls._load(path, npy, meta, mmap)
            if isinstance(loaded, PackedIndex):
                return loaded
            why = loaded
        rows, names, _ = scan_jsonl(path)
        if len(rows) >= SCAN_WARN_LINES or why != "no index beside it":
            log.warning("%s: %s; scanned %d lines into memory instead (write one with "
                        "`python -m justkit.bin.pack_examples --index_only %s`)", path, why, len(rows), path)
        return cls(path, rows, names)

    @classmethod
    def _load(cls, path: Path, npy: Path, meta_path: Path, mmap: bool) -> Union["PackedIndex", str]:
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            rows = np.load(npy, mmap_mode="r" if mmap else None, allow_pickle=False)
        except (OSError, ValueError) as e:
            return f"index {npy} unreadable ({e})"
        if not isinstance(meta, dict) or meta.get("version") != INDEX_VERSION or rows.dtype != INDEX_DTYPE:
            return f"index {npy} is of another version"
        size = path.stat().st_size
        if meta.get("jsonl_bytes") != size or meta.get("count") != len(rows) or not len(rows):
            return f"index {npy} does not match the jsonl ({meta.get('jsonl_bytes')} bytes indexed, {size} now)"
        idx = cls(path, rows, meta["langs"])
        for i in {0, len(rows) - 1}:  # cheap proof that the rows point at this file's lines
            ex = idx[i]
            r = rows[i]
            if ex["num_frames"] != int(r["num_frames"]) or ex["lang"] != idx.lang_names[int(r["lang"])]:
                return f"index {npy} does not match line {int(r['line'])} of the jsonl"
        return idx

    # -- columns ----------------------------------------------------------------------------
    @property
    def lengths(self) -> np.ndarray:
        return np.asarray(self.rows["num_frames"])

    @property
    def lang_codes(self) -> np.ndarray:
        return np.asarray(self.rows["lang"])

    @property
    def labelled(self) -> np.ndarray:
        return np.asarray(self.rows["labelled"])

    @property
    def num_tokens(self) -> np.ndarray:
        return np.asarray(self.rows["num_tokens"])

    def select(self, keep: np.ndarray) -> "PackedIndex":
        """A new index over the rows ``keep`` (a boolean mask or row numbers), in that order."""
        return PackedIndex(self.path, np.asarray(self.rows[keep]), self.lang_names)

    # -- reading lines ------------------------------------------------------------------------
    def _descriptor(self) -> int:
        if self._fd is None or self._pid != os.getpid():
            self._fd = os.open(self.path, os.O_RDONLY)  # a forked worker gets its own
            self._pid = os.getpid()
        return self._fd

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        r = self.rows[i]
        where = f"{self.path}:{int(r['line'])}"
        try:
            raw = os.pread(self._descriptor(), int(r["nbytes"]), int(r["offset"]))
        except FileNotFoundError:
            raise PackedDataError(f"{self.path}: packed file not found (removed while in use?)") from None
        try:
            ex = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise PackedDataError(f"{where}: not valid JSON ({e}); was the jsonl rewritten "
                                  "after its index? (re-run stage 5)") from None
        return check_example(ex, where)

    def __iter__(self) -> Iterator[Dict[str, Any]]:
        for i in range(len(self)):
            yield self[i]

    def __getstate__(self) -> dict:
        # Spawned workers reopen the file, and map the index again rather than copy it.
        state = self.__dict__.copy()
        state["_fd"], state["_pid"] = None, -1
        if isinstance(self.rows, np.memmap):
            state["rows"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if self.rows is None:
            self.rows = np.load(index_paths(self.path)[0], mmap_mode="r", allow_pickle=False)

    def __del__(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            try:
                os.close(self._fd)
            except OSError:
                pass


def columns(entries: Sequence[Dict[str, Any]]) -> Tuple[np.ndarray, np.ndarray, List[str], np.ndarray]:
    """(lengths, language codes, language names, labelled) of in-memory example dicts."""
    names = sorted({str(e["lang"]) for e in entries})
    code = {l: i for i, l in enumerate(names)}
    lengths = np.fromiter((int(e["num_frames"]) for e in entries), dtype=np.int64, count=len(entries))
    langs = np.fromiter((code[str(e["lang"])] for e in entries), dtype=np.int64, count=len(entries))
    lab = np.fromiter((bool(e["labelled"]) for e in entries), dtype=bool, count=len(entries))
    return lengths, langs, names, lab
