"""Stage 1 for MLS: the release tree (downloaded if asked) -> Kaldi data dirs per language and split,
the combined train/dev sets and the limited-supervision subsets.

Streaming: a split is held as a SplitIndex (sorted Kaldi ids, byte offsets into
transcripts.txt: ~80 bytes an utterance at peak), every table is written in one sorted pass, subsets
are a filtering pass and the combined sets a k-way merge, so the full MLS (11.5M utterances)
is prepared in under 1 GB (12.25M synthetic utterances: 838 MB peak; docs/training.md).
"""
from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np

from justkit.corpora.mls import (
    MLS_BASE_URL,
    MLS_LANGUAGES,
    SPLITS,
    LanguageDir,
    MLSError,
    Problem,
    download_language,
    find_language_dir,
    index_split,
    kaldi_spk_id,
    probe_durations,
    read_limited_supervision,
    read_spk2gender,
    segment_durations,
)
from justkit.datadir.combine import combine_data_dirs
from justkit.datadir.subset import remove_stale, subset_data_dir
from justkit.datadir.tables import DataDir, SortedTableWriter, Spk2uttStream
from justkit.datadir.validate import DEFAULT_REQUIRE, assert_valid_data_dir, fix_data_dir
from justkit.fileio import atomic_open

log = logging.getLogger(__name__)

REQUIRE = (*DEFAULT_REQUIRE, "utt2dur")
# Consistency of the data dirs stage 1 writes. Every table of a set is written in one pass over
# one sorted, de-duplicated index (SortedTableWriter refuses a key out of order or repeated), so
# the tables hold the same ids in the same order, values are non-empty single lines and spk2utt
# is utt2spk grouped: consistent by construction. The dict-based check (fix_data_dir and
# assert_valid_data_dir, which read every table into memory) runs in addition on sets of at
# most this many utterances (the mini corpus, tests, small languages); larger sets (full MLS:
# 10.8M English) rely on the construction, so that stage 1 stays in a few GB.
DICT_CHECK_MAX_UTTS = 50_000
TABLES = ("wav.scp", "text", "utt2spk", "utt2lang", "utt2dur", "spk2utt")


@dataclass
class PrepareConfig:
    """What stage 1 prepares and from where."""

    mls_root: str
    out: str
    langs: Sequence[str] = tuple(MLS_LANGUAGES)
    download: bool = False
    flavour: str = "opus"          # which release --download fetches: opus (48 kHz) or flac (16 kHz)
    base_url: str = MLS_BASE_URL
    keep_archive: bool = False
    nj: int = 1
    splits: Sequence[str] = SPLITS  # which of train/dev/test to prepare (an unlabelled pool: train only)
    verify_md5: bool = True        # a download without a published md5 is an error unless False
    # False: no audio file is stat'ed, opened or listed; utt2dur comes from <split>/segments.txt.
    # For a full MLS, where probing 11M headers takes hours; missing or broken audio then shows up in stage 2.
    audio_checks: bool = True

    def __post_init__(self) -> None:
        bad = [s for s in self.splits if s not in SPLITS]
        if bad or not self.splits:
            raise MLSError(f"splits: {bad or 'none given'}; choose from {list(SPLITS)}")


def locate(cfg: PrepareConfig, lang: str) -> LanguageDir:
    """The language's release dir under mls_root, downloading it first if allowed and missing."""
    try:
        return find_language_dir(cfg.mls_root, lang, look_at_audio=cfg.audio_checks)
    except MLSError:
        if not cfg.download:
            raise
    return download_language(lang, cfg.mls_root, flavour=cfg.flavour, base_url=cfg.base_url, verify_md5=cfg.verify_md5,
                             keep_archive=cfg.keep_archive)


def write_set(out: Path, set_name: str, ld: LanguageDir, split: str, nj: int,
              spk2gender: Dict[str, str], audio_checks: bool = True) -> tuple[np.ndarray, List[Problem]]:
    """Write data dir ``out/set_name`` for one language split, streaming; returns (the Kaldi ids
    kept, sorted, as a bytes array; problems)."""
    idx = index_split(ld, split, audio_checks)
    durs, bad_dur = probe_durations(idx, nj) if audio_checks else segment_durations(idx)
    problems = idx.problems + bad_dur
    good = ~np.isnan(durs)
    idx.keep(good)
    durs = durs[good]
    d = out / set_name
    if not len(idx):
        raise MLSError(f"{ld.path / split}: no usable utterance ({len(problems)} bad, e.g. "
                       f"{problems[0].utt if problems else '-'}: {problems[0].reason if problems else 'none listed'})")
    d.mkdir(parents=True, exist_ok=True)
    speakers = set()
    with contextlib.ExitStack() as stack:  # all tables renamed into place together, or none
        w = {n: SortedTableWriter(stack.enter_context(atomic_open(d / n, "w")), d / n) for n in TABLES}
        spk2utt = Spk2uttStream(w["spk2utt"])
        for i, (utt, mls_id, text) in enumerate(idx.rows()):
            spk = kaldi_spk_id(ld.lang, mls_id.split("_", 1)[0])
            w["wav.scp"].write(utt, idx.audio(mls_id))
            w["text"].write(utt, text)
            w["utt2spk"].write(utt, spk)
            w["utt2lang"].write(utt, ld.lang)
            w["utt2dur"].write(utt, f"{durs[i]:.3f}")
            if not spk2utt.add(utt, spk):  # cannot happen: the id starts with the zero-padded speaker
                raise MLSError(f"{d}: utterance {utt} breaks the speaker order of spk2utt")
            speakers.add(spk)
        spk2utt.flush()
    remove_stale(d, TABLES)
    genders = {s: g for s, g in spk2gender.items() if s in speakers}
    if genders:
        DataDir(d).write("spk2gender", genders)
    elif (d / "spk2gender").exists():
        (d / "spk2gender").unlink()
    if len(idx) <= DICT_CHECK_MAX_UTTS:
        # Everything bad was left out above; fix_data_dir is the library's consistency pass and
        # drops (and we report) anything it still finds inconsistent.
        res = fix_data_dir(d)
        if res["dropped"]:
            for u, why in res["dropped"].items():
                j = int(np.searchsorted(idx.keys, u.encode("utf-8")))
                audio = next(idx.rows(j, j + 1))[1] if j < len(idx) and idx.keys[j] == u.encode("utf-8") else None
                problems.append(Problem(u, idx.audio(audio) if audio else "-", f"fix_data_dir: {why}"))
            dropped = np.array([u.encode("utf-8") for u in res["dropped"]], dtype=bytes)
            idx.keep(~np.isin(idx.keys, dropped))
        assert_valid_data_dir(d, require=REQUIRE)
    return idx.keys, problems


def check_set(d: Path, n: int) -> None:
    """The dict-based validation of a written set, when it is small enough (DICT_CHECK_MAX_UTTS)."""
    if n <= DICT_CHECK_MAX_UTTS:
        assert_valid_data_dir(d, require=REQUIRE)
    else:
        log.info("%s: %d utterances, consistent by construction (dict-based check only up to %d)",
                 d, n, DICT_CHECK_MAX_UTTS)


def write_bad_utts(path: Path, bad: List[tuple[str, Problem]]) -> None:
    """``<set> <utt> <file> <reason>`` lines, sorted by set and utterance, atomically (empty if none)."""
    rows = sorted(bad, key=lambda sp: (sp[0], sp[1].utt.encode("utf-8")))
    with atomic_open(path, "w") as f:
        for set_name, p in rows:
            f.write(f"{set_name} {p.utt} {p.file.replace(' ', '%20')} {' '.join(p.reason.split())}\n")


def prepare(cfg: PrepareConfig) -> Dict[str, int]:
    """Run stage 1; returns {set name: utterances}. Raises MLSError / DataDirError on fatal problems."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    langs = list(cfg.langs)
    for lang in langs:
        if lang not in MLS_LANGUAGES:
            raise MLSError(f"unknown language {lang!r} in --langs; known: {' '.join(MLS_LANGUAGES)}")
    if not langs:
        raise MLSError("--langs is empty")
    counts: Dict[str, int] = {}
    bad: List[tuple[str, Problem]] = []
    for lang in langs:
        ld = locate(cfg, lang)
        log.info("%s: %s (%s audio)", lang, ld.path, ld.audio_ext)
        spk2gender = read_spk2gender(ld)
        train_keys = None
        for split in cfg.splits:
            set_name = f"{split}_{lang}"
            t0 = time.time()
            keys, problems = write_set(out, set_name, ld, split, cfg.nj, spk2gender, cfg.audio_checks)
            counts[set_name] = len(keys)
            if split == "train":
                train_keys = keys
            bad += [(set_name, p) for p in problems]
            for p in problems:
                log.warning("%s: %s %s: %s", set_name, p.utt, p.file, p.reason)
            log.info("%s: %d utterances, %d bad (%.1f s)", set_name, len(keys), len(problems), time.time() - t0)
            del keys
        subsets = read_limited_supervision(ld) if "train" in cfg.splits else {}
        for sub, ids in subsets.items():
            dest = out / f"train_{lang}_{sub}"
            listed = np.array([u.encode("utf-8") for u in ids], dtype=bytes)
            keep = [u for u, ok in zip(ids, np.isin(listed, train_keys)) if ok]
            if len(keep) < len(ids):
                log.warning("%s: %d of %d listed utterances are not in train_%s (bad, see bad_utts.txt)",
                            dest.name, len(ids) - len(keep), len(ids), lang)
            if not keep:
                raise MLSError(f"{ld.path}/train/limited_supervision: none of the {sub} utterances is usable")
            counts[dest.name] = subset_data_dir(out / f"train_{lang}", dest, keep)
            check_set(dest, counts[dest.name])
        train_keys = None
    for split in (s for s in ("train", "dev") if s in cfg.splits):
        counts[split] = combine_data_dirs(out / split, [out / f"{split}_{lang}" for lang in langs])
        check_set(out / split, counts[split])
    write_bad_utts(out / "bad_utts.txt", bad)
    summary = ", ".join(lang + " " + "/".join(str(counts[f"{sp}_{lang}"]) for sp in cfg.splits) for lang in langs)
    log.info("stage 1 done: %s utterances per language (%s); %d bad utterance(s) listed in %s",
             "/".join(cfg.splits), summary, len(bad), out / "bad_utts.txt")
    return counts
