"""SpecAugment (Park et al. 2019) on one utterance's normalised fbank: time warp, freq and time masks."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class SpecAugConfig:
    """SpecAugment settings (``data.specaug`` in the experiment YAML).

    enabled: make ``feats_sup`` (augmented copy for the supervised path) for labelled rows.
    time_warp: W, the largest shift of the warp point in frames; 0 turns time warping off.
    freq_masks / freq_width: number of frequency masks, each of width uniform in [0, freq_width].
    time_masks / time_width / time_ratio: number of time masks, each of width uniform in
        [0, min(time_width, time_ratio * num_frames)] (adaptive masks of SpecAugment-LS).
    Masked values are set to 0, the mean after global CMVN.
    """

    enabled: bool = False
    time_warp: int = 0
    freq_masks: int = 2
    freq_width: int = 27
    time_masks: int = 10
    time_width: int = 40
    time_ratio: float = 0.05

    def __post_init__(self) -> None:
        for k in ("time_warp", "freq_masks", "freq_width", "time_masks", "time_width"):
            if getattr(self, k) < 0:
                raise ValueError(f"specaug.{k} must be >= 0, got {getattr(self, k)}")
        if not 0.0 <= self.time_ratio <= 1.0:
            raise ValueError(f"specaug.time_ratio must be in [0, 1], got {self.time_ratio}")


# Own code rather than torchaudio.transforms.{Frequency,Time}Masking: those draw from torch's
# global RNG (we need a per-batch generator so that masks do not depend on worker count or a
# resume) and have no adaptive p * length cap; torchaudio has no spectrogram time warp.
def time_warp(x: np.ndarray, window: int, rng: np.random.Generator) -> np.ndarray:
    """Move a random frame c in [W, T-W) to c + w, w in [-W, W], stretching both sides linearly."""
    t = x.shape[0]
    if window <= 0 or t <= 2 * window + 1:
        return x
    c = int(rng.integers(window, t - window))
    w = int(rng.integers(-window, window + 1))
    if w == 0:
        return x
    xt = torch.from_numpy(np.ascontiguousarray(x.T))[None]  # [1, D, T]
    left = torch.nn.functional.interpolate(xt[..., :c], size=c + w, mode="linear", align_corners=True)
    right = torch.nn.functional.interpolate(xt[..., c:], size=t - c - w, mode="linear", align_corners=True)
    return torch.cat([left, right], dim=-1)[0].T.numpy().astype(x.dtype, copy=False)


def spec_augment(feats: np.ndarray, cfg: SpecAugConfig, rng: np.random.Generator) -> np.ndarray:
    """Return an augmented copy of ``feats`` [T, D]; ``feats`` itself is not modified."""
    x = np.array(feats, dtype=np.float32, copy=True)
    t, d = x.shape
    if cfg.time_warp:
        x = np.array(time_warp(x, cfg.time_warp, rng), copy=True)
    for _ in range(cfg.freq_masks):
        f = int(rng.integers(0, min(cfg.freq_width, d) + 1))
        f0 = int(rng.integers(0, d - f + 1))
        x[:, f0 : f0 + f] = 0.0
    max_t = min(cfg.time_width, int(cfg.time_ratio * t))
    for _ in range(cfg.time_masks):
        w = int(rng.integers(0, max_t + 1))
        t0 = int(rng.integers(0, t - w + 1))
        x[t0 : t0 + w, :] = 0.0
    return x
