#!/usr/bin/env python3
"""Stage 1 for a corpus in the template's TSV layout: <corpus_root>/<lang>/<split>.tsv -> data/<split>_<lang>/.

Each line of ``<split>.tsv`` (split: train, dev, test) is

    <utterance id> TAB <speaker id> TAB <audio file> TAB <transcript>

with the audio path absolute or relative to the .tsv's directory (any format soundfile
reads: flac, wav, ogg/opus, ...). Lines starting with ``#`` are skipped. Writes wav.scp,
text, utt2spk, spk2utt, utt2lang, utt2dur; ids become ``<lang>_<speaker>_<utt>`` and
speakers ``<lang>_<speaker>`` so that every language's ids are distinct and utterances
sort with their speakers. A bad line or unreadable audio stops with the file, line and id.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import soundfile as sf

from justkit.datadir.tables import DataDirError, utt2spk_to_spk2utt, write_table
from justkit.text.normalize import normalize

SPLITS = ("train", "dev", "test")


def prepare(tsv: Path, lang: str, out: Path) -> int:
    tables = {k: {} for k in ("wav.scp", "text", "utt2spk", "utt2lang", "utt2dur")}
    for lineno, line in enumerate(tsv.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        cols = line.split("\t")
        if len(cols) != 4 or not all(c.strip() for c in cols):
            raise DataDirError(f"{tsv}:{lineno}: expected 4 non-empty tab-separated columns "
                               f"(utt, speaker, audio, transcript), got {len(cols)}")
        utt, spk, audio, text = (c.strip() for c in cols)
        if "_" in spk or " " in spk or " " in utt:
            raise DataDirError(f"{tsv}:{lineno}: id {utt}: speaker/utterance ids may not contain "
                               f"spaces, speaker ids no '_' (keeps utt and speaker sort orders equal)")
        if not normalize(text, lang):
            raise DataDirError(f"{tsv}:{lineno}: id {utt}: transcript {text!r} has no word left after "
                               "normalisation (punctuation or symbols only)")
        path = Path(audio) if Path(audio).is_absolute() else (tsv.parent / audio).resolve()
        try:
            dur = sf.info(str(path)).duration
        except (RuntimeError, sf.LibsndfileError) as e:
            raise DataDirError(f"{tsv}:{lineno}: id {utt}: cannot read audio {path}: {e}") from None
        key = f"{lang}_{spk}_{utt}"
        if key in tables["wav.scp"]:
            raise DataDirError(f"{tsv}:{lineno}: id {utt}: duplicated")
        tables["wav.scp"][key] = str(path)
        tables["text"][key] = text
        tables["utt2spk"][key] = f"{lang}_{spk}"
        tables["utt2lang"][key] = lang
        tables["utt2dur"][key] = f"{dur:.3f}"
    if not tables["wav.scp"]:
        raise DataDirError(f"{tsv}: no utterances")
    for name, t in tables.items():
        write_table(out / name, t)
    write_table(out / "spk2utt", utt2spk_to_spk2utt(tables["utt2spk"]))
    return len(tables["wav.scp"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--langs", required=True, help="space-separated ISO codes (subdirs of corpus_root)")
    p.add_argument("corpus_root")
    p.add_argument("data")
    a = p.parse_args(argv)
    try:
        for lang in a.langs.split():
            for split in SPLITS:
                tsv = Path(a.corpus_root) / lang / f"{split}.tsv"
                if not tsv.is_file():
                    raise DataDirError(f"{tsv}: not found (the template layout needs train, dev and test)")
                n = prepare(tsv, lang, Path(a.data) / f"{split}_{lang}")
                print(f"prepare_tsv.py: {tsv} -> {a.data}/{split}_{lang}: {n} utterances")
    except DataDirError as e:
        print(f"prepare_tsv.py: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
