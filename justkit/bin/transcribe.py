"""Transcribe audio files with a trained model: any format and sample rate soundfile reads.

Inputs are audio files, directories (searched recursively for audio files) or a Kaldi
wav.scp; output is one `<id><TAB><text>` line each (the id: the wav.scp key, or the file
name without its extension), optionally a CTM of words (or word pieces) with start, duration and
confidence, from the CTC head's forced alignment where the model has one, else the transducer's
(justkit.decode.align; any search).
``--backend onnx`` runs the model's ONNX export (``<model_dir>/onnx``, packed with ``--onnx``)
under ONNX Runtime instead of PyTorch: same front end, text and formats; greedy search on the
CPU only, and CTM times from the frames the search emitted the pieces on (it cannot align).
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
    p.add_argument("--ctm", default="", help="write a CTM here: <id> 1 <start> <dur> <word> <confidence> per word")
    p.add_argument("--ctm_unit", default="word", choices=("word", "piece"), help="CTM lines per word or per word piece")
    p.add_argument("--timing", default="auto", choices=("auto", "ctc", "transducer"),
                   help="where CTM times come from: the CTC head's forced alignment, the transducer lattice's "
                   "Viterbi path, or auto (CTC where the model has the head); --backend onnx: auto only")
    p.add_argument("--backend", default="torch", choices=("torch", "onnx"),
                   help="torch: the PyTorch model; onnx: <model_dir>/onnx under ONNX Runtime (greedy, CPU)")
    p.add_argument("--num_threads", type=int, default=0,
                   help="CPU threads of the backend (torch.set_num_threads or ONNX Runtime's intra-op threads); "
                   "0: the library's own choice")
    p.add_argument("--method", default="greedy", choices=("greedy", "beam"), help="search")
    p.add_argument("--beam_size", type=int, default=4, help="beam search width")
    p.add_argument("--lm_dir", default="", help="an LM (exp/lm_<tag>) for beam search (default: the packed model's lm/, if any)")
    p.add_argument("--lm_weight", type=float, default=None, help="its shallow-fusion weight (default: the packed one, else 0)")
    p.add_argument("--ilm_weight", type=float, default=None, help="internal-LM subtraction weight (default: the packed one, else 0)")
    p.add_argument("--batch_size", type=int, default=8, help="utterances (or pieces of long ones) decoded together")
    p.add_argument("--max_segment_seconds", type=float, default=30.0,
                   help="longer audio is decoded in pieces of at most this length, each cut at a quiet frame, and "
                   "stitched (memory then stays bounded whatever the file's length); 0: never split")
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


def check_outputs(a, items: List[Tuple[str, str]]) -> None:
    """Before anything is decoded: ``--out``/``--ctm`` must be writable and none of them may be an
    input of the same run (an audio file, the wav.scp, or each other); a device such as
    /dev/stdout or /dev/null is written in place."""
    from justkit.fileio import OutputError, check_writable, same_file

    outs = [(n, v) for n, v in (("--out", a.out), ("--ctm", a.ctm)) if v]
    inputs = [("--wav_scp", a.wav_scp)] if a.wav_scp else []
    inputs += [(f"utterance {u}", pth) for u, pth in items]
    for name, out in outs:
        if Path(out).exists() and not Path(out).is_file() and not Path(out).is_dir():
            continue  # a device or FIFO
        for what, src in inputs:
            if same_file(out, src):
                raise OutputError(f"{name} {out} is also an input ({what}: {src}); it would be overwritten")
        check_writable(out, name)
    if len(outs) == 2 and (outs[0][1] == outs[1][1] or same_file(outs[0][1], outs[1][1])):
        raise OutputError(f"--out and --ctm name the same file {a.out}")


@cli.command
def main(argv: Optional[Sequence[str]] = None) -> int:
    p = build_parser()
    a, _ = p.parse(argv)
    from justkit.decode.align import ctm_lines
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
    if a.max_segment_seconds < 0:
        p.error("--max_segment_seconds must be >= 0")
    if a.num_threads < 0:
        p.error("--num_threads must be >= 0")
    if a.backend == "onnx":
        refused = [f"--{k} {v}" for k, v, ok in (("method", a.method, a.method == "greedy"),
                                                  ("device", a.device, a.device == "cpu"),
                                                  ("lm_dir", a.lm_dir, not a.lm_dir),
                                                  ("lm_weight", a.lm_weight, a.lm_weight is None),
                                                  ("ilm_weight", a.ilm_weight, a.ilm_weight is None),
                                                  ("timing", a.timing, a.timing == "auto")) if not ok]
        if refused:
            raise JustkitError(f"--backend onnx runs greedy search on the CPU without an LM or an alignment; "
                               f"{', '.join(refused)} needs --backend torch")
    cli.check_device(a.device)
    items = collect(a.inputs, a.wav_scp)
    check_outputs(a, items)
    if a.backend == "onnx":
        from justkit.models.onnx import OnnxTransducer

        s2t = OnnxTransducer.from_dir(a.model_dir, threads=a.num_threads, max_segment_s=a.max_segment_seconds,
                                      batch_size=a.batch_size, timing="auto" if a.ctm else "off")
    else:
        if a.num_threads:
            import torch

            torch.set_num_threads(a.num_threads)
        s2t = Speech2Text.from_dir(a.model_dir, a.device, a.method, a.beam_size, lm_dir=a.lm_dir or None,
                                   lm_weight=a.lm_weight, ilm_weight=a.ilm_weight,
                                   max_segment_s=a.max_segment_seconds, batch_size=a.batch_size,
                                   timing=a.timing if a.ctm else "off")
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
            try:  # one bad file (unreadable, too short for one frame) is named; the others go on
                x, sr = load_audio(path, utt)
                feats = s2t.features(x, sr, utt)
            except JustkitError as e:
                log.error("%s", e if str(path) in str(e) else f"{path}: {e}")
                failed += 1
                continue
            chunk.append((utt, feats, len(x) / sr))
            audio_s += len(x) / sr
        if not chunk:
            continue
        results = s2t.transcribe_features([f for _, f, _ in chunk], [u for u, _, _ in chunk])
        for (utt, _, dur), r in zip(chunk, results):
            lines.append(f"{utt}\t{r.text}")
            ctm += ctm_lines(utt, r.words if a.ctm_unit == "word" else r.spans)
    text = "".join(line + "\n" for line in lines)
    if a.out:
        atomic_write_text(a.out, text)
    else:
        sys.stdout.write(text)
    if a.ctm:
        atomic_write_text(a.ctm, "".join(c + "\n" for c in ctm))
    el = time.perf_counter() - t0
    rtf = f"RTF {el / audio_s:.4f}, " if audio_s > 0 else ""
    where = "onnxruntime, cpu" if a.backend == "onnx" else a.device
    log.info("%d utterance(s), %.1f s of audio in %.2f s (%s%s search, %s)%s", len(lines), audio_s, el,
             rtf, a.method, where, f"; {failed} unreadable" if failed else "")
    return cli.EXIT_USER_ERROR if failed else 0


if __name__ == "__main__":
    sys.exit(main())
