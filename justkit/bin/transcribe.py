"""Transcribe audio files with a trained model: any format and sample rate soundfile reads.

Inputs are audio files, directories (searched recursively for audio files) or a Kaldi
wav.scp; output is one `<id><TAB><text>` line each (the id: the wav.scp key, or the file
name without its extension), optionally a CTM of word-piece start times (greedy search).
"""
from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from justkit import cli

log = logging.getLogger("justkit.bin.transcribe")
PROG = "python -m justkit.bin.transcribe"
AUDIO_EXTS = (".wav", ".flac", ".ogg", ".opus", ".mp3", ".aif", ".aiff", ".au", ".sph", ".w64")


def build_parser() -> cli.Parser:
    p = cli.Parser(PROG, __doc__, usage=f"{PROG} --model_dir DIR [options] [AUDIO_OR_DIR ...]")
    p.add_argument("inputs", nargs="*", help="audio files and/or directories")
    p.add_argument("--model_dir", required=True, help="a packed model directory (exp/<tag>/model) or exp/<tag>")
    p.add_argument("--wav_scp", default="", help="a Kaldi wav.scp (<id> <audio path>) to transcribe too")
    p.add_argument("--out", default="", help="write <id><TAB><text> lines here (default: stdout)")
    p.add_argument("--ctm", default="", help="write word-piece start times here (<id> 1 <start> <dur> <piece>; greedy only)")
    p.add_argument("--method", default="greedy", choices=("greedy", "beam"), help="search")
    p.add_argument("--beam_size", type=int, default=4, help="beam search width")
    p.add_argument("--lm_dir", default="", help="an LM (exp/lm_<tag>) for beam search (default: the packed model's lm/, if any)")
    p.add_argument("--lm_weight", type=float, default=None, help="its shallow-fusion weight (default: the packed one, else 0)")
    p.add_argument("--ilm_weight", type=float, default=None, help="internal-LM subtraction weight (default: the packed one, else 0)")
    p.add_argument("--batch_size", type=int, default=8, help="utterances decoded together")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    return p


def collect(inputs: Sequence[str], wav_scp: str) -> List[Tuple[str, str]]:
    """(id, path) of every input, in order; a directory contributes its audio files sorted."""
    from justkit.datadir.tables import read_table
    from justkit.frontend.audio import AudioError

    items: List[Tuple[str, str]] = []
    for s in inputs:
        p = Path(s)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in AUDIO_EXTS)
            if not found:
                log.warning("%s: no audio files (%s) below it", p, " ".join(AUDIO_EXTS))
            items += [(f.stem, str(f)) for f in found]
        elif p.exists():
            items.append((p.stem, str(p)))
        else:
            raise AudioError(p, None, "file not found")
    if wav_scp:
        items += list(read_table(wav_scp).items())
    seen: dict = {}
    for utt, path in items:
        if utt in seen and seen[utt] != path:
            raise AudioError(path, utt, f"the id {utt} is also that of {seen[utt]}; ids must be unique")
        seen[utt] = path
    return items


@cli.command
def main(argv: Optional[Sequence[str]] = None) -> int:
    p = build_parser()
    a, _ = p.parse(argv)
    from justkit.decode.transcribe import Speech2Text
    from justkit.errors import JustkitError
    from justkit.fileio import atomic_write_text, is_pipe
    from justkit.frontend.audio import load_audio
    from justkit.log import setup_logging

    setup_logging()
    if not a.inputs and not a.wav_scp:
        p.error("give audio files, directories or --wav_scp")
    if a.batch_size < 1:
        p.error("--batch_size must be >= 1")
    items = collect(a.inputs, a.wav_scp)
    s2t = Speech2Text.from_dir(a.model_dir, a.device, a.method, a.beam_size, a.lm_dir or None,
                               a.lm_weight, a.ilm_weight)
    lines: List[str] = []
    ctm: List[str] = []
    failed = 0
    audio_s = 0.0
    t0 = time.perf_counter()
    for i in range(0, len(items), a.batch_size):
        chunk = []
        for utt, path in items[i : i + a.batch_size]:
            if is_pipe(path):
                log.error("%s: utterance %s: piped commands are not read; give a file path", path, utt)
                failed += 1
                continue
            try:
                x, sr = load_audio(path, utt)
            except JustkitError as e:
                log.error("%s", e)
                failed += 1
                continue
            chunk.append((utt, x, sr))
            audio_s += len(x) / sr
        if not chunk:
            continue
        results = s2t.transcribe([(x, sr) for _, x, sr in chunk], [u for u, _, _ in chunk])
        for (utt, x, sr), r in zip(chunk, results):
            lines.append(f"{utt}\t{r.text}")
            for k, (piece, start) in enumerate(zip(r.pieces, r.times)):
                end = r.times[k + 1] if k + 1 < len(r.times) else len(x) / sr
                ctm.append(f"{utt} 1 {start:.2f} {max(end - start, 0.01):.2f} {piece}")
    text = "".join(line + "\n" for line in lines)
    if a.out:
        atomic_write_text(a.out, text)
    else:
        sys.stdout.write(text)
    if a.ctm:
        if a.method != "greedy":
            log.warning("--ctm: times come from greedy search only; none written for --method %s", a.method)
        atomic_write_text(a.ctm, "".join(c + "\n" for c in ctm))
    el = time.perf_counter() - t0
    rtf = f"RTF {el / audio_s:.4f}, " if audio_s > 0 else ""
    log.info("%d utterance(s), %.1f s of audio in %.2f s (%s%s search, %s)%s", len(lines), audio_s, el,
             rtf, a.method, a.device, f"; {failed} unreadable" if failed else "")
    return cli.EXIT_USER_ERROR if failed else 0


if __name__ == "__main__":
    sys.exit(main())
