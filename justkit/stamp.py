"""Stage stamps: what a finished stage step was made from, so that a re-run with nothing changed skips it.

A step (resampling one data dir, its fbank, the CMVN stats, the tokenizer, the code-switch set) writes a
stamp (a small JSON file, atomically) only after it succeeded, and removes it before it changes any
output. The stamp records

- ``config``: the options that shape the outputs (flattened ``section.key`` -> value, JSON-normalised, so a
  tuple and a list are the same value) and justkit's version;
- ``inputs``: the sha256 of each input table (``wav.scp``, ``text``, ...: content, not mtime, so a table
  rewritten with the same rows by an earlier stage's re-run is the same input);
- ``listed``: for each scp, a digest of the size and mtime of every file its entries name (the audio of a
  ``wav.scp``, the ark shards of a ``feats.scp``): a replaced audio file is a changed input;
- ``outputs``: size and mtime of every output file and a digest of the listing of each output tree
  (``data/``: the FLACs or ark shards), so that a removed or rewritten output is found.

:func:`check` answers ``None`` (up to date: skip) or the first reason to redo, naming what changed
(``config fbank.num_mel_bins: 80 -> 40``, ``input data/x/wav.scp changed``, ``output feats.scp missing``).
Cost: reading the input tables once and one ``stat`` per listed file (the full MLS train set: ~10 M
files; the stage itself opens each of them).
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from justkit import __version__
from justkit.errors import JustkitError
from justkit.fileio import atomic_write_text, is_pipe

STAMP_VERSION = 1


class StampError(JustkitError):
    """A stamp that cannot be read or written (not a reason to redo: that is ``check``'s answer)."""


def stamp_path(output: str | os.PathLike, directory: bool = True) -> Path:
    """Where the stamp of ``output`` lives: ``<dir>/.stamp.json`` for an output directory,
    ``<parent>/.<name>.stamp.json`` for an output file (hidden: stage copies and tree listings skip it)."""
    p = Path(output)
    return p / ".stamp.json" if directory else p.parent / f".{p.name}.stamp.json"


def _normalise(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def flatten(cfg: Mapping[str, Any], prefix: str = "") -> Dict[str, Any]:
    """``{"fbank": {"dim": 80}}`` -> ``{"fbank.dim": 80}`` (lists stay values), JSON-normalised."""
    out: Dict[str, Any] = {}
    for k, v in cfg.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        else:
            out[key] = _normalise(v)
    return out


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def dir_inputs(d: str | os.PathLike) -> List[str]:
    """The top-level files of a data dir (``wav.scp``, ``text``, ...; hidden files skipped), sorted."""
    d = Path(d)
    if not d.is_dir():
        raise StampError(f"{d}: input data dir not found")
    return sorted(str(p) for p in d.iterdir() if p.is_file() and not p.name.startswith("."))


def listed_files(scp: str | os.PathLike) -> List[str]:
    """The files an scp's entries name, once each, in order: ``wav.scp`` paths, the ark of
    ``feats.scp``'s ``ark:offset`` (pipes are not files: the scp's own content covers them)."""
    from justkit.datadir.tables import iter_table

    seen: Dict[str, None] = {}
    for t in iter_table(scp):
        v = t.value
        if is_pipe(v):
            continue
        if Path(scp).name == "feats.scp" or (":" in v and v.rsplit(":", 1)[1].isdigit()):
            v = v.rsplit(":", 1)[0]
        seen.setdefault(v, None)
    return list(seen)


def _stat_row(path: str) -> str:
    try:
        st = os.stat(path)
        return f"{path}\t{st.st_size}\t{st.st_mtime_ns}\n"
    except OSError:
        return f"{path}\tmissing\n"


def files_digest(paths: Iterable[str]) -> Tuple[int, str]:
    """(number of files, sha256 over each one's path, size and mtime; a missing one counts as missing)."""
    h = hashlib.sha256()
    n = 0
    for p in paths:
        h.update(_stat_row(p).encode("utf-8"))
        n += 1
    return n, h.hexdigest()


def tree_files(root: Path) -> List[str]:
    """Every file under ``root`` (hidden files and directories, i.e. temporary ones, skipped), sorted."""
    out = []
    for d, dirs, files in os.walk(root):
        dirs[:] = sorted(x for x in dirs if not x.startswith("."))
        out.extend(os.path.join(d, f) for f in files if not f.startswith("."))
    return sorted(out)


def fingerprint(config: Mapping[str, Any], inputs: Sequence[str] = (), listed: Sequence[str] = ()) -> dict:
    """What the outputs are made from: the flattened config (with justkit's version), the input
    tables' content hashes and, for each scp in ``listed``, the digest of the files it names."""
    missing = [p for p in list(inputs) + list(listed) if not os.path.isfile(p)]
    if missing:
        raise StampError(f"{missing[0]}: input file not found")
    return {"config": {"justkit": __version__, **flatten(config)},
            "inputs": {str(p): file_sha256(p) for p in inputs},
            "listed": {str(s): list(files_digest(listed_files(s))) for s in listed}}


def output_record(outputs: Sequence[str] = (), trees: Sequence[str] = ()) -> dict:
    """Size and mtime of each output file, and (number, digest) of each output tree's files."""
    files = {}
    for p in outputs:
        try:
            st = os.stat(p)
        except OSError:
            raise StampError(f"{p}: output not found after the step finished") from None
        files[str(p)] = [st.st_size, st.st_mtime_ns]
    return {"files": files, "trees": {str(t): list(files_digest(tree_files(Path(t)))) for t in trees}}


def read(path: str | os.PathLike) -> Optional[dict]:
    """The stamp at ``path``, or None when there is none (or it is not one of this version)."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return None  # a torn or foreign file: redo (the stamp is only ever written whole)
    return data if isinstance(data, dict) and data.get("version") == STAMP_VERSION else None


def _fmt(v: Any) -> str:
    return "(unset)" if v is None else json.dumps(v)


def differences(old: dict, new: dict) -> List[str]:
    """What differs between two fingerprints, one phrase each (config keys with old -> new values)."""
    out = []
    oc, nc = old.get("config", {}), new["config"]
    for k in sorted(set(oc) | set(nc)):
        if oc.get(k) != nc.get(k):
            out.append(f"config {k}: {_fmt(oc.get(k))} -> {_fmt(nc.get(k))}")
    oi, ni = old.get("inputs", {}), new["inputs"]
    for p in sorted(set(oi) | set(ni)):
        if p not in oi:
            out.append(f"input {p} is new (made from {', '.join(sorted(oi)) or 'nothing listed'})")
        elif p not in ni:
            out.append(f"input {p} is gone")
        elif oi[p] != ni[p]:
            out.append(f"input {p} changed")
    ol, nl = old.get("listed", {}), new["listed"]
    for s in sorted(set(ol) | set(nl)):
        if s in nl and s in ol and ol[s] != nl[s]:
            out.append(f"files listed in {s} changed ({nl[s][0]} files; was {ol[s][0]})")
        elif s in nl and s not in ol:
            out.append(f"files listed in {s} not recorded")
    return out


def _outputs_changed(rec: dict) -> Optional[str]:
    for p, (size, mtime) in rec.get("files", {}).items():
        try:
            st = os.stat(p)
        except OSError:
            return f"output {p} is missing"
        if (st.st_size, st.st_mtime_ns) != (size, mtime):
            return f"output {p} changed since the step finished"
    for t, (n, digest) in rec.get("trees", {}).items():
        now_n, now = files_digest(tree_files(Path(t)))
        if now != digest:
            return f"output files under {t} changed ({now_n} files; {n} when the step finished)"
    return None


def check(stamp: str | os.PathLike, fp: dict) -> Optional[str]:
    """None when the stamp at ``stamp`` records fingerprint ``fp`` and its outputs are all there as
    written (the step can be skipped); else the reason to redo it, in words."""
    old = read(stamp)
    if old is None:
        return "no record of a finished run (first run, or the last one did not finish)"
    diff = differences(old, fp)
    if diff:
        more = f" (and {len(diff) - 1} more)" if len(diff) > 1 else ""
        return "; ".join(diff[:4]) + (more if len(diff) > 4 else "")
    return _outputs_changed(old.get("outputs", {}))


def clear(stamp: str | os.PathLike) -> None:
    """Remove the stamp (before a step changes its outputs: an interrupted step leaves none)."""
    try:
        os.unlink(stamp)
    except FileNotFoundError:
        pass


def write(stamp: str | os.PathLike, what: str, fp: dict, outputs: Sequence[str] = (), trees: Sequence[str] = (),
          counts: Optional[Mapping[str, Any]] = None) -> dict:
    """Record that ``what`` finished with fingerprint ``fp`` (taken before it ran) and these outputs."""
    rec = {"version": STAMP_VERSION, "what": what, "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
           **fp, "outputs": output_record(outputs, trees), "counts": dict(counts or {})}
    try:
        atomic_write_text(stamp, json.dumps(rec, indent=1) + "\n")
    except OSError as e:
        raise StampError(f"{stamp}: cannot write the stage stamp: {e}") from None
    return rec


def summary(stamp: str | os.PathLike) -> str:
    """``finished <time>: utterances 900, bad 2`` from a stamp's record (for the skip message)."""
    rec = read(stamp) or {}
    counts = ", ".join(f"{k} {v}" for k, v in rec.get("counts", {}).items())
    return f"finished {rec.get('finished', '?')}" + (f": {counts}" if counts else "")


def up_to_date(stamp: str | os.PathLike, fp: dict, what: str, out: str | os.PathLike, log) -> bool:
    """For a Python step: True (and ``<what>: <out>: up to date ...: skipped`` logged) when it can be
    skipped; else the reason to make it is logged, the stamp removed, and False returned."""
    why = check(stamp, fp)
    if why is None:
        log.info("%s: %s: up to date (same inputs and config; %s): skipped", what, out, summary(stamp))
        return True
    log.info("%s: %s: making it: %s", what, out, why)
    clear(stamp)
    return False
