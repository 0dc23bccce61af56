"""Training/eval data loader: DataConfig, collate to the batch dict, resumable torch DataLoader."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Sequence, Union

import numpy as np
import torch
from torch.utils.data import DataLoader

from justkit.config import from_dict
from justkit.data.dataset import Cmvn, PackedDataError, PackedDataset
from justkit.data.sampler import BucketBatchSampler
from justkit.data.specaug import SpecAugConfig
from justkit.frontend.fbank import compute_fbank_batch, num_frames
from justkit.frontend.lengths import min_input_frames

logger = logging.getLogger(__name__)


@dataclass
class DataConfig:
    """The ``data:`` section of an experiment YAML.

    max_frames: budget of one batch in feature frames, padding included
        (batch size * longest utterance <= max_frames); per rank. Longer utterances are
        skipped in training (with a warning).
    buckets: number of length buckets (quantiles of the training lengths); batches are
        made inside a bucket, so more buckets = less padding, less randomness.
    lang_alpha: language sampling temperature, p_lang proportional to n_lang ** lang_alpha
        (1 = natural shares, 0 = uniform over languages; ~0.3-0.5 favours low-resource ones).
    epoch_size: utterances drawn per epoch, all ranks together (0 = number of training
        utterances that fit max_frames; with labelled_share, labelled ones / labelled_share).
    labelled_share: 0 = utterances are drawn regardless of having labels; s in (0, 1) =
        labelled and unlabelled utterances are drawn apart so that a share s of every epoch
        is labelled (semi-supervised JUST with a small labelled set and a large unlabelled
        pool: an epoch is then one pass over the labelled data).
    num_workers: DataLoader worker processes (0 = load in the main process).
    specaug: SpecAugment for ``feats_sup`` (see justkit.data.specaug.SpecAugConfig).
    seed: seed of language sampling, batch order and SpecAugment (with the epoch).
    features_on: where fbank is computed for examples packed with audio (stage 3 --feats_type raw;
        ``device`` needs such examples, ``loader`` reads stored features as before): ``loader`` = in the DataLoader workers, per
        utterance, so batches hold features as with stored ones; ``device`` = the workers only
        decode (and resample) audio and hand out padded 16 kHz waveforms, and the training step
        computes fbank + CMVN on the model's device for the whole batch
        (:func:`device_features`), which frees the CPU cores of a GPU node. Not with SpecAugment.
    """

    max_frames: int = 20000
    buckets: int = 20
    lang_alpha: float = 1.0
    epoch_size: int = 0
    num_workers: int = 0
    labelled_share: float = 0.0
    specaug: SpecAugConfig = field(default_factory=SpecAugConfig)
    seed: int = 0
    features_on: str = "loader"

    def __post_init__(self) -> None:
        if isinstance(self.specaug, dict):
            self.specaug = from_dict(SpecAugConfig, self.specaug, "data.specaug")
        if self.max_frames <= 0:
            raise ValueError(f"data.max_frames must be > 0, got {self.max_frames}")
        if self.buckets < 1:
            raise ValueError(f"data.buckets must be >= 1, got {self.buckets}")
        if self.epoch_size < 0 or self.num_workers < 0:
            raise ValueError("data.epoch_size and data.num_workers must be >= 0")
        if self.features_on not in ("loader", "device"):
            raise ValueError(f"data.features_on must be loader or device, got {self.features_on!r}")
        if self.features_on == "device" and self.specaug.enabled:
            raise ValueError("data.features_on device does not support SpecAugment yet (data.specaug.enabled)")
        if not 0.0 <= self.labelled_share < 1.0:
            raise ValueError(f"data.labelled_share must be in [0, 1), got {self.labelled_share}")


def _pad(arrays: Sequence[np.ndarray], length: int) -> torch.Tensor:
    dim = arrays[0].shape[1]
    out = torch.zeros(len(arrays), length, dim, dtype=torch.float32)
    for i, a in enumerate(arrays):
        # Copy into the padded tensor through numpy: the arrays may be read-only views
        # (kaldiio/mmap), which torch.from_numpy warns about.
        out[i, : a.shape[0]].numpy()[...] = a
    return out


class Collate:
    """Items of PackedDataset -> the batch dict of docs/interfaces.md.

    ``feats`` [B, T, D] float32 (zero padded), ``feat_lens`` [B] long, ``feats_sup`` (only with
    ``with_sup``; unlabelled rows hold an un-augmented copy), ``tokens`` [B, U] long padded with
    0 (U >= 1), ``token_lens`` [B] long (0 for unlabelled rows: their transcripts are never
    handed to the model), ``labelled`` [B] bool, ``num_labelled`` (an int), ``langs``, ``utts``.
    The labelled rows come first (in sampler order, then the unlabelled ones), so that a
    model takes them as ``[:num_labelled]``, a slice whose size the host already knows,
    instead of a boolean index that waits for the device.

    With ``fbank`` (``data.features_on: device``) the items hold 1-D waveforms instead: the batch
    has ``wave`` [B, N] float32 (zero padded) and ``wave_lens`` [B] instead of ``feats``, and
    ``feat_lens`` the frames fbank will give (:func:`device_features` computes ``feats``).
    """

    def __init__(self, with_sup: bool = False, fbank: Any = None) -> None:
        self.with_sup = with_sup
        self.fbank = fbank

    def __call__(self, items: List[Dict[str, Any]]) -> Dict[str, Any]:
        items = [it for it in items if it["labelled"]] + [it for it in items if not it["labelled"]]
        if self.fbank is not None:
            lens = [num_frames(it["feats"].shape[0], self.fbank) for it in items]
        else:
            lens = [it["feats"].shape[0] for it in items]
        t_max = max(lens)
        labelled = [bool(it["labelled"]) for it in items]
        toks = [it["tokens"] if lab else [] for it, lab in zip(items, labelled)]
        u_max = max(1, max(len(t) for t in toks))
        tokens = torch.zeros(len(items), u_max, dtype=torch.long)
        for i, t in enumerate(toks):
            if t:
                tokens[i, : len(t)] = torch.as_tensor(t, dtype=torch.long)
        batch: Dict[str, Any] = {}
        if self.fbank is not None:
            wl = [it["feats"].shape[0] for it in items]
            wave = torch.zeros(len(items), max(wl), dtype=torch.float32)
            for i, it in enumerate(items):
                wave[i, : wl[i]].numpy()[...] = it["feats"]
            batch.update(wave=wave, wave_lens=torch.as_tensor(wl, dtype=torch.long))
        else:
            batch["feats"] = _pad([it["feats"] for it in items], t_max)
        batch.update({
            "feat_lens": torch.as_tensor(lens, dtype=torch.long),
            "tokens": tokens,
            "token_lens": torch.as_tensor([len(t) for t in toks], dtype=torch.long),
            "labelled": torch.as_tensor(labelled, dtype=torch.bool),
            "num_labelled": sum(labelled),
            "langs": [it["lang"] for it in items],
            "utts": [it["utt"] for it in items],
        })
        if self.with_sup:
            batch["feats_sup"] = _pad([it.get("feats_sup", it["feats"]) for it in items], t_max)
        return batch


def device_features(batch: Dict[str, Any], fbank: Any, cmvn: Optional[tuple] = None) -> Dict[str, Any]:
    """``data.features_on: device``: fbank + CMVN of ``batch["wave"]`` on the tensor's device, in batch
    (:func:`justkit.frontend.fbank.compute_fbank_batch`); returns the batch with ``feats`` [B, T, D]
    (zero padded, as the loader pads) in place of ``wave``/``wave_lens``. A batch without ``wave``
    is returned as it is. ``cmvn``: (mean, std) arrays or tensors [D]."""
    if "wave" not in batch:
        return batch
    wave, wave_lens = batch["wave"], batch["wave_lens"]
    feats, frames = compute_fbank_batch(wave, wave_lens, fbank)
    if not torch.equal(frames.cpu(), batch["feat_lens"].cpu()):
        raise ValueError(f"device fbank frames {frames.tolist()} != packed frames {batch['feat_lens'].tolist()} "
                         f"(batch with {', '.join(batch.get('utts', [])[:4])} ...)")
    if cmvn is not None:
        mean, std = (torch.as_tensor(a, dtype=torch.float32, device=feats.device) for a in cmvn)
        valid = (torch.arange(feats.size(1), device=feats.device)[None, :] < frames[:, None])[:, :, None]
        feats = ((feats - mean) / std) * valid
    out = {k: v for k, v in batch.items() if k not in ("wave", "wave_lens")}
    out["feats"] = feats
    return out


class ResumableDataLoader(DataLoader):
    """A torch DataLoader over a :class:`BucketBatchSampler` that counts the batches it hands out.

    One ``iter()`` = the rest of the current epoch; when it is exhausted the sampler moves to
    the next epoch. ``state_dict()`` (saved in checkpoints under "sampler") records the epoch
    and the batches consumed, so a run resumed from it sees exactly the remaining batches.
    """

    def __iter__(self) -> Iterator[Dict[str, Any]]:
        sampler: BucketBatchSampler = self.batch_sampler
        for batch in super().__iter__():
            sampler.advance(1)
            yield batch
        sampler.end_epoch()

    @property
    def epoch(self) -> int:
        return self.batch_sampler.epoch

    def set_epoch(self, epoch: int) -> None:
        self.batch_sampler.set_epoch(epoch)

    def state_dict(self) -> dict:
        return self.batch_sampler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.batch_sampler.load_state_dict(state)

    def padding_fraction(self, epoch: Optional[int] = None) -> float:
        return self.batch_sampler.padding_fraction(epoch)


def build_loader(
    cfg: DataConfig,
    jsonl: Union[str, os.PathLike],
    cmvn: Cmvn,
    rank: int = 0,
    world_size: int = 1,
    seed: Optional[int] = None,
    train: bool = True,
    max_frames: Optional[int] = None,
    pin_memory: bool = False,
    labelled_only: bool = False,
    fbank: Any = None,
    min_frames: Optional[int] = None,
) -> ResumableDataLoader:
    """DataLoader over a packed jsonl for DDP ``rank`` of ``world_size``.

    ``train=True``: language sampling, buckets, shuffled batches, SpecAugment when enabled.
    ``train=False`` (dev/decoding): every utterance once in length order, no augmentation.
    ``seed`` (default ``cfg.seed``) fixes the batches and augmentation; ``max_frames``
    overrides ``cfg.max_frames`` (e.g. a larger budget for evaluation); ``pin_memory`` for
    faster copies to a GPU. ``labelled_only`` keeps the labelled examples only (a supervised
    model has no use for the others). Workers only load and collate, so the batches do not depend on
    ``cfg.num_workers``. Relative feats paths in the jsonl resolve against the working
    directory (the recipe dir, as run.sh runs every stage there). ``fbank`` (a FbankConfig or the
    ``fbank:`` mapping stage 3 recorded) is needed for examples packed with audio (features on the
    fly; ``cfg.features_on`` says where they are computed). Utterances shorter than ``min_frames``
    (default: what the default conv subsampling needs, 7 frames; the model's
    ``frontend.min_frames``) are left out with one warning: the model cannot encode them (stage 5
    drops and lists them; this covers sets packed before it did).
    """
    seed = cfg.seed if seed is None else int(seed)
    specaug = cfg.specaug if train and cfg.specaug.enabled else None
    dataset = PackedDataset(jsonl, cmvn=cmvn, specaug=specaug, fbank=fbank, features_on=cfg.features_on)
    if labelled_only:
        dataset.select(dataset.labelled)
        if not len(dataset):
            raise PackedDataError(f"{jsonl}: no labelled utterance (a supervised model needs some)")
    if min_frames is None:
        min_frames = min_input_frames()
    short = np.asarray(dataset.lengths) < int(min_frames)
    if short.any():
        n = int(short.sum())
        logger.warning("%s: %d utterance(s) shorter than the %d frames the model needs are skipped, e.g. %s "
                       "(stage 5 drops and lists them in its bad_utts.txt)", jsonl, n, min_frames,
                       dataset.utts[int(np.argmax(short))])
        if n == len(dataset):
            from justkit.data.dataset import PackedDataError

            raise PackedDataError(f"{jsonl}: every utterance is shorter than {min_frames} frames")
        dataset.select(~short)
    sampler = BucketBatchSampler(
        dataset.lengths,
        dataset.lang_codes,
        max_frames=max_frames or cfg.max_frames,
        num_buckets=cfg.buckets,
        lang_alpha=cfg.lang_alpha,
        epoch_size=cfg.epoch_size if train else 0,
        seed=seed,
        rank=rank,
        world_size=world_size,
        shuffle=train,
        utts=dataset.utts,
        labelled=dataset.labelled,
        labelled_share=cfg.labelled_share if train else 0.0,
        lang_names=dataset.lang_names,
    )
    return ResumableDataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=Collate(with_sup=specaug is not None,
                           fbank=dataset.fbank if cfg.features_on == "device" else None),
        num_workers=cfg.num_workers,
        generator=torch.Generator().manual_seed(seed),
        persistent_workers=cfg.num_workers > 0,  # workers live across epochs
        pin_memory=pin_memory,
    )
