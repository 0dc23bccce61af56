"""Stage 1 for MLS: the release tree (downloaded if asked) -> Kaldi data dirs per language and split,
the combined train/dev sets and the limited-supervision subsets."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence

from justkit.corpora.mls import (
    MLS_BASE_URL,
    MLS_LANGUAGES,
    SPLITS,
    LanguageDir,
    MLSError,
    Problem,
    download_language,
    find_language_dir,
    probe_audio,
    read_limited_supervision,
    read_spk2gender,
    read_split,
)
from justkit.datadir.combine import combine_data_dirs
from justkit.datadir.subset import subset_data_dir, write_data_dir
from justkit.datadir.tables import DataDir
from justkit.datadir.validate import DEFAULT_REQUIRE, assert_valid_data_dir, fix_data_dir
from justkit.fileio import atomic_open

log = logging.getLogger(__name__)

REQUIRE = (*DEFAULT_REQUIRE, "utt2dur")


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

    def __post_init__(self) -> None:
        bad = [s for s in self.splits if s not in SPLITS]
        if bad or not self.splits:
            raise MLSError(f"splits: {bad or 'none given'}; choose from {list(SPLITS)}")


def locate(cfg: PrepareConfig, lang: str) -> LanguageDir:
    """The language's release dir under mls_root, downloading it first if allowed and missing."""
    try:
        return find_language_dir(cfg.mls_root, lang)
    except MLSError:
        if not cfg.download:
            raise
    return download_language(lang, cfg.mls_root, flavour=cfg.flavour, base_url=cfg.base_url, verify_md5=cfg.verify_md5,
                             keep_archive=cfg.keep_archive)


def write_set(out: Path, set_name: str, ld: LanguageDir, split: str, nj: int,
              spk2gender: Dict[str, str]) -> tuple[int, List[Problem]]:
    """Write data dir ``out/set_name`` for one language split; returns (utterances kept, problems)."""
    rec = read_split(ld, split)
    durs, bad_audio = probe_audio(rec.utts, nj)
    problems = rec.problems + bad_audio
    good = [u for u in rec.utts if u.utt in durs]
    d = out / set_name
    if not good:
        raise MLSError(f"{ld.path / split}: no usable utterance ({len(problems)} bad, e.g. "
                       f"{problems[0].utt if problems else '-'}: {problems[0].reason if problems else 'none listed'})")
    tables = {
        "wav.scp": {u.utt: u.audio for u in good},
        "text": {u.utt: u.text for u in good},
        "utt2spk": {u.utt: u.speaker for u in good},
        "utt2lang": {u.utt: ld.lang for u in good},
        "utt2dur": {u.utt: f"{durs[u.utt]:.3f}" for u in good},
    }
    write_data_dir(d, tables)
    speakers = {u.speaker for u in good}
    genders = {s: g for s, g in spk2gender.items() if s in speakers}
    if genders:
        DataDir(d).write("spk2gender", genders)
    elif (d / "spk2gender").exists():
        (d / "spk2gender").unlink()
    # Everything bad was left out above; fix_data_dir is the library's consistency pass and
    # drops (and we report) anything it still finds inconsistent.
    res = fix_data_dir(d)
    audio = tables["wav.scp"]
    problems += [Problem(u, audio.get(u, "-"), f"fix_data_dir: {why}") for u, why in res["dropped"].items()]
    assert_valid_data_dir(d, require=REQUIRE)
    return res["kept"], problems


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
        for split in cfg.splits:
            set_name = f"{split}_{lang}"
            t0 = time.time()
            n, problems = write_set(out, set_name, ld, split, cfg.nj, spk2gender)
            counts[set_name] = n
            bad += [(set_name, p) for p in problems]
            for p in problems:
                log.warning("%s: %s %s: %s", set_name, p.utt, p.file, p.reason)
            log.info("%s: %d utterances, %d bad (%.1f s)", set_name, n, len(problems), time.time() - t0)
        subsets = read_limited_supervision(ld) if "train" in cfg.splits else {}
        have = set(DataDir(out / f"train_{lang}").read("utt2spk")) if subsets else set()
        for sub, ids in subsets.items():
            dest = out / f"train_{lang}_{sub}"
            keep = [u for u in ids if u in have]
            if len(keep) < len(ids):
                log.warning("%s: %d of %d listed utterances are not in train_%s (bad, see bad_utts.txt)",
                            dest.name, len(ids) - len(keep), len(ids), lang)
            if not keep:
                raise MLSError(f"{ld.path}/train/limited_supervision: none of the {sub} utterances is usable")
            counts[dest.name] = subset_data_dir(out / f"train_{lang}", dest, keep)
            assert_valid_data_dir(dest, require=REQUIRE)
    for split in (s for s in ("train", "dev") if s in cfg.splits):
        counts[split] = combine_data_dirs(out / split, [out / f"{split}_{lang}" for lang in langs])
        assert_valid_data_dir(out / split, require=REQUIRE)
    write_bad_utts(out / "bad_utts.txt", bad)
    summary = ", ".join(lang + " " + "/".join(str(counts[f"{sp}_{lang}"]) for sp in cfg.splits) for lang in langs)
    log.info("stage 1 done: %s utterances per language (%s); %d bad utterance(s) listed in %s",
             "/".join(cfg.splits), summary, len(bad), out / "bad_utts.txt")
    return counts
