"""Dataset over a packed jsonl (stage 5): loads fbank with kaldiio (or computes it from the audio on the fly),
applies global CMVN and SpecAugment."""
from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import kaldiio
import numpy as np

from justkit.data.manifest import (  # noqa: F401 (PACKED_* re-exported)
    PACKED_KEYS, PACKED_OPTIONAL_KEYS, PackedDataError, PackedIndex, columns)
from justkit.data.specaug import SpecAugConfig, spec_augment
from justkit.fileio import refuse_pipe
from justkit.frontend.audio import AudioError
from justkit.frontend.cmvn import load_cmvn  # stage 3's reader of the Kaldi stats layout
from justkit.frontend.fbank import FbankConfig, dither_noise, num_frames
from justkit.frontend.shards import fly_features, fly_samples

FEATURES_ON = ("loader", "device")

Cmvn = Optional[Union[str, os.PathLike, Tuple[np.ndarray, np.ndarray]]]


def read_packed(path: Union[str, os.PathLike]) -> List[Dict[str, Any]]:
    """Every example of a packed jsonl as a list of dicts (small sets; training uses the index).

    Every line must be an object with the keys of docs/interfaces.md.
    """
    return list(PackedIndex.open(path))


def resolve_cmvn(cmvn: Cmvn) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """None, a Kaldi-layout stats file (read with justkit.frontend.cmvn.load_cmvn) or (mean, std)."""
    if cmvn is None:
        return None
    if isinstance(cmvn, (str, os.PathLike)):
        cmvn = load_cmvn(cmvn)
    mean, std = (np.asarray(a, dtype=np.float32).reshape(-1) for a in cmvn)
    if mean.shape != std.shape:
        raise ValueError(f"CMVN mean {mean.shape} and std {std.shape} differ in shape")
    if np.any(std <= 0):
        raise ValueError("CMVN std has non-positive entries")
    return mean, std


def resolve_fbank(fbank: Optional[Any]):
    """None, a FbankConfig, or the ``fbank:`` mapping of a conf/fbank.yaml -> FbankConfig or None."""
    if fbank is None:
        return None
    return fbank if isinstance(fbank, FbankConfig) else FbankConfig.from_dict(dict(fbank))


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
        fbank: Optional[Any] = None,
        features_on: str = "loader",
    ) -> None:
        if isinstance(packed, (str, os.PathLike)):
            self.source = str(packed)
            self.entries: Sequence[Dict[str, Any]] = PackedIndex.open(packed)
        elif isinstance(packed, PackedIndex):
            self.source = str(packed.path)
            self.entries = packed
        else:
            self.source = "<entries>"
            self.entries = list(packed)
        self._set_columns()
        self.cmvn = resolve_cmvn(cmvn)
        self.specaug = specaug if specaug is not None and specaug.enabled else None
        self.fbank = resolve_fbank(fbank)
        if features_on not in FEATURES_ON:
            raise ValueError(f"features_on must be one of {FEATURES_ON}, got {features_on!r}")
        if features_on == "device" and self.specaug is not None:
            raise ValueError("data.features_on device with SpecAugment is not supported: the masks are drawn on "
                             "the loader's features (set data.specaug.enabled false, or features_on loader)")
        self.features_on = features_on

    def _set_columns(self) -> None:
        e = self.entries
        if isinstance(e, PackedIndex):
            self.lengths, self.lang_codes, self.lang_names, self.labelled = (
                e.lengths, e.lang_codes, e.lang_names, e.labelled)
        else:
            self.lengths, self.lang_codes, self.lang_names, self.labelled = columns(e)

    def select(self, keep: np.ndarray) -> None:
        """Keep only the entries ``keep`` (a boolean mask or positions), in that order."""
        keep = np.asarray(keep)
        if isinstance(self.entries, PackedIndex):
            self.entries = self.entries.select(keep)
        else:
            pos = np.nonzero(keep)[0] if keep.dtype == bool else keep
            self.entries = [self.entries[int(i)] for i in pos]
        self._set_columns()

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def langs(self) -> List[str]:
        """The language of every entry (a list of strings: small sets; the loader uses the codes)."""
        return [self.lang_names[int(c)] for c in self.lang_codes]

    @property
    def utts(self) -> Sequence[str]:
        """Utterance ids, read lazily from the jsonl (a sequence, not a list)."""
        return _Utts(self.entries)

    def load_feats(self, i: int) -> np.ndarray:
        """Features of entry ``i`` with CMVN applied; errors name the utterance and the path.

        An entry with ``"audio"`` instead of ``"feats"`` (stage 3 with --feats_type raw) gets its
        fbank computed here, in the DataLoader worker: the same function and options as stage 3
        (dither seeded by the utterance id, so batches are reproducible and a resume exact)."""
        e = self.entries[i]
        if e.get("feats") is None:
            x = self._fly_fbank(e)
            what = f"audio {e.get('audio')} gives fbank of"
        else:
            x = self._read_feats(e)
            what = f"feats {e['feats']} has"
        if x.ndim != 2 or x.shape[0] != int(e["num_frames"]):
            raise PackedDataError(
                f"{self.source}: utt {e['utt']}: {what} shape {x.shape}, expected {e['num_frames']} frames"
                + (" (packed with another fbank config or audio?)" if e.get("feats") is None else "")
            )
        if self.cmvn is not None:
            mean, std = self.cmvn
            if x.shape[1] != mean.shape[0]:
                raise PackedDataError(
                    f"{self.source}: utt {e['utt']}: feature dim {x.shape[1]} != CMVN dim {mean.shape[0]}"
                )
            x = (x - mean) / std
        return x

    def _read_feats(self, e: Dict[str, Any]) -> np.ndarray:
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
        return np.asarray(x, dtype=np.float32)

    def _audio_path(self, e: Dict[str, Any]) -> str:
        src = e.get("audio")
        if not isinstance(src, str) or not src:
            raise PackedDataError(f"{self.source}: utt {e['utt']}: neither feats nor audio given")
        if self.fbank is None:
            raise PackedDataError(
                f"{self.source}: utt {e['utt']}: audio entry (features on the fly) but no fbank config given "
                f"(the experiment's paths.features/conf/fbank.yaml)")
        return refuse_pipe(src, f"{self.source}: utt {e['utt']}: audio")

    def load_wave(self, i: int) -> np.ndarray:
        """16 kHz (the fbank config's rate) float32 samples of audio entry ``i``, resampled if the file
        has another rate, with the utterance's seeded dither added (for ``features_on: device``)."""
        e = self.entries[i]
        if e.get("feats") is not None:
            raise PackedDataError(f"{self.source}: utt {e['utt']}: stored feats, no audio: data.features_on "
                                  f"device needs examples packed from stage 3 with --feats_type raw")
        src = self._audio_path(e)
        try:
            x = fly_samples(src, e["utt"], self.fbank)
        except AudioError as err:
            raise PackedDataError(f"{self.source}: utt {e['utt']}: {err}") from None
        fs = int(self.fbank.sample_frequency)
        n = num_frames(len(x), self.fbank)
        if n != int(e["num_frames"]):
            raise PackedDataError(
                f"{self.source}: utt {e['utt']}: audio {src} has {len(x)} samples at {fs} Hz = {n} frames, "
                f"expected {e['num_frames']} (packed with another fbank config or audio?)")
        noise = dither_noise(len(x), self.fbank, e["utt"])
        return x if noise is None else x + noise

    def _fly_fbank(self, e: Dict[str, Any]) -> np.ndarray:
        src = self._audio_path(e)
        try:
            return fly_features(src, e["utt"], self.fbank)
        except AudioError as err:
            raise PackedDataError(f"{self.source}: utt {e['utt']}: {err}") from None

    def __getitem__(self, i: int) -> Dict[str, Any]:
        e = self.entries[i]
        return {
            "utt": e["utt"],
            # features_on device: the 1-D waveform; the training step computes fbank in batch
            "feats": self.load_wave(i) if self.features_on == "device" else self.load_feats(i),
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


class _Utts(Sequence):
    def __init__(self, entries: Sequence[Dict[str, Any]]) -> None:
        self.entries = entries

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self.entries[j]["utt"] for j in range(*i.indices(len(self)))]
        return str(self.entries[int(i)]["utt"])
