#!/usr/bin/env python3
"""Synthesise a mini Multilingual LibriSpeech corpus (MLS opus release layout) with espeak-ng.

    tools/venv/bin/python tools/mini_mls/build.py --size mini --seed 0 --out tools/mini_mls/corpus

Per language it writes ``mls_<language>_opus/`` exactly as the OpenSLR 94 tarballs extract:
``metainfo.txt``, ``{train,dev,test}/{transcripts.txt,segments.txt}``,
``{train,dev,test}/audio/<spk>/<book>/<spk>_<book>_<utt>.opus`` (48 kHz Ogg/Opus) and
``train/limited_supervision/{9hr/handles.txt,1hr/{0..5}/handles.txt}``.
Speakers are espeak-ng voice variants with their own pitch and speed; sentences come from
the small per-language grammar in ``lexicon/<lang>.txt`` (subject verb object [adverb]).
Each language is built in a temporary sibling directory and renamed into place.

``--word_ctm FILE`` writes instead the true word start times of a split (a CTM, seconds in the
corpus audio) by synthesising each utterance again through libespeak-ng's word events; nothing
else is written (docs/interfaces.md "Word timings" compares a model's CTM with it).
"""
from __future__ import annotations

import argparse
import dataclasses
import io
import multiprocessing
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import soundfile as sf

from justkit.config import from_dict

HERE = Path(__file__).resolve().parent
LEXICON_DIR = HERE / "lexicon"

LANG_NAMES = {
    "en": "english", "de": "german", "nl": "dutch", "es": "spanish",
    "fr": "french", "pt": "portuguese", "it": "italian", "pl": "polish",
}

# Utterances per language: train, dev, test. Imbalanced like MLS (en >> de > nl > fr > es > it > pt, pl).
SIZES: dict[str, dict[str, tuple[int, int, int]]] = {
    "tiny": {"en": (12, 2, 2), "de": (10, 2, 2), "nl": (10, 2, 2), "fr": (10, 2, 2),
             "es": (10, 2, 2), "it": (10, 2, 2), "pt": (10, 2, 2), "pl": (10, 2, 2)},
    "mini": {"en": (250, 18, 18), "de": (160, 18, 18), "nl": (120, 18, 18), "fr": (110, 18, 18),
             "es": (100, 18, 18), "it": (70, 18, 18), "pt": (45, 18, 18), "pl": (45, 18, 18)},
}
for _name, _mult in (("small", 4), ("medium", 16)):
    SIZES[_name] = {k: (t * _mult, d * 2, e * 2) for k, (t, d, e) in SIZES["mini"].items()}

# Speakers per split for each size: train speakers grow with the corpus, dev/test stay few.
SPEAKERS = {"tiny": (2, 1, 1), "mini": (6, 2, 2), "small": (10, 3, 3), "medium": (16, 4, 4)}

# The unlabelled pool (--size pool): extra train utterances for semi-supervised experiments,
# POOL_FACTOR x mini's train count per language, read by the voices mini does not use (its
# 10 speakers take the first 10 variants of the language's shuffled list, the pool the other
# 9), with sentences that are not in mini. Its transcripts are written as MLS writes them, but
# a recipe uses the pool as audio only. Train split only: no dev/test, no limited-supervision lists.
POOL_FACTOR = 2
POOL_SPEAKERS = 9  # len(VARIANTS) - sum(SPEAKERS['mini']): the voices mini leaves unused

# espeak-ng voice variants that sound human (robotic/whisper ones left out), with gender for metainfo.
VARIANTS = [("m1", "M"), ("m2", "M"), ("m3", "M"), ("m4", "M"), ("m5", "M"), ("m6", "M"),
            ("m7", "M"), ("m8", "M"), ("michel", "M"), ("f1", "F"), ("f2", "F"), ("f3", "F"),
            ("f4", "F"), ("f5", "F"), ("anika", "F"), ("belinda", "F"), ("linda", "F"),
            ("steph", "F"), ("aunty", "F")]

SLOTS = ("subject", "verb", "object", "adverb")
SAMPLE_RATE = 48000
MIN_WORDS, MAX_WORDS = 3, 7
# Fractions of the train utterances in the limited-supervision lists. MLS: 9hr and six disjoint
# 10-minute folds (1hr/0..5, together 1 h), all disjoint from each other.
FOLD_FRACTION = 0.025
NINE_HR_FRACTION = 0.40


class BuildError(RuntimeError):
    """The corpus cannot be built (missing espeak-ng, bad lexicon, bad option)."""


@dataclasses.dataclass
class Lexicon:
    """A per-language grammar: the espeak-ng voice and the phrases of each slot."""

    lang: str
    voice: str
    slots: dict[str, list[str]]

    def sentence(self, rng: random.Random) -> str:
        """subject verb object [adverb], resampled until it has MIN_WORDS..MAX_WORDS words."""
        while True:
            parts = [rng.choice(self.slots["subject"]), rng.choice(self.slots["verb"]),
                     rng.choice(self.slots["object"])]
            if rng.random() < 0.6:
                parts.append(rng.choice(self.slots["adverb"]))
            text = " ".join(parts)
            if MIN_WORDS <= len(text.split()) <= MAX_WORDS:
                return text


@dataclasses.dataclass
class Speaker:
    """One synthetic reader: MLS-style numeric id, the books read, and the espeak-ng voice."""

    spk: str
    gender: str
    variant: str
    pitch: int
    speed: int
    books: list[str]


@dataclasses.dataclass
class Utt:
    utt: str
    spk: Speaker
    book: str
    text: str
    split: str


def load_lexicon(lang: str, lexicon_dir: Path = LEXICON_DIR) -> Lexicon:
    """Parse ``lexicon/<lang>.txt``: ``voice <espeak voice>`` then ``[slot]`` sections of phrases."""
    path = lexicon_dir / f"{lang}.txt"
    if not path.is_file():
        raise BuildError(f"{path}: no lexicon for language {lang!r}")
    voice, slot, slots = None, None, {s: [] for s in SLOTS}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("voice "):
            voice = line.split(None, 1)[1].strip()
        elif line.startswith("[") and line.endswith("]"):
            slot = line[1:-1]
            if slot not in slots:
                raise BuildError(f"{path}:{lineno}: unknown slot [{slot}]; known: {list(SLOTS)}")
        elif slot is None:
            raise BuildError(f"{path}:{lineno}: phrase before any [slot] header")
        else:
            if line != line.lower() or any(c in line for c in ".,;:!?'\"-"):
                raise BuildError(f"{path}:{lineno}: phrases must be lowercase without punctuation")
            slots[slot].append(line)
    if voice is None:
        raise BuildError(f"{path}: no 'voice <name>' line")
    empty = [s for s, v in slots.items() if not v]
    if empty:
        raise BuildError(f"{path}: empty slot(s) {empty}")
    return Lexicon(lang, voice, slots)


def check_espeak() -> str:
    """Return the espeak-ng version line, or raise with the install hint."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise BuildError("espeak-ng is not installed; install it with: sudo apt-get install espeak-ng")
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def _new_id(rng: random.Random, used_ids: set[str], lo: int, hi: int) -> str:
    """A numeric id in [lo, hi] not in ``used_ids`` (then added to it)."""
    while True:
        i = str(rng.randint(lo, hi))
        if i not in used_ids:
            used_ids.add(i)
            return i


def plan_language(lang: str, size: str, seed: int, used_ids: set[str]) -> list[Utt]:
    """Choose speakers, books and distinct sentences for one language (deterministic in seed)."""
    rng = random.Random(f"mini-mls/{seed}/{lang}")
    lex = load_lexicon(lang)
    counts = dict(zip(("train", "dev", "test"), SIZES[size][lang]))
    n_spk = dict(zip(("train", "dev", "test"), SPEAKERS[size]))

    def new_id(lo: int, hi: int) -> str:
        return _new_id(rng, used_ids, lo, hi)

    variants = VARIANTS[:]
    rng.shuffle(variants)
    utts: list[Utt] = []
    seen_text: set[str] = set()
    vi = 0
    for split in ("train", "dev", "test"):
        speakers = []
        for _ in range(n_spk[split]):
            variant, gender = variants[vi % len(variants)]
            vi += 1
            speakers.append(Speaker(spk=new_id(100, 12999), gender=gender, variant=variant,
                                    pitch=rng.randint(30, 70), speed=rng.randint(150, 190),
                                    books=[new_id(100, 14999) for _ in range(rng.randint(1, 2))]))
        next_idx: dict[tuple[str, str], int] = {}
        for i in range(counts[split]):
            spk = speakers[i % len(speakers)]
            book = rng.choice(spk.books)
            for _ in range(1000):
                text = lex.sentence(rng)
                if text not in seen_text:
                    break
            else:
                raise BuildError(f"{lang}: grammar too small for {sum(counts.values())} distinct sentences")
            seen_text.add(text)
            idx = next_idx.get((spk.spk, book), 0)
            next_idx[(spk.spk, book)] = idx + 1 + (rng.random() < 0.3)  # MLS segment numbers have gaps
            utts.append(Utt(f"{spk.spk}_{book}_{idx:06d}", spk, book, text, split))
    return utts


def plan_pool(lang: str, seed: int, used_ids: set[str], mini: list[Utt]) -> list[Utt]:
    """The unlabelled pool of ``lang`` (see POOL_FACTOR) beside ``mini``, the mini plan of the
    language (every language's mini plan made first, in order, with the same ``used_ids``, as a
    mini build makes them): the pool's ids and voices are new, and none of its sentences is one
    of mini's (the grammar is too small for all of them to be distinct as well)."""
    mini_text = {u.text for u in mini}
    variants = VARIANTS[:]
    random.Random(f"mini-mls/{seed}/{lang}").shuffle(variants)  # the order plan_language used
    free = variants[sum(SPEAKERS["mini"]):]
    rng = random.Random(f"mini-mls-pool/{seed}/{lang}")
    lex = load_lexicon(lang)

    def new_id(lo: int, hi: int) -> str:
        return _new_id(rng, used_ids, lo, hi)

    speakers = [Speaker(spk=new_id(100, 12999), gender=g, variant=v, pitch=rng.randint(30, 70),
                        speed=rng.randint(150, 190), books=[new_id(100, 14999) for _ in range(rng.randint(1, 2))])
                for v, g in free[:POOL_SPEAKERS]]
    utts: list[Utt] = []
    next_idx: dict[tuple[str, str], int] = {}
    for i in range(POOL_FACTOR * SIZES["mini"][lang][0]):
        spk = speakers[i % len(speakers)]
        book = rng.choice(spk.books)
        for _ in range(1000):  # no sentence of mini (its test sets included); pool repeats allowed
            text = lex.sentence(rng)
            if text not in mini_text:
                break
        else:
            raise BuildError(f"{lang}: grammar too small for pool sentences outside mini's")
        idx = next_idx.get((spk.spk, book), 0)
        next_idx[(spk.spk, book)] = idx + 1 + (rng.random() < 0.3)
        utts.append(Utt(f"{spk.spk}_{book}_{idx:06d}", spk, book, text, "train"))
    return utts


def grammar_sentences(lex: Lexicon) -> list[str]:
    """Every sentence the grammar of ``lex`` can make (MIN_WORDS..MAX_WORDS words), sorted."""
    out = set()
    for subj in lex.slots["subject"]:
        for verb in lex.slots["verb"]:
            for obj in lex.slots["object"]:
                for adv in [None] + lex.slots["adverb"]:
                    text = " ".join(p for p in (subj, verb, obj, adv) if p)
                    if MIN_WORDS <= len(text.split()) <= MAX_WORDS:
                        out.add(text)
    return sorted(out)


def heldout_sentences(lang: str, seed: int) -> set[str]:
    """The dev and test sentences of ``lang`` in every corpus size this seed can build (a size whose
    plan the grammar cannot fill builds no corpus, so has no test set to protect)."""
    held: set[str] = set()
    for size in SIZES:
        used_ids: set[str] = set()
        try:
            for code in LANG_NAMES:  # every language in order: the ids (and draws) a build makes
                plan = plan_language(code, size, seed, used_ids)
                if code == lang:
                    held.update(u.text for u in plan if u.split in ("dev", "test"))
        except BuildError:
            continue
    return held


def lm_sentences(lang: str, seed: int) -> list[str]:
    """The LM text of ``lang`` (``--size lm``): every sentence of its grammar but the held-out
    ones (:func:`heldout_sentences`), in a seeded random order."""
    held = heldout_sentences(lang, seed)
    text = [t for t in grammar_sentences(load_lexicon(lang)) if t not in held]
    random.Random(f"mini-mls-lm/{seed}/{lang}").shuffle(text)
    return text


def write_lm_text(lang: str, out: Path, seed: int, force: bool) -> Path:
    """``<out>/mls_lm_<language>/data.txt`` as the MLS LM archives extract (one sentence a line)."""
    final = out / f"mls_lm_{LANG_NAMES[lang]}"
    if final.exists() and not force:
        raise BuildError(f"{final} exists; pass --force to rebuild it")
    tmp = out / f".{final.name}.building"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    text = lm_sentences(lang, seed)
    (tmp / "data.txt").write_text("".join(t + "\n" for t in text), encoding="utf-8")
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    print(f"{lang}: {len(text)} LM sentences -> {final}/data.txt", file=sys.stderr)
    return final / "data.txt"


def synthesize(job: tuple[str, int, int, str, int, str]) -> tuple[np.ndarray, str]:
    """espeak-ng -> float waveform at 48 kHz with short random silences and a faint noise floor."""
    import torch
    import torchaudio

    torch.set_num_threads(1)
    voice, pitch, speed, text, noise_seed, utt = job
    cmd = ["espeak-ng", "--stdout", "-v", voice, "-p", str(pitch), "-s", str(speed), text]
    res = subprocess.run(cmd, capture_output=True, check=False)
    if res.returncode != 0 or not res.stdout:
        raise BuildError(f"{utt}: {' '.join(cmd)} failed: {res.stderr.decode(errors='replace')}")
    wav, sr = sf.read(io.BytesIO(res.stdout), dtype="float32")
    wav = torchaudio.functional.resample(torch.from_numpy(wav), sr, SAMPLE_RATE).numpy()
    rng = np.random.default_rng(noise_seed)
    lead, trail = silences(rng)
    wav = np.concatenate([np.zeros(lead, np.float32), wav, np.zeros(trail, np.float32)])
    wav = 0.7 * wav / max(1e-6, float(np.abs(wav).max()))
    wav += rng.normal(0.0, 10 ** (-55 / 20), wav.shape).astype(np.float32)  # -55 dBFS room noise
    return np.clip(wav, -1.0, 1.0), utt


def silences(rng: np.random.Generator) -> tuple[int, int]:
    """The leading and trailing silence (samples at SAMPLE_RATE) put around an utterance."""
    lead, trail = (int(SAMPLE_RATE * rng.uniform(0.05, 0.25)) for _ in range(2))
    return lead, trail


def synth_jobs(lang: str, utts: list[Utt], seed: int) -> list[tuple[str, int, int, str, int, str]]:
    """(voice, pitch, speed, text, noise seed, utt) of each utterance: what :func:`synthesize` reads."""
    lex = load_lexicon(lang)
    return [(f"{lex.voice}+{u.spk.variant}", u.spk.pitch,
             int(u.spk.speed * random.Random(f"{seed}/{u.utt}").uniform(0.95, 1.05)),
             u.text, random.Random(f"noise/{seed}/{lang}/{u.utt}").getrandbits(32), u.utt) for u in utts]


class _Espeak:
    """libespeak-ng through ctypes, synchronous: the samples and the word events of one text.

    Use one per text, in a process of its own (:func:`_word_starts`): an engine that has spoken
    before carries state over, and its timing then differs from the espeak-ng program's by up to
    tens of ms (a fresh one gives the same number of samples; re-initialising in-process hangs)."""

    def __init__(self) -> None:
        import ctypes
        import ctypes.util

        name = ctypes.util.find_library("espeak-ng") or "libespeak-ng.so.1"
        try:
            self.lib = lib = ctypes.CDLL(name)
        except OSError as e:
            raise BuildError(f"cannot load libespeak-ng ({e}); install it with: sudo apt-get install espeak-ng") from None

        class Event(ctypes.Structure):   # espeak_EVENT of speak_lib.h
            _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint),
                        ("text_position", ctypes.c_int), ("length", ctypes.c_int),
                        ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                        ("user_data", ctypes.c_void_p), ("id", ctypes.c_char * 8)]

        self.rate = lib.espeak_Initialize(2, 0, None, 0)        # AUDIO_OUTPUT_SYNCHRONOUS
        self.samples: list[int] = []
        self.words: list[tuple[int, int, int]] = []            # (text position, length, sample)

        def callback(wav, n, events):
            self.samples.append(n)
            i = 0
            while events[i].type != 0:                         # espeakEVENT_LIST_TERMINATED
                e = events[i]
                if e.type == 1:                                # espeakEVENT_WORD
                    self.words.append((e.text_position, e.length, e.sample))
                i += 1
            return 0

        class VoiceSpec(ctypes.Structure):   # espeak_VOICE of speak_lib.h
            _fields_ = [("name", ctypes.c_char_p), ("languages", ctypes.c_char_p), ("identifier", ctypes.c_char_p),
                        ("gender", ctypes.c_ubyte), ("age", ctypes.c_ubyte), ("variant", ctypes.c_ubyte),
                        ("xx1", ctypes.c_ubyte), ("score", ctypes.c_int), ("spare", ctypes.c_void_p)]

        self._voice_spec, self._ctypes = VoiceSpec, ctypes
        self._cb = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                                    ctypes.POINTER(Event))(callback)
        lib.espeak_SetSynthCallback(self._cb)

    def word_starts(self, voice: str, pitch: int, speed: int, text: str) -> tuple[list[tuple[str, float]], float]:
        """([(word, start seconds), ...], seconds of audio) as ``espeak-ng -v voice -p pitch -s speed`` speaks ``text``."""
        self.samples, self.words = [], []
        if self.lib.espeak_ng_SetVoiceByName(voice.encode()) != 0:
            # as the espeak-ng program does: a language name (with its +variant) as the voice spec
            spec = self._voice_spec(languages=voice.encode())
            if self.lib.espeak_SetVoiceByProperties(self._ctypes.byref(spec)) != 0:
                raise BuildError(f"espeak-ng has no voice {voice!r}")
        self.lib.espeak_SetParameter(1, speed, 0)              # espeakRATE
        self.lib.espeak_SetParameter(3, pitch, 0)              # espeakPITCH
        raw = text.encode()
        # the flags of the espeak-ng program: espeakCHARS_AUTO | espeakPHONEMES | espeakENDPAUSE
        self.lib.espeak_Synth(raw, len(raw) + 1, 0, 1, 0, 0x1000 | 0x100, None, None)
        self.lib.espeak_Synchronize()
        words = [(text[p - 1 : p - 1 + n], smp / self.rate) for p, n, smp in self.words if n > 0]
        if [w for w, _ in words] != text.split():
            raise BuildError(f"espeak-ng's word events {[w for w, _ in words]} do not match the text {text!r}")
        return words, sum(self.samples) / self.rate


def _word_starts(job: tuple[str, int, int, str, int, str]) -> tuple[str, list[tuple[str, float]], float, float]:
    """(utt, [(word, start seconds)], seconds of speech, leading silence seconds) of one synthesis job."""
    voice, pitch, speed, text, noise_seed, utt = job
    words, speech = _Espeak().word_starts(voice, pitch, speed, text)
    return utt, words, speech, silences(np.random.default_rng(noise_seed))[0] / SAMPLE_RATE


def word_ctm(cfg: "BuildConfig", split: str, out: Path) -> int:
    """Write the true word timings of ``split`` of every language of ``cfg`` as a CTM (ids as in the
    corpus): each word's start as espeak-ng speaks it plus the utterance's leading silence, lasting
    to the next word's start (the last to the end of the speech). Returns the number of utterances."""
    check_espeak()
    used_ids: set[str] = set()
    plans = {lang: plan_language(lang, cfg.size, cfg.seed, used_ids) for lang in LANG_NAMES}
    jobs = [j for lang in cfg.langs
            for j in synth_jobs(lang, sorted((u for u in plans[lang] if u.split == split), key=lambda u: u.utt), cfg.seed)]
    lines = []
    # one fresh process per utterance (see _Espeak)
    with multiprocessing.get_context("fork").Pool(max(1, cfg.nj), maxtasksperchild=1) as pool:
        for utt, words, speech, lead in pool.imap(_word_starts, jobs):
            for k, (w, s) in enumerate(words):
                end = words[k + 1][1] if k + 1 < len(words) else speech
                lines.append(f"{utt} 1 {lead + s:.3f} {max(end - s, 0.001):.3f} {w} 1.000\n")
    n = len(jobs)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text("".join(lines), encoding="utf-8")
    tmp.replace(out)
    return n


def opus_compression_level(kbps: float) -> float:
    # libsndfile maps compression_level 0..1 linearly onto the Opus bitrate 256..6 kbit/s per channel.
    return float(min(1.0, max(0.0, (256.0 - kbps) / 250.0)))


def write_language(lang: str, utts: list[Utt], dest: Path, bitrate_kbps: float, nj: int,
                   seed: int, is_pool: bool = False) -> dict[str, float]:
    """Synthesise and write one ``mls_<language>_opus`` tree under ``dest`` (a fresh directory)."""
    lex = load_lexicon(lang)
    level = opus_compression_level(bitrate_kbps)
    jobs = synth_jobs(lang, utts, seed)
    by_id = {u.utt: u for u in utts}
    durs: dict[str, float] = {}
    ctx = multiprocessing.get_context("fork")
    pool = ctx.Pool(nj) if nj > 1 else None
    try:
        results = pool.imap(synthesize, jobs, chunksize=4) if pool else map(synthesize, jobs)
        for wav, utt in results:
            u = by_id[utt]
            path = dest / u.split / "audio" / u.spk.spk / u.book / f"{utt}.opus"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, wav, SAMPLE_RATE, format="OGG", subtype="OPUS", compression_level=level)
            durs[utt] = len(wav) / SAMPLE_RATE
    finally:
        if pool:
            pool.close()
            pool.join()

    for split in ("train", "dev", "test"):
        rows = sorted((u for u in utts if u.split == split), key=lambda u: u.utt)
        if not rows:  # the pool: train only
            continue
        (dest / split).mkdir(parents=True, exist_ok=True)
        (dest / split / "transcripts.txt").write_text(
            "".join(f"{u.utt}\t{u.text}\n" for u in rows), encoding="utf-8")
        # segments.txt in MLS: <id> <source mp3 url> <start> <end>; our source is the synthesiser.
        (dest / split / "segments.txt").write_text("".join(
            f"{u.utt}\tespeak-ng:{lex.voice}+{u.spk.variant}?pitch={u.spk.pitch}&speed={u.spk.speed}"
            f"\t0.00\t{durs[u.utt]:.2f}\n" for u in rows), encoding="utf-8")

    # Limited supervision: six disjoint 10-minute folds (1hr/0..5) and a disjoint 9hr list
    # (not for the pool, whose utterances are all unlabelled by purpose).
    rng = random.Random(f"limited/{seed}/{lang}")
    train_ids = [] if is_pool else sorted(u.utt for u in utts if u.split == "train")
    rng.shuffle(train_ids)
    fold = max(1, round(FOLD_FRACTION * len(train_ids)))
    nine = min(max(1, round(NINE_HR_FRACTION * len(train_ids))), len(train_ids) - 6 * fold)
    if train_ids and nine < 1:
        raise BuildError(f"{lang}: {len(train_ids)} train utterances are too few for the limited-supervision lists")
    ls = dest / "train" / "limited_supervision"
    for k in range(6 if train_ids else 0):
        (ls / "1hr" / str(k)).mkdir(parents=True, exist_ok=True)
        (ls / "1hr" / str(k) / "handles.txt").write_text(
            "".join(f"{i}\n" for i in sorted(train_ids[k * fold:(k + 1) * fold])), encoding="utf-8")
    if train_ids:
        (ls / "9hr").mkdir(parents=True, exist_ok=True)
        (ls / "9hr" / "handles.txt").write_text(
            "".join(f"{i}\n" for i in sorted(train_ids[6 * fold:6 * fold + nine])), encoding="utf-8")

    # metainfo.txt: SPEAKER | GENDER | PARTITION | MINUTES | BOOK ID | TITLE | CHAPTER
    minutes: dict[tuple[str, str, str], float] = {}
    for u in utts:
        key = (u.spk.spk, u.book, u.split)
        minutes[key] = minutes.get(key, 0.0) + durs[u.utt] / 60
    gender = {u.spk.spk: u.spk.gender for u in utts}
    lines = [" SPEAKER   |   GENDER   | PARTITION  |  MINUTES   |  BOOK ID   |   TITLE   |   CHAPTER   "]
    for (spk, book, split), mins in sorted(minutes.items(), key=lambda kv: (int(kv[0][0]), int(kv[0][1]))):
        lines.append(f"{spk:>9}  |  {gender[spk]:^8}  |  {split:^8}  |  {mins:>8.3f}  |  {book:>8}  |"
                     f"  mini-MLS {lang} book {book}  |  synthetic")
    (dest / "metainfo.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return durs


@dataclasses.dataclass
class BuildConfig:
    """What to synthesise and where (see main() for the meaning of each option)."""

    out: str
    langs: Sequence[str] = tuple(LANG_NAMES)
    size: str = "mini"
    seed: int = 0
    bitrate_kbps: float = 12.0
    nj: int = 1
    force: bool = False


def build(cfg: BuildConfig) -> dict[str, dict[str, float]]:
    """Build every language of ``cfg.langs`` under ``cfg.out``; returns {lang: {utt: seconds}}."""
    out, langs, size, seed = Path(cfg.out), list(cfg.langs), cfg.size, cfg.seed
    if size not in SIZES and size not in ("pool", "lm"):
        raise BuildError(f"unknown --size {size!r}; choose from {sorted(SIZES) + ['pool', 'lm']}")
    bad = [l for l in langs if l not in LANG_NAMES]
    if bad:
        raise BuildError(f"unknown language(s) {bad}; choose from {list(LANG_NAMES)}")
    if size == "lm":  # text only: no espeak-ng needed
        out.mkdir(parents=True, exist_ok=True)
        for lang in langs:
            write_lm_text(lang, out, seed, cfg.force)
        return {}
    check_espeak()
    out.mkdir(parents=True, exist_ok=True)
    used_ids: set[str] = set()
    if size == "pool":
        minis = {lang: plan_language(lang, "mini", seed, used_ids) for lang in LANG_NAMES}
        plans = {lang: plan_pool(lang, seed, used_ids, minis[lang]) for lang in LANG_NAMES}
    else:
        plans = {lang: plan_language(lang, size, seed, used_ids) for lang in LANG_NAMES}  # all: ids stable
    summary = {}
    for lang in langs:
        final = out / f"mls_{LANG_NAMES[lang]}_opus"
        if final.exists() and not cfg.force:
            raise BuildError(f"{final} exists; pass --force to rebuild it")
        tmp = out / f".{final.name}.building"
        shutil.rmtree(tmp, ignore_errors=True)
        t0 = time.time()
        summary[lang] = write_language(lang, plans[lang], tmp, cfg.bitrate_kbps, cfg.nj, seed, is_pool=size == "pool")
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        print(f"{lang}: {len(plans[lang])} utts, {sum(summary[lang].values()) / 60:.1f} min "
              f"in {time.time() - t0:.1f} s -> {final}", file=sys.stderr)
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=HERE / "corpus", help="corpus root (mls_<language>_opus/ below it)")
    p.add_argument("--size", default="mini", choices=sorted(SIZES) + ["pool", "lm"],
                   help="utterance counts (see SIZES); pool = the unlabelled pool beside mini (see POOL_FACTOR); "
                   "lm = LM text (mls_lm_<language>/data.txt): the grammar's sentences but every dev/test one")
    p.add_argument("--langs", default=" ".join(LANG_NAMES), help="space-separated ISO codes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bitrate_kbps", type=float, default=12.0, help="Opus target bitrate")
    p.add_argument("--nj", type=int, default=1, help="parallel synthesis processes")
    p.add_argument("--force", action="store_true", help="replace languages that already exist")
    p.add_argument("--word_ctm", type=Path, default=None,
                   help="write only the true word timings of --split (a CTM) here; no audio is written")
    p.add_argument("--split", default="test", choices=("train", "dev", "test"), help="the split of --word_ctm")
    args = p.parse_args(argv)
    try:
        if args.word_ctm is not None:
            if args.size not in SIZES:
                raise BuildError(f"--word_ctm needs a corpus size of {sorted(SIZES)}, got {args.size!r}")
            cfg = from_dict(BuildConfig, {"out": str(args.out), "langs": args.langs.split(), "size": args.size,
                                          "seed": args.seed, "nj": max(1, args.nj)})
            n = word_ctm(cfg, args.split, args.word_ctm)
            print(f"{n} utterances' word timings -> {args.word_ctm}", file=sys.stderr)
            return 0
        build(from_dict(BuildConfig, {"out": str(args.out), "langs": args.langs.split(), "size": args.size,
                                      "seed": args.seed, "bitrate_kbps": args.bitrate_kbps,
                                      "nj": max(1, args.nj), "force": args.force}))
    except BuildError as e:
        print(f"build.py: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
