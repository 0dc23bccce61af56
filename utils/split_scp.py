#!/usr/bin/env python3
"""Split an scp (or any table) into N contiguous, balanced parts: split_scp.py [--utt2spk F] in.scp out.1.scp ... out.N.scp."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # justkit from this checkout

from justkit.fileio import atomic_open  # noqa: E402


class SplitError(ValueError):
    """The input cannot be split as asked; the message names the file and line."""


def _lines(path: str) -> list[bytes]:
    # Bytes, not text: an scp is passed through unchanged whatever its encoding.
    data = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    return [ln for ln in data.split(b"\n") if ln.strip()]


def check_unique(path: str, lines: list[bytes]) -> None:
    """Every id once: a repeated one is named here, at its line of the input, rather than by a job at
    a line of its part (split/wav.1.scp:5), which the user never wrote."""
    seen: dict[bytes, int] = {}
    data = None
    for i, ln in enumerate(lines):
        key = ln.split(maxsplit=1)[0]
        if key in seen:
            if data is None and path != "-":  # line numbers of the file, blank lines counted
                data = [j for j, raw in enumerate(Path(path).read_bytes().split(b"\n"), 1) if raw.strip()]
            at = (lambda k: data[k] if data else k + 1)
            raise SplitError(f"{path}:{at(i)}: id {key.decode(errors='replace')} given twice (first on line "
                             f"{at(seen[key])}); ids must be unique")
        seen[key] = i


def split_counts(n_lines: int, n_parts: int) -> list[int]:
    """Kaldi's split: every part gets n_lines // n_parts lines, the first (n_lines % n_parts) one more."""
    base, extra = divmod(n_lines, n_parts)
    return [base + (i < extra) for i in range(n_parts)]


def speaker_groups(lines: list[bytes], utt2spk: dict[bytes, bytes], scp: str, utt2spk_path: str) -> list[int]:
    """Sizes of the runs of consecutive lines that share a speaker; a speaker may form one run only."""
    sizes: list[int] = []
    seen: set[bytes] = set()
    prev = None
    for i, ln in enumerate(lines, 1):
        utt = ln.split()[0]
        if utt not in utt2spk:
            raise SplitError(f"{scp}:{i}: id {utt.decode(errors='replace')} not in {utt2spk_path}")
        spk = utt2spk[utt]
        if spk != prev:
            if spk in seen:
                raise SplitError(
                    f"{scp}:{i}: lines of speaker {spk.decode(errors='replace')} are not contiguous; "
                    "sort the file (speaker ids should prefix utterance ids)"
                )
            seen.add(spk)
            sizes.append(0)
            prev = spk
        sizes[-1] += 1
    return sizes


def balance_groups(sizes: list[int], n_parts: int) -> list[int]:
    """Cut the run of groups into n_parts contiguous parts of near-equal line counts; returns groups per part."""
    total = sum(sizes)
    cum = [0]
    for s in sizes:
        cum.append(cum[-1] + s)
    cuts = [0]
    for k in range(1, n_parts):
        lo, hi = cuts[-1] + 1, len(sizes) - (n_parts - k)  # every part keeps at least one group
        target = k * total / n_parts
        cuts.append(min(range(lo, hi + 1), key=lambda b: (abs(cum[b] - target), b)))
    cuts.append(len(sizes))
    return [cuts[i + 1] - cuts[i] for i in range(n_parts)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="utils/split_scp.py", description=__doc__,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter, allow_abbrev=False)
    p.add_argument("--utt2spk", help="keep each speaker's lines in one output (lines must be grouped by speaker)")
    p.add_argument("scp", help="input table ('-' for stdin)")
    p.add_argument("outs", nargs="+", help="output files, one per part")
    a = p.parse_args(argv)
    try:
        lines = _lines(a.scp)
        check_unique(a.scp, lines)
        n = len(a.outs)
        if a.utt2spk:
            u2s = {}
            for ln in _lines(a.utt2spk):
                f = ln.split()
                if len(f) < 2:
                    raise SplitError(f"{a.utt2spk}: id {f[0].decode(errors='replace')}: no speaker")
                u2s[f[0]] = f[1]
            sizes = speaker_groups(lines, u2s, a.scp, a.utt2spk)
            if n > len(sizes):
                raise SplitError(f"{a.scp}: cannot split {len(sizes)} speakers into {n} parts")
            per_part = balance_groups(sizes, n)
            counts, g = [], 0
            for k in per_part:
                counts.append(sum(sizes[g:g + k]))
                g += k
        else:
            if n > len(lines):
                raise SplitError(f"{a.scp}: cannot split {len(lines)} lines into {n} parts")
            counts = split_counts(len(lines), n)
    except (SplitError, OSError) as e:
        print(f"split_scp.py: {e}", file=sys.stderr)
        return 2
    start = 0
    for out, c in zip(a.outs, counts):
        with atomic_open(out, "wb", encoding=None) as f:
            f.writelines(ln + b"\n" for ln in lines[start:start + c])
        start += c
    return 0


if __name__ == "__main__":
    sys.exit(main())
