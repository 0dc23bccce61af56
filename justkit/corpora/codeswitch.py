"""Code-switching test set: concatenate the audio of two utterances of two different languages."""
from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
import soundfile as sf

from justkit.datadir.tables import DataDir, DataDirError, utt2spk_to_spk2utt
from justkit.fileio import atomic_open, is_pipe

log = logging.getLogger(__name__)


@dataclass
class CodeSwitchConfig:
    """How the code-switched utterances are drawn and joined."""

    num: int = 20                 # utterances to make
    seed: int = 0                 # same seed + same inputs -> same set, byte for byte
    silence_sec: float = 0.3      # zeros between the two parts
    sample_rate: int = 16000      # every input must already be at this rate (stage 2)
    prefix: str = "cs"            # utterance ids: <prefix><index>_<l1>-<l2>


@dataclass
class _Source:
    lang: str
    utt: str
    wav: str
    text: str
    spk: str
    dir: str  # the input data dir, for error messages


def _load_sources(dirs: Sequence[str | Path]) -> Dict[str, List[_Source]]:
    """Utterances per language of the input data dirs (each dir must hold one language)."""
    by_lang: Dict[str, List[_Source]] = {}
    for d in dirs:
        dd = DataDir(d)
        if not dd.path.is_dir():
            raise DataDirError(f"{dd.path}: input data dir not found (run stage 2 for it first)")
        for name in ("wav.scp", "text", "utt2lang", "utt2spk"):
            if not dd.has(name):
                raise DataDirError(f"{dd.path}/{name}: file not found")
        wavs, texts = dd.read("wav.scp"), dd.read("text")
        langs, spks = dd.read("utt2lang"), dd.read("utt2spk")
        dir_langs = sorted(set(langs.values()))
        if len(dir_langs) != 1:
            raise DataDirError(f"{dd.path}/utt2lang: expected one language per input dir, got {dir_langs}")
        lang = dir_langs[0]
        if lang in by_lang:
            raise DataDirError(f"{dd.path}: language {lang} given by two input dirs")
        srcs = []
        for utt in sorted(wavs, key=lambda s: s.encode("utf-8")):
            for name, table in (("text", texts), ("utt2lang", langs), ("utt2spk", spks)):
                if utt not in table:
                    raise DataDirError(f"{dd.path}/{name}: utterance {utt} (in wav.scp) is missing")
            srcs.append(_Source(lang, utt, wavs[utt], texts[utt], spks[utt], f"{dd.path}/wav.scp"))
        if not srcs:
            raise DataDirError(f"{dd.path}/wav.scp: no utterances")
        by_lang[lang] = srcs
    if len(by_lang) < 2:
        raise DataDirError(f"code-switch set needs at least two languages, got {sorted(by_lang)} from {list(dirs)}")
    return by_lang


def _check_audio(src: _Source, sample_rate: int) -> None:
    """Readable, at ``sample_rate``: checked for every chosen source before anything is written."""
    path, where = src.wav.strip(), src.dir
    if is_pipe(path):
        raise DataDirError(f"{where}: utterance {src.utt}: piped wav.scp entries are not supported ({path!r})")
    try:
        sr = sf.info(path).samplerate
    except (RuntimeError, sf.LibsndfileError) as e:
        raise DataDirError(f"{where}: utterance {src.utt}: cannot read {path}: {e}") from None
    if sr != sample_rate:
        raise DataDirError(
            f"{where}: utterance {src.utt}: {path} is {sr} Hz, expected {sample_rate} Hz (resample in stage 2)"
        )


def _read_audio(src: _Source) -> np.ndarray:
    try:
        data, _ = sf.read(src.wav.strip(), dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError) as e:
        raise DataDirError(f"{src.dir}: utterance {src.utt}: cannot read {src.wav}: {e}") from None
    return data.mean(axis=1)


def plan_pairs(by_lang: Dict[str, List[_Source]], num: int, seed: int) -> List[tuple]:
    """Deterministic list of ``(source 1, source 2)`` pairs of two different languages.

    No (utterance, utterance) pair repeats while unused pairs remain.
    """
    rng = random.Random(seed)
    langs = sorted(by_lang)
    pairs, seen = [], set()
    total = sum(len(by_lang[a]) * len(by_lang[b]) for a in langs for b in langs if a != b)
    for _ in range(num):
        for _try in range(1000):
            l1, l2 = rng.sample(langs, 2)
            s1, s2 = rng.choice(by_lang[l1]), rng.choice(by_lang[l2])
            if (s1.utt, s2.utt) not in seen or len(seen) >= total:
                break
        seen.add((s1.utt, s2.utt))
        pairs.append((s1, s2))
    return pairs


def make_codeswitch(in_dirs: Sequence[str | Path], out_dir: str | Path, cfg: CodeSwitchConfig) -> List[str]:
    """Build the Kaldi data dir ``out_dir`` (wav.scp, text, utt2spk, spk2utt, utt2lang, utt2dur,
    cs_sources) with FLAC audio under ``out_dir/data/``; returns the utterance ids.

    Each utterance is ``audio1 + silence + audio2``; its text is ``text1 text2``, its
    language ``l1-l2``, its speaker the utterance itself (two speakers are mixed).
    """
    if cfg.num <= 0:
        raise ValueError(f"num must be positive, got {cfg.num}")
    by_lang = _load_sources(in_dirs)
    pairs = plan_pairs(by_lang, cfg.num, cfg.seed)
    for s1, s2 in pairs:
        _check_audio(s1, cfg.sample_rate)
        _check_audio(s2, cfg.sample_rate)
    out = DataDir(out_dir)
    data_dir = out.path / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    silence = np.zeros(int(round(cfg.silence_sec * cfg.sample_rate)), dtype=np.float32)
    wav_scp, text, utt2spk, utt2lang, utt2dur, sources = {}, {}, {}, {}, {}, {}
    width = max(4, len(str(cfg.num - 1)))
    for i, (s1, s2) in enumerate(pairs):
        utt = f"{cfg.prefix}{i:0{width}d}_{s1.lang}-{s2.lang}"
        a1, a2 = _read_audio(s1), _read_audio(s2)
        audio = np.concatenate([a1, silence, a2])
        path = data_dir / f"{utt}.flac"
        with atomic_open(path, "wb", encoding=None) as f:
            sf.write(f, audio, cfg.sample_rate, format="FLAC", subtype="PCM_16")
        wav_scp[utt] = str(path)
        text[utt] = f"{s1.text} {s2.text}"
        utt2spk[utt] = utt
        utt2lang[utt] = f"{s1.lang}-{s2.lang}"
        utt2dur[utt] = f"{len(audio) / cfg.sample_rate:.4f}"
        sources[utt] = f"{s1.utt} {s2.utt}"
    for name, table in (
        ("wav.scp", wav_scp), ("text", text), ("utt2spk", utt2spk), ("utt2lang", utt2lang),
        ("utt2dur", utt2dur), ("cs_sources", sources), ("spk2utt", utt2spk_to_spk2utt(utt2spk)),
    ):
        out.write(name, table)
    log.info("%s: %d code-switched utterances from %s", out.path, len(wav_scp), ", ".join(sorted(by_lang)))
    return sorted(wav_scp)
