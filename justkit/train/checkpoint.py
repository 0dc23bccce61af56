"""Training checkpoints: atomic save, keep-last-K, resume from the newest readable file, averaging."""
from __future__ import annotations

import csv
import logging
import random
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from justkit.errors import JustkitError
from justkit.fileio import atomic_torch_save
from justkit.models.factory import REQUIRED_KEYS, CheckpointError, load_checkpoint  # noqa: F401 (re-exported)

logger = logging.getLogger(__name__)

CKPT_RE = re.compile(r"^ckpt-(\d+)\.pt$")
# How torch's zip writer reports a short write (a full disk, a file-size limit) as a RuntimeError
_WRITE_FAILURES = ("writ", "inline_container", "PytorchStreamWriter", "unexpected pos")


# ----------------------------------------------------------------------------- files


def checkpoint_path(ckpt_dir: str | Path, step: int) -> Path:
    """``<ckpt_dir>/ckpt-<step>.pt``."""
    return Path(ckpt_dir) / f"ckpt-{int(step)}.pt"


def list_checkpoints(ckpt_dir: str | Path) -> list[Path]:
    """The ``ckpt-<step>.pt`` files in ``ckpt_dir``, oldest (lowest step) first.

    Temporary files of an interrupted save (``.ckpt-N.pt.*.tmp``) never match.
    """
    d = Path(ckpt_dir)
    if not d.is_dir():
        return []
    found = []
    for p in d.iterdir():
        m = CKPT_RE.match(p.name)
        if m and p.is_file():
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


class CheckpointWriteError(JustkitError, OSError):
    """A checkpoint could not be written (disk full, quota, file-size limit); nothing was replaced."""


class CheckpointsUnreadable(CheckpointError):
    """Checkpoints exist but none can be resumed from; nothing is deleted or overwritten."""


UNREADABLE_DIR = "unreadable"  # <ckpt_dir>/unreadable/: checkpoints set aside, never deleted


def corruption(path: str | Path) -> str | None:
    """Why ``path`` is proven damaged (empty, cut short, a zip whose structure or CRCs are wrong),
    or None when that cannot be shown: a file that reads back as a sound zip but does not load
    (another torch version, a refused pickle) or one that cannot be read at all (EIO, ESTALE on
    NFS) may be fine, so it is never taken for corrupt."""
    import zipfile

    path = Path(path)
    try:
        if path.stat().st_size == 0:
            return "empty file (0 bytes)"
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except zipfile.BadZipFile as e:
        return f"truncated or corrupt ({e})"
    except (OSError, EOFError, RuntimeError, ValueError):
        return None  # an I/O error proves nothing about the bytes
    if bad is not None:
        return f"truncated or corrupt (CRC error in {bad})"
    return None


def set_aside(path: Path) -> Path:
    """Move an unreadable checkpoint into ``<ckpt_dir>/unreadable/`` (keeping it for inspection) so
    that neither resuming nor the keep-last cleanup sees it again. Returns the new path."""
    d = path.parent / UNREADABLE_DIR
    d.mkdir(exist_ok=True)
    dst = d / path.name
    k = 1
    while dst.exists():
        dst = d / f"{path.name}.{k}"
        k += 1
    path.rename(dst)
    return dst


def clean_stale_temp(ckpt_dir: str | Path) -> list[Path]:
    """Remove ``.ckpt-N.pt.*.tmp`` files that a save killed mid-write left behind (call it only
    while holding the experiment's lock: no other process is saving). Returns what was removed."""
    d = Path(ckpt_dir)
    if not d.is_dir():
        return []
    removed = []
    for p in d.iterdir():
        if p.name.startswith(".ckpt-") and p.name.endswith(".tmp") and p.is_file():
            try:
                p.unlink()
            except FileNotFoundError:
                continue
            removed.append(p)
    if removed:
        logger.info("%s: removed %d temporary file(s) of interrupted saves", d, len(removed))
    return removed


def load_latest_checkpoint(
    ckpt_dir: str | Path, map_location: str | torch.device = "cpu", restart: bool = False,
) -> tuple[dict, Path] | None:
    """Newest checkpoint in ``ckpt_dir`` that loads, or None when there is none (a fresh run).

    A newer checkpoint is passed over for an older one only when it is proven truncated or
    corrupt (:func:`corruption`); it is then moved to ``<ckpt_dir>/unreadable/``, not deleted.
    Any other load error (an I/O error on NFS, a torch upgrade, a refused pickle) raises
    CheckpointsUnreadable naming the file, as does a directory where no checkpoint loads
    (naming them all; nothing is moved): training must not silently start over.
    ``restart=True`` (``--train.restart true``) passes over any unreadable checkpoint and,
    when none loads, starts over (returns None); the unreadable ones are moved aside.
    Stale temporary files of interrupted saves are removed first.
    """
    clean_stale_temp(ckpt_dir)
    failed: list[tuple[Path, str]] = []
    for path in reversed(list_checkpoints(ckpt_dir)):
        try:
            obj = load_checkpoint(path, map_location)
            missing = [k for k in REQUIRED_KEYS if k not in obj]
            if missing:
                raise CheckpointError(f"{path}: incomplete training checkpoint, missing {missing}")
        except CheckpointError as e:
            why = corruption(path)
            if why is None and not restart:
                raise CheckpointsUnreadable(
                    f"{path}: cannot resume from it ({e}), and it is not proven corrupt, so training stops "
                    f"and nothing is deleted; fix the cause (an I/O error? another torch version?) and re-run, "
                    f"or pass --train.restart true to set it aside"
                ) from e
            logger.warning("checkpoint %s is unreadable: %s", path, why or e)
            failed.append((path, why or str(e)))
            continue
        _set_aside(failed)
        return obj, path
    if failed and not restart:
        raise CheckpointsUnreadable(
            f"{ckpt_dir}: checkpoints exist but none loads ({'; '.join(f'{p.name}: {w}' for p, w in failed)}); "
            f"nothing was deleted; pass --train.restart true to start over (they are then moved to "
            f"{Path(ckpt_dir) / UNREADABLE_DIR})")
    if failed:
        logger.warning("%s: no checkpoint loads; starting over (--train.restart true)", ckpt_dir)
    _set_aside(failed)
    return None


def _set_aside(failed: list[tuple[Path, str]]) -> None:
    for path, why in failed:
        try:
            dst = set_aside(path)
        except OSError as e:
            raise CheckpointsUnreadable(f"{path}: unreadable ({why}) and cannot be moved aside ({e})") from e
        logger.warning("moved unreadable checkpoint %s to %s (kept, never deleted)", path, dst)


def save_checkpoint(state: dict, ckpt_dir: str | Path, step: int, keep_last: int = 0,
                    keep_steps: Sequence[int] = ()) -> Path:
    """Write ``state`` to ``ckpt-<step>.pt`` atomically, then keep only the newest ``keep_last``
    and those of ``keep_steps`` (e.g. the best on the dev set). ``keep_last <= 0`` keeps all."""
    path = checkpoint_path(ckpt_dir, step)
    try:
        atomic_torch_save(state, path)
    except (OSError, RuntimeError) as e:
        # a full disk, a quota, a file-size limit (torch's zip writer reports a short write as a
        # RuntimeError): the user's to fix, not a bug; the older checkpoints are untouched
        if isinstance(e, RuntimeError) and not any(k in str(e) for k in _WRITE_FAILURES):
            raise
        older = [p.name for p in list_checkpoints(ckpt_dir)]
        raise CheckpointWriteError(
            f"{path}: cannot write the checkpoint ({type(e).__name__}: {' '.join(str(e).split())}); nothing "
            f"was replaced{' (' + ', '.join(older[-3:]) + ' intact)' if older else ''}; free space and re-run "
            f"to resume") from e
    if keep_last > 0:
        keep = {int(s) for s in keep_steps}
        for old in list_checkpoints(ckpt_dir)[:-keep_last]:
            if checkpoint_step(old) in keep:
                continue
            try:
                old.unlink()
            except FileNotFoundError:
                pass
    return path


def checkpoint_step(path: str | Path) -> int:
    """The step of ``ckpt-<step>.pt``."""
    m = CKPT_RE.match(Path(path).name)
    if not m:
        raise CheckpointError(f"{path}: not a ckpt-<step>.pt file")
    return int(m.group(1))


def best_steps(csv_path: str | Path, metric: str, n: int) -> list[int]:
    """The ``n`` steps with the lowest dev ``metric`` (``dev_wer`` or ``loss``) in ``train.csv``."""
    p = Path(csv_path)
    if n <= 0 or not p.is_file():
        return []
    rows = []
    with open(p, encoding="utf-8", newline="") as f:
        for r in csv.DictReader(f):
            if r.get("split") == "dev" and r.get(metric) not in (None, ""):
                try:
                    rows.append((float(r[metric]), int(r["step"])))
                except ValueError:
                    continue
    best: dict[int, float] = {}
    for v, s in rows:  # a step evaluated twice (resume): its last value
        best[s] = v
    return [s for s, _ in sorted(best.items(), key=lambda kv: (kv[1], -kv[0]))[:n]]


# ----------------------------------------------------------------------------- RNG


def rng_state() -> dict:
    """Python, numpy, torch (and CUDA) RNG states in a form ``weights_only`` loading accepts."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {
            "name": np_state[0],
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` captured."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state(
        (n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
        else:
            logger.warning(
                "checkpoint has %d CUDA RNG states, this process sees %d devices: CUDA RNG not restored",
                len(cuda), torch.cuda.device_count(),
            )


# ----------------------------------------------------------------------------- averaging


def average_state_dicts(states: Sequence[dict]) -> dict:
    """Element-wise mean of model state dicts; non-floating tensors are copied from the last one.

    Sums run in float64 so that averaging many fp32/bf16 checkpoints adds no rounding drift.
    """
    if not states:
        raise ValueError("average_state_dicts: no state dicts given")
    keys = list(states[-1].keys())
    for i, s in enumerate(states):
        if set(s.keys()) != set(keys):
            diff = sorted(set(s.keys()) ^ set(keys))
            raise ValueError(f"state dict {i} has different keys than the last one: {diff[:5]}")
    out: dict[str, Any] = {}
    for k in keys:
        last = states[-1][k]
        if torch.is_tensor(last) and torch.is_floating_point(last):
            acc = torch.zeros(last.shape, dtype=torch.float64)
            for s in states:
                if s[k].shape != last.shape:
                    raise ValueError(f"{k}: shape {tuple(s[k].shape)} != {tuple(last.shape)}")
                acc += s[k].detach().to("cpu", torch.float64)
            out[k] = (acc / len(states)).to(last.dtype)
        else:
            out[k] = last.clone() if torch.is_tensor(last) else last
    return out


def average_checkpoints(paths: Sequence[str | Path], out_path: str | Path) -> dict:
    """Average the model weights of ``paths`` into ``out_path`` (atomic), streamed.

    One checkpoint at a time is mapped (:func:`load_checkpoint` with ``mmap``) and only its
    ``model`` tensors are read, into one running sum; the optimizer state is never read. Peak
    memory is about two models' weights (the sum and the checkpoint being added) whatever the
    number of checkpoints (``benchmarks/bench_average.py``). The sums of floating tensors run in
    float32 (float64 for float64 tensors); other entries are those of the last checkpoint.
    The output holds ``model``, ``config``, ``step`` and ``epoch`` of the last path, and
    ``averaged_from`` (the file names), so :func:`load_model` reads it like a checkpoint.
    """
    if not paths:
        raise CheckpointError("average_checkpoints: no checkpoints given")
    paths = [Path(p) for p in paths]
    last = load_checkpoint(paths[-1], mmap=True)
    keys = list(last["model"].keys())
    ref = {k: v for k, v in last["model"].items()}
    meta = {"config": last["config"], "step": last.get("step", 0), "epoch": last.get("epoch", 0)}
    del last
    acc: dict[str, torch.Tensor] = {}
    for path in paths:
        state = load_checkpoint(path, mmap=True)["model"]
        if set(state.keys()) != set(keys):
            diff = sorted(set(state.keys()) ^ set(keys))
            raise CheckpointError(f"{path}: its model has other parameters than {paths[-1].name}'s: {diff[:5]}")
        for k in keys:
            want, v = ref[k], state[k]
            if not (torch.is_tensor(want) and torch.is_floating_point(want)):
                continue
            if not torch.is_tensor(v) or v.shape != want.shape:
                shape = tuple(v.shape) if torch.is_tensor(v) else type(v).__name__
                raise CheckpointError(f"{path}: {k} has shape {shape}, {paths[-1].name} has {tuple(want.shape)}")
            if k in acc:
                acc[k] += v.to(acc[k].dtype)
            else:
                acc[k] = v.to(torch.promote_types(want.dtype, torch.float32), copy=True)
        del state
    avg: dict[str, Any] = {}
    for k in keys:
        want = ref[k]
        if k in acc:
            avg[k] = acc.pop(k).div_(len(paths)).to(want.dtype)
        else:
            avg[k] = want.clone() if torch.is_tensor(want) else want
    del ref
    out = {"model": avg, **meta, "averaged_from": [p.name for p in paths]}
    atomic_torch_save(out, out_path)
    return out
