"""Fbank parity with torchaudio's Kaldi fbank, frame counts, config; CMVN stats vs numpy; kaldiio round-trips."""
import shutil
import subprocess
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.compliance.kaldi as kaldi

from justkit.config import ConfigError
from justkit.frontend.cmvn import (CmvnError, accumulate, apply_cmvn, compute_cmvn_stats, load_cmvn, read_cmvn,
                               stats_to_mean_std, write_cmvn)
from justkit.frontend.fbank import FbankConfig, FbankError, compute_fbank, load_fbank_config, num_frames
from justkit.frontend.resample import resample

ROOT = Path(__file__).resolve().parents[2]


def speech_like(n, seed=0, sr=16000):
    """Voiced segments (120-220 Hz pulse train through two resonances), noise bursts and silence."""
    rng = np.random.default_rng(seed)
    x = np.zeros(n)
    pos = 0
    while pos < n:
        seg = int(rng.integers(800, 4000))
        kind = rng.integers(3)
        if kind == 0:
            f0 = rng.uniform(120, 220)
            t = np.arange(seg) / sr
            src = np.sign(np.sin(2 * np.pi * f0 * t)) * (np.sin(2 * np.pi * f0 * t) > 0.95)
            for fc in rng.uniform([400, 1200], [900, 2500]):
                k = np.exp(-np.arange(200) / 30.0) * np.sin(2 * np.pi * fc * np.arange(200) / sr)
                src = src + 0.5 * np.convolve(src, k)[:seg]
            x[pos:pos + seg] = 0.3 * src[: n - pos] / (np.abs(src).max() + 1e-9)
        elif kind == 1:
            x[pos:pos + seg] = 0.05 * rng.standard_normal(min(seg, n - pos))
        pos += seg
    return (x + 1e-4 * rng.standard_normal(n)).astype(np.float32)


@pytest.fixture(scope="module")
def espeak_speech(tmp_path_factory):
    if not shutil.which("espeak-ng"):
        pytest.skip("espeak-ng not installed")
    wav = tmp_path_factory.mktemp("espeak") / "s.wav"
    subprocess.run(["espeak-ng", "-w", str(wav), "the quick brown fox jumps over the lazy dog"], check=True)
    x, sr = sf.read(wav, dtype="float32")
    return resample(x, sr, 16000)


def reference(x, **kw):
    """torchaudio's Kaldi fbank with every option spelled out (the stage must match it)."""
    opts = dict(sample_frequency=16000.0, frame_length=25.0, frame_shift=10.0, num_mel_bins=80, low_freq=20.0,
                high_freq=0.0, dither=0.0, preemphasis_coefficient=0.97, remove_dc_offset=True,
                window_type="povey", round_to_power_of_two=True, snip_edges=True, raw_energy=True,
                energy_floor=1.0, use_energy=False)
    opts.update(kw)
    return kaldi.fbank(torch.from_numpy(x).unsqueeze(0) * 32768.0, **opts).numpy()


@pytest.mark.parametrize("n", [400, 401, 559, 560, 4000, 16000, 48173])
def test_parity_with_torchaudio_kaldi_fbank(n):
    cfg = load_fbank_config(ROOT / "egs/mls/conf/fbank.yaml")
    x = speech_like(n, seed=n)
    out = compute_fbank(x, cfg, 16000, "u")
    ref = reference(x)
    assert out.shape == ref.shape == (num_frames(n, cfg), 80) and out.dtype == np.float32
    np.testing.assert_allclose(out, ref, atol=1e-3, rtol=0)


def test_parity_on_espeak_speech(espeak_speech):
    cfg = FbankConfig()
    np.testing.assert_allclose(compute_fbank(espeak_speech, cfg), reference(espeak_speech), atol=1e-3, rtol=0)


@pytest.mark.parametrize("kw,ref_kw", [
    (dict(snip_edges=False), dict(snip_edges=False)),
    (dict(use_energy=True, num_mel_bins=40), dict(use_energy=True, num_mel_bins=40)),
    (dict(window_type="hamming", low_freq=60.0, high_freq=-400.0), dict(window_type="hamming", low_freq=60.0,
                                                                        high_freq=-400.0)),
    (dict(frame_length_ms=20.0, frame_shift_ms=12.5, preemphasis_coefficient=0.0),
     dict(frame_length=20.0, frame_shift=12.5, preemphasis_coefficient=0.0)),
])
def test_options_reach_torchaudio(kw, ref_kw):
    cfg = FbankConfig(**kw)
    x = speech_like(7777, seed=3)
    out = compute_fbank(x, cfg)
    ref = reference(x, **ref_kw)
    assert out.shape == ref.shape and out.shape[0] == num_frames(7777, cfg) and out.shape[1] == cfg.dim
    np.testing.assert_allclose(out, ref, atol=1e-3, rtol=0)


def test_tone_energy_lands_in_its_mel_bin():
    # Hand check, independent of torchaudio: Kaldi's mel bin k is centred at
    # mel_low + (k+1) * (mel_high - mel_low) / (N+1); a 1 kHz tone peaks at the nearest one.
    cfg = FbankConfig()
    x = (0.5 * np.sin(2 * np.pi * 1000 * np.arange(16000) / 16000)).astype(np.float32)
    feats = compute_fbank(x, cfg)
    mel = lambda f: 1127.0 * np.log(1 + f / 700.0)  # noqa: E731
    centres = mel(20.0) + (np.arange(80) + 1) * (mel(8000.0) - mel(20.0)) / 81
    assert abs(int(np.argmax(feats.mean(0))) - int(np.argmin(np.abs(centres - mel(1000.0))))) <= 1


def test_too_short_and_wrong_rate_are_errors_naming_the_utterance():
    cfg = FbankConfig()
    with pytest.raises(FbankError, match=r"utterance u7: 399 samples is shorter than one 25 ms frame"):
        compute_fbank(np.zeros(399, np.float32), cfg, 16000, "u7")
    with pytest.raises(FbankError, match=r"utterance u8: audio is 48000 Hz"):
        compute_fbank(np.zeros(4000, np.float32), cfg, 48000, "u8")


def test_dither_is_reproducible_per_utterance():
    cfg = FbankConfig(dither=1.0)
    x = speech_like(8000, seed=5)
    a, b, c = compute_fbank(x, cfg, utt="a"), compute_fbank(x, cfg, utt="a"), compute_fbank(x, cfg, utt="b")
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.abs(a - compute_fbank(x, FbankConfig())).max() > 0


def test_config_file_and_unknown_keys(tmp_path):
    cfg = load_fbank_config(ROOT / "egs/mls/conf/fbank.yaml", {"num_mel_bins": 40})
    assert cfg.num_mel_bins == 40 and cfg.frame_shift_ms == 10.0 and cfg.dim == 40
    bad = tmp_path / "f.yaml"
    bad.write_text("fbank:\n  num_mel_bin: 80\n")
    with pytest.raises(ConfigError, match="num_mel_bin"):
        load_fbank_config(bad)
    with pytest.raises(ValueError, match="window_type"):
        FbankConfig(window_type="hann")


# ---- CMVN ----

def write_feats(tmp_path, mats):
    with kaldiio.WriteHelper(f"ark,scp:{tmp_path}/f.ark,{tmp_path}/feats.scp") as w:
        for k, m in mats.items():
            w(k, m)
    return tmp_path / "feats.scp"


def test_cmvn_stats_match_numpy(tmp_path):
    rng = np.random.default_rng(0)
    mats = {f"u{i}": (rng.standard_normal((rng.integers(1, 300), 80)) * 3 + 5).astype(np.float32)
            for i in range(7)}
    stats = compute_cmvn_stats(write_feats(tmp_path, mats))
    allf = np.concatenate(list(mats.values())).astype(np.float64)
    assert stats.shape == (2, 81) and stats.dtype == np.float64
    np.testing.assert_allclose(stats[0, :80], allf.sum(0), rtol=1e-10)
    np.testing.assert_allclose(stats[1, :80], (allf ** 2).sum(0), rtol=1e-10)
    assert stats[0, 80] == len(allf) and stats[1, 80] == 0
    mean, std = stats_to_mean_std(stats)
    np.testing.assert_allclose(mean, allf.mean(0), rtol=1e-9)
    np.testing.assert_allclose(std, allf.std(0), rtol=1e-6)
    np.testing.assert_array_equal(accumulate(mats.values()), stats)

    # kaldiio round-trip (Kaldi binary matrix, no key) and the loader's view.
    write_cmvn(tmp_path / "cmvn.ark", stats)
    np.testing.assert_array_equal(read_cmvn(tmp_path / "cmvn.ark"), stats)
    np.testing.assert_array_equal(kaldiio.load_mat(str(tmp_path / "cmvn.ark")), stats)
    m, s = load_cmvn(tmp_path / "cmvn.ark")
    assert m.dtype == torch.float32 and m.shape == (80,)
    normed = apply_cmvn(torch.from_numpy(allf).float(), m, s)
    np.testing.assert_allclose(normed.mean(0).numpy(), 0, atol=1e-4)
    np.testing.assert_allclose(normed.std(0, unbiased=False).numpy(), 1, atol=1e-4)


def test_cmvn_constant_dim_is_floored_not_nan():
    stats = accumulate([np.ones((10, 3))])
    mean, std = stats_to_mean_std(stats)
    assert np.all(np.isfinite(std)) and np.all(std > 0)


def test_cmvn_errors_name_file_and_utterance(tmp_path):
    scp = write_feats(tmp_path, {"a": np.zeros((3, 4), np.float32), "b": np.zeros((3, 5), np.float32)})
    with pytest.raises(CmvnError, match=r"feats.scp: utterance b: dim 5 != 4"):
        compute_cmvn_stats(scp)
    (tmp_path / "bad.scp").write_text(f"c {tmp_path}/f.ark:999999\n")
    with pytest.raises(CmvnError, match=r"bad.scp: utterance c: cannot read features"):
        compute_cmvn_stats(tmp_path / "bad.scp")
    with pytest.raises(CmvnError, match="not found"):
        read_cmvn(tmp_path / "none.ark")
    kaldiio.save_mat(str(tmp_path / "wrong.ark"), np.zeros((3, 5)))
    with pytest.raises(CmvnError, match=r"2 x \(D\+1\)"):
        read_cmvn(tmp_path / "wrong.ark")


@pytest.mark.parametrize("opts", [
    {},
    {"window_type": "hamming", "preemphasis_coefficient": 0.0, "remove_dc_offset": False},
    {"use_power": False, "num_mel_bins": 40, "low_freq": 60.0, "high_freq": -400.0},
    {"round_to_power_of_two": False, "window_type": "blackman"},
    {"snip_edges": False},   # falls back to torchaudio per row
    {"use_energy": True},    # idem
])
def test_batched_fbank_equals_per_utterance(opts):
    """compute_fbank_batch (the GPU path of data.features_on device) gives, row by row, what
    compute_fbank gives each utterance: within 1e-4 absolute in log-mel (float rounding of
    the batched FFT/matmul; measured <= 2e-6 on CPU), with zeros past each row's frames."""
    import torch

    from justkit.frontend.fbank import FbankConfig, compute_fbank, compute_fbank_batch, num_frames

    cfg = FbankConfig(**opts)
    rng = np.random.default_rng(0)
    lens = [16000, 12345, 400, 401, 8000, 1999]
    waves = [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in lens]
    batch = torch.zeros(len(waves), max(lens))
    for i, w in enumerate(waves):
        batch[i, : len(w)] = torch.from_numpy(w)
    feats, frames = compute_fbank_batch(batch, torch.tensor(lens), cfg)
    assert frames.tolist() == [num_frames(n, cfg) for n in lens]
    for i, w in enumerate(waves):
        ref = compute_fbank(w, cfg)
        n = ref.shape[0]
        np.testing.assert_allclose(feats[i, :n].numpy(), ref, atol=1e-4, rtol=0)
        assert not feats[i, n:].any()


def test_batched_fbank_dither_noise_is_compute_fbanks():
    """dither_noise gives the noise compute_fbank adds for an utterance: adding it to the waveform
    (as the device path's loader does) reproduces the dithered features."""
    import torch

    from justkit.frontend.fbank import FbankConfig, compute_fbank, compute_fbank_batch, dither_noise

    cfg = FbankConfig(dither=1.0)
    x = (0.05 * np.random.default_rng(1).standard_normal(8000)).astype(np.float32)
    y = x + dither_noise(len(x), cfg, "utt1")
    feats, _ = compute_fbank_batch(torch.from_numpy(y)[None], torch.tensor([len(y)]), cfg)
    ref = compute_fbank(x, cfg, utt="utt1")
    np.testing.assert_allclose(feats[0].numpy(), ref, atol=1e-3, rtol=0)
    assert np.abs(ref - compute_fbank(x, FbankConfig(), utt="utt1")).max() > 1e-2  # the dither matters
