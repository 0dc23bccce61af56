"""Kaldi-compatible log-mel filterbank features (torchaudio.compliance.kaldi.fbank)."""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import numpy as np

from justkit.config import from_dict, load_section
from justkit.errors import JustkitError

if TYPE_CHECKING:
    import torch

WINDOW_TYPES = ("povey", "hamming", "hanning", "rectangular", "blackman")


class FbankError(JustkitError, ValueError):
    """Features cannot be computed for an utterance (too short, wrong sample rate); names the utterance."""

    def __init__(self, utt: Optional[str], reason: str) -> None:
        self.utt, self.reason = utt, reason
        super().__init__(f"utterance {utt}: {reason}" if utt is not None else reason)


# Stage 3's feature storage -> kaldiio's compression_method (Kaldi's CompressionMethod):
#   float32           uncompressed float matrices ("FM"): 4 bytes per value, exact;
#   compressed        Kaldi's compressed matrix for speech features (copy-feats --compress,
#                     kSpeechFeature): ~1 byte per value, errors up to about 1/255 of a column's range;
#   compressed_2byte  kTwoByteAuto: ~2 bytes per value, errors up to about 1/65535 of the matrix's range.
# Every reader goes through kaldiio.load_mat, which decompresses to float32.
STORAGE_FORMATS = {"float32": None, "compressed": 2, "compressed_2byte": 3}


@dataclass(frozen=True)
class FbankConfig:
    """Options of Kaldi's compute-fbank-feats (same names minus dashes), Kaldi's defaults except:

    - ``num_mel_bins`` 80 (Kaldi: 23);
    - ``dither`` 0.0 (Kaldi: 1.0) so that re-running stage 3 gives identical features; a
      non-zero dither draws its noise from a generator seeded by the utterance id, so
      it is reproducible as well;
    - ``energy_floor`` 1.0 (Kaldi: 0.0), as Kaldi advises when dither is off.
    """

    sample_frequency: float = 16000.0
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    num_mel_bins: int = 80
    low_freq: float = 20.0
    high_freq: float = 0.0  # <= 0: offset from Nyquist
    dither: float = 0.0
    preemphasis_coefficient: float = 0.97
    remove_dc_offset: bool = True
    window_type: str = "povey"
    blackman_coeff: float = 0.42
    round_to_power_of_two: bool = True
    snip_edges: bool = True
    raw_energy: bool = True
    energy_floor: float = 1.0
    use_energy: bool = False
    htk_compat: bool = False
    use_log_fbank: bool = True
    use_power: bool = True
    # How stage 3 stores the features (Kaldi's make_fbank.sh --compress, not a compute-fbank-feats
    # option; computing features on the fly ignores it): see STORAGE_FORMATS.
    storage: str = "float32"

    @classmethod
    def from_dict(cls, d: Optional[dict]) -> "FbankConfig":
        return from_dict(cls, d, "fbank")

    def __post_init__(self) -> None:
        if self.storage not in STORAGE_FORMATS:
            raise ValueError(f"fbank storage must be one of {sorted(STORAGE_FORMATS)}, got {self.storage!r}")
        if self.window_type not in WINDOW_TYPES:
            raise ValueError(f"fbank window_type must be one of {WINDOW_TYPES}, got {self.window_type!r}")
        if self.num_mel_bins <= 3:
            raise ValueError(f"fbank num_mel_bins must be > 3, got {self.num_mel_bins}")
        if self.frame_shift_ms <= 0 or self.frame_length_ms <= 0:
            raise ValueError("fbank frame_length_ms and frame_shift_ms must be positive")

    @property
    def dim(self) -> int:
        return self.num_mel_bins + int(self.use_energy)

    @property
    def window_size(self) -> int:
        return int(self.sample_frequency * self.frame_length_ms * 0.001)

    @property
    def window_shift(self) -> int:
        return int(self.sample_frequency * self.frame_shift_ms * 0.001)

    def kaldi_kwargs(self) -> dict:
        """Keyword arguments for ``torchaudio.compliance.kaldi.fbank`` (dither handled separately)."""
        return dict(
            sample_frequency=self.sample_frequency, frame_length=self.frame_length_ms,
            frame_shift=self.frame_shift_ms, num_mel_bins=self.num_mel_bins,
            low_freq=self.low_freq, high_freq=self.high_freq, dither=0.0,
            preemphasis_coefficient=self.preemphasis_coefficient,
            remove_dc_offset=self.remove_dc_offset, window_type=self.window_type,
            blackman_coeff=self.blackman_coeff, round_to_power_of_two=self.round_to_power_of_two,
            snip_edges=self.snip_edges, raw_energy=self.raw_energy,
            energy_floor=self.energy_floor, use_energy=self.use_energy,
            htk_compat=self.htk_compat, use_log_fbank=self.use_log_fbank, use_power=self.use_power,
        )


def load_fbank_config(path: str | Path | None, overrides: Optional[dict] = None) -> FbankConfig:
    """FbankConfig from the ``fbank:`` section of a YAML file (None: the defaults), then ``overrides``
    (a mapping of option -> value)."""
    data = dict(load_section(path, "fbank") if path is not None else {})
    data.update(overrides or {})
    return from_dict(FbankConfig, data, where=f"{path}: fbank" if path else "fbank")


def num_frames(num_samples: int, cfg: FbankConfig) -> int:
    """Frames Kaldi produces for ``num_samples`` (snip_edges: whole windows only)."""
    if cfg.snip_edges:
        if num_samples < cfg.window_size:
            return 0
        return 1 + (num_samples - cfg.window_size) // cfg.window_shift
    return (num_samples + cfg.window_shift // 2) // cfg.window_shift


def compute_fbank(samples: np.ndarray | torch.Tensor, cfg: FbankConfig, sample_rate: Optional[int] = None,
                  utt: Optional[str] = None) -> np.ndarray:
    """``[num_frames, dim]`` float32 log-mel features of 1-D float samples in [-1, 1].

    Samples are scaled by 32768 first, as Kaldi reads 16-bit WAV, so the values (and
    the energy floor) match compute-fbank-feats on the same audio. Raises FbankError
    (naming ``utt``) for a sample-rate mismatch or audio shorter than one frame.
    """
    # torch is imported here, not at the top, so that reading/checking a config (which
    # utils/make_fbank.sh does before launching jobs) does not pay torch's import time.
    import torch
    import torchaudio.compliance.kaldi as kaldi

    # Own code vs torchaudio: a vectorised re-implementation (unfold, cached mel bank
    # and window, one matmul) measured no faster than torchaudio's (both ~3-4 ms for
    # 8 s on one core), so we call torchaudio and only add the checks and scaling.
    if sample_rate is not None and int(sample_rate) != int(cfg.sample_frequency):
        raise FbankError(utt, f"audio is {sample_rate} Hz but fbank expects {cfg.sample_frequency:g} Hz "
                              f"(resample first, or set sample_frequency)")
    x = torch.as_tensor(samples, dtype=torch.float32)
    if x.dim() != 1:
        raise FbankError(utt, f"expected 1-D samples, got shape {tuple(x.shape)}")
    # torchaudio needs one whole window even with snip_edges=False.
    if x.numel() < max(cfg.window_size, 2):
        raise FbankError(utt, f"{x.numel()} samples is shorter than one {cfg.frame_length_ms:g} ms frame "
                              f"({cfg.window_size} samples)")
    x = x * 32768.0
    if cfg.dither != 0.0:
        # Kaldi dithers each frame; adding the noise to the waveform is equivalent in
        # distribution and keeps torchaudio's framing. Seeded by the utterance id.
        x = x + _dither(x.numel(), cfg, utt)
    with torch.inference_mode():
        feats = kaldi.fbank(x.unsqueeze(0), **cfg.kaldi_kwargs())
    return feats.numpy()


def frame_counts(num_samples: torch.Tensor, cfg: FbankConfig) -> torch.Tensor:
    """:func:`num_frames` of every entry of an integer tensor of sample counts (same device)."""
    import torch  # lazy, as in compute_fbank

    n = num_samples.long()
    if cfg.snip_edges:
        return torch.where(n < cfg.window_size, torch.zeros_like(n), 1 + (n - cfg.window_size) // cfg.window_shift)
    return (n + cfg.window_shift // 2) // cfg.window_shift


def compute_fbank_batch(waves: torch.Tensor, lengths: torch.Tensor, cfg: FbankConfig) -> tuple:
    """Batched :func:`compute_fbank` on the tensors' device: ``waves`` [B, N] float samples in
    [-1, 1] (zero padded, already dithered if the config dithers), ``lengths`` [B] samples.

    Returns ``(feats [B, T, D] float32, frames [B] long)``; rows past their frame count are 0.
    With ``snip_edges`` and no energy column (stage 3's config) it frames the whole batch at
    once (unfold, DC removal, pre-emphasis, window, one rfft, one mel matmul), the same
    arithmetic as torchaudio's Kaldi fbank, so each row equals compute_fbank of that
    utterance up to float rounding (tests/frontend/test_fbank.py pins the tolerance); other options
    fall back to torchaudio per row.
    """
    import torch  # lazy, as in compute_fbank
    import torchaudio.compliance.kaldi as kaldi

    if waves.dim() != 2 or lengths.dim() != 1 or lengths.numel() != waves.size(0):
        raise ValueError(f"expected waves [B, N] and lengths [B], got {tuple(waves.shape)} and {tuple(lengths.shape)}")
    frames = frame_counts(lengths.to(waves.device), cfg)
    t_max = int(frames.max()) if frames.numel() else 0
    if t_max == 0:
        raise FbankError(None, f"every utterance of the batch is shorter than one {cfg.frame_length_ms:g} ms frame")
    x = waves.to(torch.float32) * 32768.0
    if not cfg.snip_edges or cfg.use_energy:
        out = torch.zeros(waves.size(0), t_max, cfg.dim, device=waves.device)
        with torch.inference_mode():
            for b in range(waves.size(0)):
                n = int(lengths[b])
                if int(frames[b]) > 0:
                    f = kaldi.fbank(x[b, :n].unsqueeze(0), **cfg.kaldi_kwargs())
                    out[b, : f.size(0)] = f
        return out, frames
    win, shift = cfg.window_size, cfg.window_shift
    padded = 1 << (win - 1).bit_length() if cfg.round_to_power_of_two else win
    need = (t_max - 1) * shift + win
    if x.size(1) < need:
        x = torch.nn.functional.pad(x, (0, need - x.size(1)))
    with torch.inference_mode():
        fr = x.unfold(1, win, shift)[:, :t_max]                      # [B, T, win]
        if cfg.remove_dc_offset:
            fr = fr - fr.mean(dim=2, keepdim=True)
        if cfg.preemphasis_coefficient != 0.0:
            prev = torch.cat([fr[:, :, :1], fr[:, :, :-1]], dim=2)
            fr = fr - cfg.preemphasis_coefficient * prev
        window = kaldi._feature_window_function(cfg.window_type, win, cfg.blackman_coeff, fr.device, fr.dtype)
        fr = fr * window
        spec = torch.fft.rfft(fr, n=padded).abs()                       # zero-pads to ``padded``
        if cfg.use_power:
            spec = spec.pow(2.0)
        mel, _ = kaldi.get_mel_banks(cfg.num_mel_bins, padded, cfg.sample_frequency, cfg.low_freq,
                                     cfg.high_freq, 100.0, -500.0, 1.0)
        mel = torch.nn.functional.pad(mel.to(fr.device, fr.dtype), (0, 1))
        feats = spec @ mel.T
        if cfg.use_log_fbank:
            feats = feats.clamp_min(torch.finfo(feats.dtype).eps).log()
        valid = torch.arange(t_max, device=fr.device)[None, :] < frames[:, None]
        feats = feats * valid[:, :, None]
    return feats.clone(), frames


def dither_noise(num_samples: int, cfg: FbankConfig, utt: Optional[str]) -> Optional[np.ndarray]:
    """The dither :func:`compute_fbank` adds to ``utt`` (seeded by its id), in sample units of [-1, 1],
    so that a caller that computes fbank elsewhere (on the GPU, :func:`compute_fbank_batch`) adds
    the same noise; None when the config does not dither."""
    if cfg.dither == 0.0:
        return None
    return (_dither(num_samples, cfg, utt) / 32768.0).numpy()


def _dither(num_samples: int, cfg: FbankConfig, utt: Optional[str]) -> torch.Tensor:
    """Gaussian dither in Kaldi's 16-bit sample units, from a generator seeded by the utterance id."""
    import torch  # lazy, as in compute_fbank

    g = torch.Generator().manual_seed(zlib.crc32((utt or "").encode("utf-8")))
    return cfg.dither * torch.randn(num_samples, generator=g)
