"""Dataset over a packed jsonl (stage 5): loads fbank with kaldiio, applies global CMVN and SpecAugment."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import kaldiio
import numpy as np

from justkit.data.specaug import SpecAugConfig, spec_augment
from justkit.errors import JustkitError
from justkit.fileio import refuse_pipe

PACKED_KEYS = ("utt", "feats", "num_frames", "tokens", "lang", "labelled", "text")

Cmvn = Optional[Union[str, os.PathLike, Tuple[np.ndarray, np.ndarray]]]


class PackedDataError(JustkitError, ValueError):
    """A packed jsonl line or the features it points to are bad; names the file and utterance."""


def read_packed(path: Union[str, os.PathLike]) -> List[Dict[str, Any]]:
    """Read a packed jsonl; every line must be an object with the keys of docs/interfaces.md."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise PackedDataError(f"{path}: packed file not found (run stage 5)") from None
    out: List[Dict[str, Any]] = []
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            ex = json.loads(line)
        except json.JSONDecodeError as e:
            raise PackedDataError(f"{path}:{lineno}: not valid JSON ({e})") from None
        missing = [k for k in PACKED_KEYS if k not in ex] if isinstance(ex, dict) else list(PACKED_KEYS)
        if missing:
            utt = ex.get("utt", "?") if isinstance(ex, dict) else "?"
            raise PackedDataError(f"{path}:{lineno}: utt {utt}: missing key(s) {missing}")
        if not isinstance(ex["num_frames"], int) or ex["num_frames"] <= 0:
            raise PackedDataError(f"{path}:{lineno}: utt {ex['utt']}: bad num_frames {ex['num_frames']!r}")
        out.append(ex)
    if not out:
        raise PackedDataError(f"{path}: no utterances")
    return out


def resolve_cmvn(cmvn: Cmvn) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """None, a Kaldi-layout stats file (read with justkit.frontend.cmvn.load_cmvn) or (mean, std)."""
    if cmvn is None:
        return None
    if isinstance(cmvn, (str, os.PathLike)):
        from justkit.frontend.cmvn import load_cmvn  # stage 3's reader of the Kaldi stats layout

        cmvn = load_cmvn(cmvn)
    mean, std = (np.asarray(a, dtype=np.float32).reshape(-1) for a in cmvn)
    if mean.shape != std.shape:
        raise ValueError(f"CMVN mean {mean.shape} and std {std.shape} differ in shape")
    if np.any(std <= 0):
        raise ValueError("CMVN std has non-positive entries")
    return mean, std


class PackedDataset:
    """Map-style dataset: item i = dict(utt, feats [T, D] float32, tokens, lang, labelled).

    With ``specaug.enabled`` a batch fetched through ``__getitems__`` (as torch's DataLoader
    does with a batch sampler) also gets ``feats_sup`` for labelled rows, augmented with an RNG
    seeded from the batch's seed (:class:`justkit.data.sampler.IndexBatch`).
    """

    def __init__(
        self,
        packed: Union[str, os.PathLike, Sequence[Dict[str, Any]]],
        cmvn: Cmvn = None,
        specaug: Optional[SpecAugConfig] = None,
    ) -> None:
        if isinstance(packed, (str, os.PathLike)):
            self.source = str(packed)
            self.entries = read_packed(packed)
        else:
            self.source = "<entries>"
            self.entries = list(packed)
        self.cmvn = resolve_cmvn(cmvn)
        self.specaug = specaug if specaug is not None and specaug.enabled else None

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def lengths(self) -> List[int]:
        return [int(e["num_frames"]) for e in self.entries]

    @property
    def langs(self) -> List[str]:
        return [str(e["lang"]) for e in self.entries]

    @property
    def utts(self) -> List[str]:
        return [str(e["utt"]) for e in self.entries]

    def load_feats(self, i: int) -> np.ndarray:
        """Features of entry ``i`` with CMVN applied; errors name the utterance and the path."""
        e = self.entries[i]
        rx = refuse_pipe(e["feats"], f"{self.source}: utt {e['utt']}: feats")
        ark = str(rx).rsplit(":", 1)[0]
        try:
            x = kaldiio.load_mat(rx)
        except FileNotFoundError:
            raise PackedDataError(
                f"{self.source}: utt {e['utt']}: feats file {ark} not found (re-run stage 3/5)"
            ) from None
        except Exception as err:  # kaldiio raises assorted errors on a bad offset or format
            raise PackedDataError(f"{self.source}: utt {e['utt']}: cannot read feats {rx}: {err}") from None
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[0] != int(e["num_frames"]):
            raise PackedDataError(
                f"{self.source}: utt {e['utt']}: feats {rx} has shape {x.shape}, "
                f"expected {e['num_frames']} frames"
            )
        if self.cmvn is not None:
            mean, std = self.cmvn
            if x.shape[1] != mean.shape[0]:
                raise PackedDataError(
                    f"{self.source}: utt {e['utt']}: feature dim {x.shape[1]} != CMVN dim {mean.shape[0]}"
                )
            x = (x - mean) / std
        return x

    def __getitem__(self, i: int) -> Dict[str, Any]:
        e = self.entries[i]
        return {
            "utt": e["utt"],
            "feats": self.load_feats(i),
            "tokens": list(e["tokens"]),
            "lang": e["lang"],
            "labelled": bool(e["labelled"]),
        }

    def __getitems__(self, indices: Sequence[int]) -> List[Dict[str, Any]]:
        items = [self[int(i)] for i in indices]
        if self.specaug is not None:
            rng = np.random.default_rng(int(getattr(indices, "seed", 0)))
            for it in items:
                if it["labelled"]:
                    it["feats_sup"] = spec_augment(it["feats"], self.specaug, rng)
        return items
