"""Multilingual LibriSpeech (OpenSLR 94): language names, release-tree parser, limited-supervision lists, download."""
from __future__ import annotations

import contextlib
import logging
import math
import multiprocessing
import os
import re
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np

from justkit.frontend.audio import MIN_SAMPLES, AudioError, audio_info
from justkit.corpora.download import DownloadConfig, DownloadError, download_file, extract_tar, fetch_text, parse_md5_table
from justkit.errors import JustkitError
from justkit.text.normalize import has_words

log = logging.getLogger(__name__)

# ISO 639-1 code -> the language name in MLS directory and archive names.
MLS_LANGUAGES: Dict[str, str] = {
    "en": "english", "de": "german", "nl": "dutch", "es": "spanish",
    "fr": "french", "pt": "portuguese", "it": "italian", "pl": "polish",
}
MLS_CODES: Dict[str, str] = {v: k for k, v in MLS_LANGUAGES.items()}
SPLITS = ("train", "dev", "test")
LIMITED_SUBSETS = ("9h", "1h", "10min")
MLS_BASE_URL = "https://dl.fbaipublicfiles.com/mls"
# The official md5s are published next to the archives (linked from https://www.openslr.org/94/).
MLS_MD5_FILE = "md5sum.txt"
# Archive sizes as printed on https://www.openslr.org/94/ (for the user's disk planning only).
PUBLISHED_SIZES: Dict[str, Tuple[str, str]] = {  # code -> (opus, flac)
    "en": ("651G", "2.4T"), "de": ("29G", "115G"), "nl": ("23G", "86G"), "fr": ("16G", "61G"),
    "es": ("14G", "50G"), "it": ("3.8G", "15G"), "pt": ("2.5G", "9.3G"), "pl": ("1.6G", "6.2G"),
}
MLS_ID = re.compile(r"^(\d+)_(\d+)_(\d+)$")
# Speaker ids are zero-padded to this width in Kaldi ids so that sorting utterances and sorting
# speakers agree (with '_' after the digits in byte order, "en_1021_*" would sort after
# "en_10214_*" while speaker en_1021 sorts before en_10214). MLS speaker ids have <= 5 digits.
SPK_WIDTH = 6
AUDIO_EXTS = ("opus", "flac")


class MLSError(JustkitError, ValueError):
    """The MLS tree is missing or malformed; the message names the directory or file."""


def lang_name(code: str) -> str:
    """``"pl"`` -> ``"polish"``; raises MLSError for a language MLS does not have."""
    try:
        return MLS_LANGUAGES[code]
    except KeyError:
        raise MLSError(f"unknown MLS language code {code!r}; known: {' '.join(MLS_LANGUAGES)}") from None


def lang_code(name: str) -> str:
    """``"polish"`` (or ``"mls_polish_opus"``) -> ``"pl"``."""
    n = name
    if n.startswith("mls_"):
        n = n[4:]
    if n.endswith("_opus"):
        n = n[:-5]
    try:
        return MLS_CODES[n]
    except KeyError:
        raise MLSError(f"unknown MLS language name {name!r}; known: {' '.join(MLS_CODES)}") from None


def kaldi_spk_id(lang: str, spk: str) -> str:
    """MLS speaker ``10214`` of ``en`` -> ``en_010214``."""
    if len(spk) > SPK_WIDTH or not spk.isdigit():
        raise MLSError(f"speaker id {spk!r} is not a number of at most {SPK_WIDTH} digits")
    return f"{lang}_{spk.zfill(SPK_WIDTH)}"


def kaldi_utt_id(lang: str, mls_id: str) -> str:
    """MLS ``10214_10108_000000`` of ``en`` -> ``en_010214_10108_000000`` (speaker id as its prefix)."""
    m = MLS_ID.match(mls_id)
    if not m:
        raise MLSError(f"utterance id {mls_id!r} is not <speaker>_<book>_<utt>")
    return f"{kaldi_spk_id(lang, m.group(1))}_{m.group(2)}_{m.group(3)}"


@dataclass
class LanguageDir:
    """One extracted MLS language: ``mls_<language>_opus/`` (48 kHz opus) or ``mls_<language>/`` (flac)."""

    lang: str
    path: Path
    audio_ext: str


@dataclass(slots=True)
class Utterance:
    """One transcript line with its audio file (``utt`` is the Kaldi id, ``mls_id`` the release's).

    Slots and a str path keep an utterance at ~0.5 KB plus its text (English train: 10.8M of them).
    """

    utt: str
    mls_id: str
    speaker: str
    book: str
    text: str
    audio: str


@dataclass
class Problem:
    """An utterance left out: Kaldi id (or the raw id when unparsable), the file, why."""

    utt: str
    file: str
    reason: str


@dataclass
class SplitRecords:
    """A split's good utterances (sorted by id) and the problems found while reading it."""

    lang: str
    split: str
    utts: List[Utterance] = field(default_factory=list)
    problems: List[Problem] = field(default_factory=list)


def _first_audio_ext(lang_path: Path) -> Optional[str]:
    for split in ("dev", "test", "train"):
        for dirpath, _, files in os.walk(lang_path / split / "audio"):
            for f in files:
                ext = f.rsplit(".", 1)[-1]
                if ext in AUDIO_EXTS:
                    return ext
    return None


def find_language_dir(mls_root: str | Path, lang: str, look_at_audio: bool = True) -> LanguageDir:
    """Locate ``lang`` under ``mls_root``: ``mls_<language>_opus`` first, then ``mls_<language>``
    (the flac release; its audio extension is taken from the first audio file found, unless
    ``look_at_audio`` is False: then flac)."""
    root = Path(mls_root)
    name = lang_name(lang)
    for dirname in (f"mls_{name}_opus", f"mls_{name}"):
        p = root / dirname
        if p.is_dir():
            ext = "opus" if dirname.endswith("_opus") else ((_first_audio_ext(p) if look_at_audio else None) or "flac")
            return LanguageDir(lang, p.resolve(), ext)
    raise MLSError(
        f"{root}: no mls_{name}_opus/ or mls_{name}/ directory for language {lang}; "
        f"download it with --download true (archive {name}: {PUBLISHED_SIZES[lang][0]} opus) "
        f"or point --mls_root at the directory that holds it")


def _audio_path(ld: LanguageDir, split: str, spk: str, book: str, mls_id: str) -> Path:
    return ld.path / split / "audio" / spk / book / f"{mls_id}.{ld.audio_ext}"


# Rows per block when building the index arrays and when probing audio in parallel.
_BLOCK = 1 << 16


def _parse_line(raw: bytes) -> Tuple[str, str]:
    """(MLS id, text with whitespace collapsed) of one UTF-8 transcript line (tab- or space-separated)."""
    line = raw.decode("utf-8").rstrip("\r")
    parts = line.split("\t", 1) if "\t" in line else line.split(None, 1)
    return parts[0].strip(), " ".join(parts[1].split()) if len(parts) > 1 else ""


class _Keys:
    """Ids collected in blocks of _BLOCK, each turned into a fixed-width bytes array, so that no
    per-row Python object outlives its block."""

    def __init__(self) -> None:
        self.blocks: List[np.ndarray] = []
        self.keys: List[bytes] = []

    def add(self, key: bytes) -> None:
        self.keys.append(key)
        if len(self.keys) == _BLOCK:
            self.blocks.append(np.array(self.keys, dtype=bytes))
            self.keys = []

    def array(self) -> np.ndarray:
        blocks = self.blocks + ([np.array(self.keys, dtype=bytes)] if self.keys else [])
        self.blocks, self.keys = [], []
        if not blocks:
            return np.zeros(0, dtype="S1")
        width = max(b.dtype.itemsize for b in blocks)
        return np.concatenate([b.astype(f"S{width}") for b in blocks])


class _Rows:
    """Growing columns of an index under construction (compact arrays, no object per row)."""

    def __init__(self) -> None:
        self.keys = _Keys()
        self.offsets = array("q")
        self.lengths = array("i")
        self.linenos = array("i")
        self.ok = bytearray()

    def add(self, key: bytes, offset: int, length: int, lineno: int, ok: bool) -> None:
        self.keys.add(key)
        self.offsets.append(offset)
        self.lengths.append(length)
        self.linenos.append(lineno)
        self.ok.append(ok)


@dataclass
class SplitIndex:
    """A split's usable transcript lines in Kaldi-id order (C-locale bytes), as compact arrays.

    Stage 1 keeps this instead of one Python object per utterance (~80 bytes a row at peak against
    ~3 KB: English train has 10.8M rows); the text is re-read from ``transcripts`` by byte
    offset when the tables are written (``rows``).
    """

    ld: LanguageDir
    split: str
    transcripts: Path
    keys: np.ndarray     # S<w>: Kaldi utterance ids, sorted, unique
    offsets: np.ndarray  # int64: byte offset of the line in ``transcripts``
    lengths: np.ndarray  # int32: its length in bytes (without the newline)
    problems: List[Problem] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.keys)

    def keep(self, mask: np.ndarray) -> None:
        """Keep only the rows where ``mask`` is True."""
        self.keys, self.offsets, self.lengths = self.keys[mask], self.offsets[mask], self.lengths[mask]

    def audio(self, mls_id: str) -> str:
        """The audio file of ``mls_id`` (as ``str(_audio_path(...))``, without pathlib's cost per row)."""
        spk, book, _ = mls_id.split("_")
        return f"{self.ld.path}/{self.split}/audio/{spk}/{book}/{mls_id}.{self.ld.audio_ext}"

    def rows(self, start: int = 0, stop: Optional[int] = None) -> Iterator[Tuple[str, str, str]]:
        """(Kaldi id, MLS id, text) of rows ``start:stop``, in order, read back from the transcript file."""
        stop = len(self) if stop is None else stop
        fd = os.open(self.transcripts, os.O_RDONLY)
        try:
            for i in range(start, stop):
                raw = os.pread(fd, int(self.lengths[i]), int(self.offsets[i]))
                mls_id, text = _parse_line(raw)
                utt = self.keys[i].decode("ascii")
                if len(raw) != self.lengths[i] or kaldi_utt_id(self.ld.lang, mls_id) != utt:
                    raise MLSError(f"{self.transcripts}: changed while stage 1 read it (utterance {utt}); run it again")
                yield utt, mls_id, text
        finally:
            os.close(fd)


def index_split(ld: LanguageDir, split: str, audio_checks: bool = True) -> SplitIndex:
    """Parse ``<split>/transcripts.txt`` in one streaming pass into a SplitIndex.

    Lines that are not UTF-8, have no text (or none left after normalisation), an id that is
    not ``<spk>_<book>_<utt>`` or a duplicated id become Problems. With ``audio_checks`` a line
    whose audio file does not exist, and an audio file without a transcript line (a walk of
    ``<split>/audio/``), are Problems too; without it the audio tree is not looked at. The
    audio itself is not opened here (``probe_durations`` / ``segment_durations``).
    """
    if split not in SPLITS:
        raise MLSError(f"unknown split {split!r}; known: {SPLITS}")
    sdir = ld.path / split
    tpath = sdir / "transcripts.txt"
    if not tpath.is_file():
        raise MLSError(f"{tpath}: not found; is {ld.path} a complete MLS {lang_name(ld.lang)} release?")
    rows = _Rows()
    line_problems: List[Tuple[int, int, Problem]] = []  # (lineno, row or -1, problem)
    claimed = _Keys() if audio_checks else None  # raw ids whose audio is accounted for
    offset = 0
    with open(tpath, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            start, offset = offset, offset + len(raw)
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):  # a byte-order mark is not part of the id
                raw, start = raw[3:], start + 3
            raw = raw.rstrip(b"\n")
            if not raw.strip():
                continue
            raw_id = raw.split(None, 1)[0].decode("utf-8", "replace")
            where = f"{tpath}:{lineno}"
            if claimed is not None and MLS_ID.match(raw_id):
                claimed.add(raw_id.encode("utf-8"))  # whatever is wrong with the line
            try:
                mls_id, text = _parse_line(raw)
            except UnicodeDecodeError as e:
                line_problems.append((lineno, -1, Problem(_safe_id(ld.lang, raw_id), where,
                                                          f"transcript is not valid UTF-8 ({e.reason} at byte {e.start})")))
                continue
            m = MLS_ID.match(mls_id)
            if not m:
                line_problems.append((lineno, -1, Problem(_safe_id(ld.lang, mls_id), where, "id is not <speaker>_<book>_<utt>")))
                continue
            try:
                utt = kaldi_utt_id(ld.lang, mls_id)
            except MLSError as e:
                line_problems.append((lineno, -1, Problem(_safe_id(ld.lang, mls_id), where, str(e))))
                continue
            problem = None
            if not text:
                problem = Problem(utt, where, "empty transcript")
            elif not has_words(text, ld.lang):
                problem = Problem(utt, where, f"transcript {text!r} has no word left after normalisation "
                                              "(punctuation or symbols only)")
            elif audio_checks:
                audio = _audio_path(ld, split, m.group(1), m.group(2), mls_id)
                if not audio.is_file():
                    problem = Problem(utt, str(audio), "transcript without audio: file not found")
            if problem is not None:
                line_problems.append((lineno, len(rows.ok), problem))
            # Every line with a valid id is a row (so that a later duplicate of it is caught); rows
            # with a problem are dropped below.
            rows.add(utt.encode("ascii"), start, len(raw), lineno, problem is None)
    keys = rows.keys.array()
    offsets = np.frombuffer(rows.offsets, dtype=np.int64)
    lengths = np.frombuffer(rows.lengths, dtype=np.int32)
    linenos = np.frombuffer(rows.linenos, dtype=np.int32)
    ok = np.frombuffer(bytes(rows.ok), dtype=np.bool_).copy()
    del rows
    order = np.argsort(keys, kind="stable")  # C-locale byte order; equal ids keep their line order
    # One column at a time, so that at most one old column is alive beside the new ones.
    keys = keys[order]
    offsets = offsets[order]
    lengths = lengths[order]
    linenos = linenos[order]
    ok = ok[order]
    is_dup = np.zeros(len(keys), dtype=np.bool_)
    if len(keys) > 1:
        is_dup[1:] = keys[1:] == keys[:-1]
    dup_rows = set(order[is_dup].tolist())
    for i in np.flatnonzero(is_dup).tolist():
        first = i - 1
        while is_dup[first]:
            first -= 1
        line_problems.append((int(linenos[i]), -1, Problem(keys[i].decode("ascii"), f"{tpath}:{int(linenos[i])}",
                                                           f"id duplicated (first on line {int(linenos[first])}); later line dropped")))
    del order
    good = ok & ~is_dup
    idx = SplitIndex(ld, split, tpath, keys[good], offsets[good], lengths[good])
    del keys, offsets, lengths, linenos, ok
    line_problems.sort(key=lambda t: t[0])
    idx.problems = [p for _, row, p in line_problems if row < 0 or row not in dup_rows]
    if claimed is not None:
        have = np.unique(claimed.array())
        del claimed
        for path in _iter_audio(sdir / "audio", ld.audio_ext):
            stem = path.name[: -len(ld.audio_ext) - 1]
            b = stem.encode("utf-8", "surrogateescape")
            j = int(np.searchsorted(have, b))
            if j >= len(have) or have[j] != b:
                idx.problems.append(Problem(_safe_id(ld.lang, stem), str(path), f"audio without a transcript in {tpath}"))
    return idx


def read_split(ld: LanguageDir, split: str) -> SplitRecords:
    """Parse ``<split>/transcripts.txt`` and match it with ``<split>/audio/`` into Utterance objects
    (sorted by id): for small splits, tools and tests; stage 1 streams through ``index_split``.

    Lines that are not UTF-8, have no text, an id that is not ``<spk>_<book>_<utt>``, a
    duplicated id or no audio file, and audio files without a transcript line become
    Problems; everything else an Utterance. The audio itself is not opened here.
    """
    idx = index_split(ld, split)
    rec = SplitRecords(ld.lang, split, problems=idx.problems)
    for utt, mls_id, text in idx.rows():
        spk, book, _ = mls_id.split("_")
        rec.utts.append(Utterance(utt, mls_id, kaldi_spk_id(ld.lang, spk), book, text, idx.audio(mls_id)))
    return rec


def probe_durations(idx: SplitIndex, nj: int = 1) -> Tuple[np.ndarray, List[Problem]]:
    """Duration (seconds, from the header) of every row's audio, in ``nj`` processes, a block of
    rows at a time; NaN where the file is unusable (missing, empty, unreadable, < 2 samples: a Problem)."""
    durs = np.full(len(idx), np.nan)
    problems: List[Problem] = []
    with _prober(nj, len(idx)) as probe:
        for start in range(0, len(idx), _BLOCK):
            jobs = [(utt, idx.audio(mls_id)) for utt, mls_id, _ in idx.rows(start, min(start + _BLOCK, len(idx)))]
            for i, (utt, path, dur, err) in enumerate(probe(jobs), start):
                if err is None:
                    durs[i] = dur
                else:
                    problems.append(Problem(utt, path, err))
    return durs, problems


@contextlib.contextmanager
def _prober(nj: int, n: int):
    """A map of :func:`_probe_one` over (utt, path) jobs, in ``nj`` forked processes when there
    are enough of them to pay for it (results in job order)."""
    nj = min(nj, -(-n // 64))  # never more processes than chunks of work (--nj 1000 for 250 files: 4)
    if nj > 1 and n > 64:
        with multiprocessing.get_context("fork").Pool(nj) as pool:
            yield lambda jobs: pool.imap(_probe_one, jobs, chunksize=64)
    else:
        yield lambda jobs: map(_probe_one, jobs)


def segment_durations(idx: SplitIndex) -> Tuple[np.ndarray, List[Problem]]:
    """Duration (end - start, seconds) of every row from ``<split>/segments.txt``
    (``<mls_id>\\t<url>\\t<start>\\t<end>``), for ``audio_checks=False``: no audio file is looked at.
    NaN, and a Problem, where the utterance has no line, an unparsable line or end <= start."""
    spath = idx.transcripts.parent / "segments.txt"
    durs = np.full(len(idx), np.nan)
    if not spath.is_file():
        raise MLSError(f"{spath}: not found; it gives the durations when the audio is not checked "
                       "(--audio_checks false); check the audio instead (--audio_checks true)")
    bad: Dict[int, Problem] = {}
    seen = np.zeros(len(idx), dtype=np.bool_)

    def place(ids: List[bytes], values: List[float], where: List[Optional[Tuple[str, str]]]) -> None:
        if not ids or not len(idx):
            return
        k = np.array(ids, dtype=bytes)
        j = np.minimum(np.searchsorted(idx.keys, k), len(idx) - 1)
        for n in np.flatnonzero(idx.keys[j] == k).tolist():
            row = int(j[n])
            if seen[row]:
                continue  # a repeated line: the first one counts, as in transcripts.txt
            seen[row] = True
            if where[n] is not None:
                bad[row] = Problem(idx.keys[row].decode("ascii"), *where[n])
            else:
                durs[row] = values[n]

    ids: List[bytes] = []
    values: List[float] = []
    where: List[Optional[Tuple[str, str]]] = []
    with open(spath, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            cols = raw.split(b"\t")
            if not raw.strip():
                continue
            try:
                utt = kaldi_utt_id(idx.ld.lang, cols[0].strip().decode("ascii"))
            except (MLSError, UnicodeDecodeError):
                continue  # not an utterance of this split's index (reported as missing if it should be)
            reason = None
            try:
                start, end = float(cols[2]), float(cols[3])
                if not (math.isfinite(start) and math.isfinite(end)):
                    raise ValueError
                if end <= start:
                    reason = f"segment end {end} <= start {start}"
            except (IndexError, ValueError):
                start = end = 0.0
                reason = "cannot parse the line (want <id> <url> <start> <end>)"
            ids.append(utt.encode("ascii"))
            values.append(end - start)
            where.append(None if reason is None else (f"{spath}:{lineno}", reason))
            if len(ids) == _BLOCK:
                place(ids, values, where)
                ids, values, where = [], [], []
    place(ids, values, where)
    problems = [bad[i] for i in sorted(bad)]
    for i in np.flatnonzero(~seen).tolist():
        problems.append(Problem(idx.keys[i].decode("ascii"), str(spath), "no line in segments.txt (its duration is unknown)"))
    return durs, problems


def probe_audio(utts: List[Utterance], nj: int = 1) -> Tuple[Dict[str, float], List[Problem]]:
    """Duration (seconds, from the header: no decoding) of each utterance's audio, in ``nj`` processes.

    Missing, empty, unreadable and too short (< 2 samples) files become Problems.
    """
    jobs = [(u.utt, u.audio) for u in utts]
    durs: Dict[str, float] = {}
    problems: List[Problem] = []
    with _prober(nj, len(jobs)) as probe:
        for utt, path, dur, err in probe(jobs):
            if err is None:
                durs[utt] = dur
            else:
                problems.append(Problem(utt, path, err))
    return durs, problems


def _probe_one(job: Tuple[str, str]) -> Tuple[str, str, float, Optional[str]]:
    utt, path = job
    try:
        frames, sr, _ = audio_info(path, utt)
    except AudioError as e:
        return utt, path, 0.0, e.reason
    if frames < MIN_SAMPLES:
        return utt, path, 0.0, f"too short: {frames} sample(s)"
    return utt, path, frames / sr, None


def _safe_id(lang: str, raw: str) -> str:
    """A one-token id for the bad-utterance report, Kaldi-style when the raw id parses."""
    try:
        return kaldi_utt_id(lang, raw)
    except MLSError:
        return f"{lang}_{''.join(raw.split()) or '<no-id>'}"


def _iter_audio(adir: Path, ext: str) -> Iterator[Path]:
    for dirpath, _, files in os.walk(adir):
        for f in files:
            if f.endswith("." + ext):
                yield Path(dirpath) / f


def _read_handles(path: Path) -> List[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise MLSError(f"{path}: not valid UTF-8 ({e})") from None
    out = []
    for lineno, line in enumerate(text.splitlines(), 1):
        h = line.strip()
        if not h:
            continue
        if not MLS_ID.match(h):
            raise MLSError(f"{path}:{lineno}: {h!r} is not an MLS utterance id <speaker>_<book>_<utt>")
        out.append(h)
    return out


def read_limited_supervision(ld: LanguageDir) -> Dict[str, List[str]]:
    """MLS limited-supervision lists as Kaldi ids: ``9h`` = ``9hr/handles.txt``, ``1h`` = the union of
    ``1hr/{0..5}/handles.txt`` (six 10-minute folds), ``10min`` = fold ``1hr/0`` (as in Libri-light).

    Returns {} when the release has no ``train/limited_supervision/``.
    """
    base = ld.path / "train" / "limited_supervision"
    if not base.is_dir():
        log.warning("%s: no limited_supervision lists; the 9h/1h/10min subsets are not made", base)
        return {}
    nine = base / "9hr" / "handles.txt"
    folds = sorted((p for p in (base / "1hr").glob("*/handles.txt")), key=lambda p: p.parent.name)
    if not nine.is_file() or not folds or folds[0].parent.name != "0":
        raise MLSError(f"{base}: expected 9hr/handles.txt and 1hr/0..5/handles.txt")
    one: List[str] = []
    for f in folds:
        one.extend(_read_handles(f))
    out = {"9h": _read_handles(nine), "1h": one, "10min": _read_handles(folds[0])}
    return {k: sorted({kaldi_utt_id(ld.lang, h) for h in v}, key=lambda s: s.encode("utf-8")) for k, v in out.items()}


def read_spk2gender(ld: LanguageDir) -> Dict[str, str]:
    """``metainfo.txt`` (``SPEAKER | GENDER | PARTITION | ...``) -> {Kaldi speaker id: m|f}; {} if absent."""
    path = ld.path / "metainfo.txt"
    if not path.is_file():
        return {}
    out: Dict[str, str] = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        cols = [c.strip() for c in line.split("|")]
        if len(cols) < 2 or not cols[0].isdigit() or cols[1].upper() not in ("M", "F"):
            continue
        try:
            out[kaldi_spk_id(ld.lang, cols[0])] = cols[1].lower()
        except MLSError:
            continue
    return out


def archive_name(lang: str, flavour: str = "opus") -> str:
    """``mls_polish_opus.tar.gz`` (opus) or ``mls_polish.tar.gz`` (flac)."""
    if flavour not in ("opus", "flac"):
        raise MLSError(f"flavour must be opus or flac, got {flavour!r}")
    return f"mls_{lang_name(lang)}{'_opus' if flavour == 'opus' else ''}.tar.gz"


def official_md5(archive: str, base_url: str = MLS_BASE_URL, required: bool = True) -> Optional[str]:
    """The archive's md5 from the published ``md5sum.txt``. Without it (unreachable, or the
    archive not listed) a download is an error unless ``required`` is False (``--no_verify_md5``):
    then None, with a warning, and only the gzip stream's CRC checks the archive."""
    url = f"{base_url}/{MLS_MD5_FILE}"
    try:
        table = parse_md5_table(fetch_text(url))
        problem = None if archive in table else f"{url} lists no md5 for {archive}"
    except DownloadError as e:
        table, problem = {}, str(e)
    if problem is None:
        return table[archive]
    if required:
        raise DownloadError(f"{problem}: cannot verify the download (--no_verify_md5 skips the check)")
    log.warning("%s; the archive is checked only by reading its gzip stream to the end", problem)
    return None


def download_language(
    lang: str,
    mls_root: str | Path,
    flavour: str = "opus",
    base_url: str = MLS_BASE_URL,
    md5: Optional[str] = None,
    keep_archive: bool = False,
    config: DownloadConfig | dict | None = None,
    verify_md5: bool = True,
) -> LanguageDir:
    """Download ``mls_<language>[_opus].tar.gz`` into ``mls_root`` (resumable), verify it and extract it.

    The md5 is ``md5`` if given, else the one published in ``<base_url>/md5sum.txt``; without
    either the gzip stream's own CRC (checked while extracting) is the integrity check.
    A language already extracted is returned as is.
    """
    root = Path(mls_root)
    top = archive_name(lang, flavour)[: -len(".tar.gz")]
    if (root / top).is_dir():
        return find_language_dir(root, lang)
    archive = root / archive_name(lang, flavour)
    url = f"{base_url}/{archive.name}"
    if md5 is None:
        md5 = official_md5(archive.name, base_url, required=verify_md5)
    log.info("downloading %s (%s) -> %s", url, PUBLISHED_SIZES[lang][0 if flavour == "opus" else 1], archive)
    download_file(url, archive, md5=md5, config=config, progress=_progress_logger(archive.name))
    log.info("extracting %s -> %s/%s", archive, root, top)
    extract_tar(archive, root, top)
    if not keep_archive:
        archive.unlink()
    return find_language_dir(root, lang)


def lm_archive_name(lang: str) -> str:
    """``mls_lm_polish.tar.gz``: the language's LM resources (``mls_lm_polish/data.txt``, the book
    text of the train books, one sentence a line, plus 3/5-gram ARPA models justkit does not use)."""
    return f"mls_lm_{lang_name(lang)}.tar.gz"


def find_lm_text(mls_root: str | Path, lang: str) -> Path:
    """``<mls_root>/mls_lm_<language>/data.txt``; MLSError naming the path when it is missing or empty."""
    path = Path(mls_root) / lm_archive_name(lang)[: -len(".tar.gz")] / "data.txt"
    if not path.is_file():
        raise MLSError(f"{path}: no LM text for language {lang}; download it with --download true "
                       f"({MLS_BASE_URL}/{lm_archive_name(lang)}) or point --mls_root at the directory that holds it")
    if path.stat().st_size == 0:
        raise MLSError(f"{path}: the LM text of language {lang} is empty")
    return path


def download_lm(lang: str, mls_root: str | Path, base_url: str = MLS_BASE_URL, md5: Optional[str] = None,
                keep_archive: bool = False, config: DownloadConfig | dict | None = None,
                verify_md5: bool = True) -> Path:
    """Download and extract ``mls_lm_<language>.tar.gz`` into ``mls_root`` as :func:`download_language`
    does the audio (resumable ``.part`` file, md5 from ``md5sum.txt`` unless given, atomic
    extraction); returns the path of its ``data.txt``. Already extracted: returned as is."""
    root = Path(mls_root)
    name = lm_archive_name(lang)
    top = name[: -len(".tar.gz")]
    if not (root / top).is_dir():
        archive = root / name
        url = f"{base_url}/{name}"
        if md5 is None:
            md5 = official_md5(name, base_url, required=verify_md5)
        log.info("downloading %s -> %s", url, archive)
        download_file(url, archive, md5=md5, config=config, progress=_progress_logger(name))
        log.info("extracting %s -> %s/%s", archive, root, top)
        extract_tar(archive, root, top)
        if not keep_archive:
            archive.unlink()
    return find_lm_text(root, lang)


def _progress_logger(name: str):
    state = {"next": 0}

    def report(done: int, total: Optional[int]) -> None:
        if done >= state["next"]:
            pct = f" ({100 * done / total:.0f}%)" if total else ""
            log.info("%s: %.1f MB%s", name, done / 1e6, pct)
            state["next"] = done + max(1 << 26, (total or 0) // 20)

    return report
