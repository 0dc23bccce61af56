"""Global CMVN statistics in Kaldi layout: accumulate from feats.scp, read/write (kaldiio), apply."""
from __future__ import annotations

import logging
import multiprocessing
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Optional, Tuple, Union

import kaldiio
import numpy as np

from justkit.datadir.tables import TableNotSorted, iter_sorted_table, iter_table, read_table
from justkit.fileio import atomic_open, refuse_pipe
from justkit.errors import JustkitError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)
Array = Union[np.ndarray, "torch.Tensor"]

# Kaldi's ApplyCmvn floors the variance at this value.
VAR_FLOOR = 1.0e-20


class CmvnError(JustkitError, ValueError):
    """CMVN stats are malformed or cannot be accumulated; names the file (and utterance)."""


@dataclass(frozen=True)
class CmvnConfig:
    """How the data loader normalises features with the global stats."""

    norm_means: bool = True
    norm_vars: bool = True
    var_floor: float = VAR_FLOOR


def accumulate(feats: Iterable[np.ndarray], dim: Optional[int] = None) -> np.ndarray:
    """Kaldi stats ``[2, D+1]`` float64 of feature matrices ``[T, D]``.

    Row 0: per-dimension sums, then the frame count; row 1: sums of squares, then 0.
    """
    stats: Optional[np.ndarray] = None
    for x in feats:
        x = np.asarray(x, dtype=np.float64)
        if stats is None:
            d = x.shape[1] if dim is None else dim
            stats = np.zeros((2, d + 1), dtype=np.float64)
        add_to_stats(stats, x)
    if stats is None:
        if dim is None:
            raise CmvnError("no features to accumulate CMVN stats from")
        stats = np.zeros((2, dim + 1), dtype=np.float64)
    return stats


def add_to_stats(stats: np.ndarray, x: np.ndarray) -> None:
    """Add one ``[T, D]`` matrix to ``stats`` in place."""
    d = stats.shape[1] - 1
    if x.ndim != 2 or x.shape[1] != d:
        raise CmvnError(f"feature matrix of shape {x.shape} does not match CMVN dim {d}")
    x = np.asarray(x, dtype=np.float64)
    stats[0, :d] += x.sum(axis=0)
    stats[1, :d] += np.einsum("td,td->d", x, x)
    stats[0, d] += x.shape[0]


def compute_cmvn_stats(feats_scp: str | Path, progress_every: float = 30.0, nj: int = 1) -> np.ndarray:
    """Global stats over every utterance of ``feats_scp``; errors name the scp and utterance.

    With ``nj`` > 1 the scp is cut into ``nj`` contiguous parts, each accumulated in its own
    process (float64), and the parts' stats are summed in order: the result equals the serial
    one up to the order of the float64 additions. The scp is read line by line (10.8M English
    utterances are never held in memory).
    """
    feats_scp = Path(feats_scp)
    n = count_entries(feats_scp)
    if not n:
        raise CmvnError(f"{feats_scp}: no utterances")
    nj = max(1, min(nj, n))
    bounds = [n * j // nj for j in range(nj + 1)]
    jobs = [(feats_scp, bounds[j], bounds[j + 1], progress_every, f" (part {j + 1}/{nj})" if nj > 1 else "")
            for j in range(nj)]
    if nj == 1:
        parts = [_accumulate_part(*jobs[0])]
    else:
        with multiprocessing.get_context("fork").Pool(nj) as pool:
            parts = pool.starmap(_accumulate_part, jobs)
    stats, _ = parts[0]
    for part, utt in parts[1:]:
        if part.shape != stats.shape:
            raise CmvnError(f"{feats_scp}: utterance {utt}: dim {part.shape[1] - 1} != {stats.shape[1] - 1} "
                            f"of the utterances before it")
        stats += part
    return stats


def count_entries(scp: Path) -> int:
    """Entries of ``scp``, checked as ``read_table`` checks them (UTF-8, a value, no repeated id):
    a sorted scp (every one justkit writes) in one pass that keeps nothing, another through a dict."""
    try:
        return sum(1 for _ in iter_sorted_table(scp))
    except TableNotSorted:
        return len(read_table(scp))  # not sorted: repeated ids need a dict to be found


def _accumulate_part(feats_scp: Path, start: int, stop: int, progress_every: float,
                     label: str) -> Tuple[np.ndarray, str]:
    """(stats of the entries ``start:stop`` of the scp, the first one's utterance id)."""
    stats: Optional[np.ndarray] = None
    first = ""
    t0 = last = time.monotonic()
    for i, t in enumerate(iter_table(feats_scp)):
        if i < start:
            continue
        if i >= stop:
            break
        utt, rx = t.key, t.value
        first = first or utt
        refuse_pipe(rx, f"{feats_scp}: utterance {utt}")
        try:
            x = kaldiio.load_mat(rx)
        except Exception as e:  # kaldiio raises many types for a bad offset or a truncated ark
            raise CmvnError(f"{feats_scp}: utterance {utt}: cannot read features {rx} ({e})") from None
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[0] == 0:
            raise CmvnError(f"{feats_scp}: utterance {utt}: features {rx} have shape {x.shape}")
        if not np.isfinite(x).all():
            raise CmvnError(f"{feats_scp}: utterance {utt}: features {rx} contain NaN/inf")
        if stats is None:
            stats = np.zeros((2, x.shape[1] + 1), dtype=np.float64)
        elif x.shape[1] != stats.shape[1] - 1:
            raise CmvnError(f"{feats_scp}: utterance {utt}: dim {x.shape[1]} != {stats.shape[1] - 1} "
                            f"of the utterances before it")
        add_to_stats(stats, x)
        now = time.monotonic()
        if now - last >= progress_every:
            log.info("cmvn%s: %d/%d utterances (%.0f s)", label, i + 1 - start, stop - start, now - t0)
            last = now
    if stats is None:
        raise CmvnError(f"{feats_scp}: changed while CMVN stats were computed (entries {start}-{stop} missing)")
    return stats, first


def write_stats_shard(path: str | Path, stats: np.ndarray) -> None:
    """Write one job's partial stats ``[2, D+1]`` (a frame count of 0 is allowed), atomically."""
    stats = np.asarray(stats, dtype=np.float64)
    _check_shape(stats, path)
    with atomic_open(path, "wb", encoding=None) as f:
        kaldiio.save_mat(f, stats)


def sum_stats(paths: Iterable[str | Path]) -> np.ndarray:
    """Sum of the partial stats of parallel jobs (Kaldi stats are additive); every file must exist
    and have the same dim, and the total frame count must be > 0."""
    total: Optional[np.ndarray] = None
    names = []
    for p in paths:
        names.append(str(p))
        s = _load_stats(p, "partial CMVN stats", "did the job finish? see its log")
        if total is None:
            total = np.zeros_like(s)
        elif s.shape != total.shape:
            raise CmvnError(f"{p}: stats of shape {s.shape}, but {names[0]} has {total.shape}")
        total += s
    if total is None:
        raise CmvnError("no partial CMVN stats to sum")
    _check_stats(total, " + ".join(names[:3]) + (" ..." if len(names) > 3 else ""))
    return total


def write_cmvn(path: str | Path, stats: np.ndarray) -> None:
    """Write stats as one Kaldi binary matrix (readable by ``copy-matrix``/``kaldiio.load_mat``), atomically."""
    stats = np.asarray(stats, dtype=np.float64)
    _check_stats(stats, path)
    with atomic_open(path, "wb", encoding=None) as f:
        kaldiio.save_mat(f, stats)


def read_cmvn(path: str | Path) -> np.ndarray:
    """Read Kaldi-layout global stats ``[2, D+1]`` float64."""
    stats = _load_stats(path, "CMVN stats", "run stage 3")
    _check_stats(stats, path)
    return stats


def _load_stats(path: str | Path, what: str, hint: str) -> np.ndarray:
    """A ``[2, D+1]`` float64 matrix from a Kaldi stats file (any frame count); errors name the file."""
    refuse_pipe(str(path), what)
    try:
        stats = np.asarray(kaldiio.load_mat(str(path)), dtype=np.float64)
    except FileNotFoundError:
        raise CmvnError(f"{path}: {what} not found ({hint})") from None
    except Exception as e:
        raise CmvnError(f"{path}: cannot read {what} ({e})") from None
    _check_shape(stats, path)
    return stats


def _check_shape(stats: np.ndarray, path) -> None:
    if stats.ndim != 2 or stats.shape[0] != 2 or stats.shape[1] < 2:
        raise CmvnError(f"{path}: CMVN stats must be a 2 x (D+1) matrix, got shape {stats.shape}")


def _check_stats(stats: np.ndarray, path) -> None:
    _check_shape(stats, path)
    if not stats[0, -1] > 0:
        raise CmvnError(f"{path}: CMVN stats have frame count {stats[0, -1]}; need > 0")


def stats_to_mean_std(stats: np.ndarray, var_floor: float = VAR_FLOOR) -> Tuple[np.ndarray, np.ndarray]:
    """``(mean, std)`` float64 ``[D]`` from stats; the variance is floored at ``var_floor`` like Kaldi."""
    _check_stats(stats, "stats")
    d = stats.shape[1] - 1
    count = stats[0, d]
    mean = stats[0, :d] / count
    var = stats[1, :d] / count - mean * mean
    return mean, np.sqrt(np.maximum(var, var_floor))


def load_cmvn(path: str | Path, var_floor: float = VAR_FLOOR) -> Tuple["torch.Tensor", "torch.Tensor"]:
    """``(mean, std)`` float32 tensors ``[D]`` from a stats file, for the data loader."""
    import torch  # here, so that compute_cmvn (numpy only) does not pay torch's import time

    mean, std = stats_to_mean_std(read_cmvn(path), var_floor)
    return torch.from_numpy(mean).float(), torch.from_numpy(std).float()


def apply_cmvn(feats: Array, mean: Array, std: Array, norm_means: bool = True, norm_vars: bool = True) -> Array:
    """``(feats - mean) / std`` over the last dim (numpy or torch, same type out)."""
    out = feats
    if norm_means:
        out = out - mean
    if norm_vars:
        out = out / std
    return out
