"""Resampling quality (passband, stopband), length rule, kernel cache, and audio I/O errors."""
import math
import os

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.functional as F

from justkit.frontend.audio import AudioError, audio_info, load_audio, save_flac
from justkit.frontend.resample import ResampleConfig, get_resampler, output_length, resample


def tone(freq, sr=48000, seconds=1.0, amp=0.5):
    t = np.arange(int(sr * seconds)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def rms_db(x, trim=500):
    x = np.asarray(x, dtype=np.float64)[trim:-trim]  # skip the filter's edge transients
    return 10 * math.log10(np.mean(x * x))


def test_1khz_tone_passes_within_0p1_db():
    x = tone(1000)
    y = resample(x, 48000, 16000)
    assert abs(rms_db(y) - rms_db(x)) < 0.1


@pytest.mark.parametrize("freq", [12000, 9000])
def test_tones_above_new_nyquist_suppressed_60db(freq):
    x = tone(freq)
    y = resample(x, 48000, 16000)
    assert rms_db(x) - rms_db(y) >= 60.0


def test_torchaudio_default_filter_misses_the_stopband_target():
    # Why ResampleConfig is not torchaudio's default: its Hann window leaks more than -60 dB.
    x = torch.from_numpy(tone(12000))
    y = F.resample(x, 48000, 16000).numpy()
    assert rms_db(x.numpy()) - rms_db(y) < 60.0


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 299, 300, 301, 48000, 48001, 48002])
def test_length_rule_ceil_n_over_3(n):
    y = resample(np.random.default_rng(n).standard_normal(n).astype(np.float32), 48000, 16000)
    assert len(y) == output_length(n, 48000, 16000) == -(-n // 3)


@pytest.mark.parametrize("orig,new,n", [(44100, 16000, 44100), (22050, 16000, 1001), (8000, 16000, 801),
                                        (16000, 16000, 37)])
def test_other_ratios(orig, new, n):
    x = np.random.default_rng(0).standard_normal(n).astype(np.float32)
    y = resample(x, orig, new)
    assert len(y) == math.ceil(n * new / orig) and y.dtype == np.float32


def test_upsampled_tone_keeps_frequency():
    x = tone(1000, sr=8000)
    y = resample(x, 8000, 16000)
    spec = np.abs(np.fft.rfft(y))
    assert abs(np.argmax(spec) * 16000 / len(y) - 1000) < 2


def test_kernel_cached_per_rate_pair():
    a = get_resampler(48000, 16000)
    assert get_resampler(48000, 16000) is a
    assert get_resampler(44100, 16000) is not a
    assert get_resampler(48000, 16000, ResampleConfig(lowpass_filter_width=8)) is not a


def test_matches_torchaudio_functional_with_same_filter():
    cfg = ResampleConfig()
    x = np.random.default_rng(1).standard_normal(4801).astype(np.float32)
    ref = F.resample(torch.from_numpy(x), 48000, 16000, lowpass_filter_width=cfg.lowpass_filter_width,
                     rolloff=cfg.rolloff, resampling_method="sinc_interp_kaiser", beta=cfg.beta).numpy()
    np.testing.assert_allclose(resample(x, 48000, 16000), ref, atol=1e-6)


# ---- audio I/O ----

def test_flac_and_opus_roundtrip(tmp_path):
    x = tone(440, sr=16000, seconds=0.5)
    assert save_flac(tmp_path / "a.flac", x, 16000) == 0
    y, sr = load_audio(tmp_path / "a.flac", "u1")
    assert sr == 16000 and y.dtype == np.float32 and y.shape == x.shape
    assert np.max(np.abs(y - x)) < 1.0 / 32768 + 1e-6
    assert audio_info(tmp_path / "a.flac") == (len(x), 16000, 1)
    sf.write(tmp_path / "b.opus", tone(440, seconds=0.3), 48000, format="OGG", subtype="OPUS")
    z, sr = load_audio(tmp_path / "b.opus", "u2")
    assert sr == 48000 and len(z) == 14400
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write left no temp file


def test_save_flac_clips_instead_of_wrapping(tmp_path):
    x = np.array([0.0, 1.5, -2.0, 0.5] * 100, dtype=np.float32)
    assert save_flac(tmp_path / "c.flac", x, 16000) == 200
    y, _ = load_audio(tmp_path / "c.flac")
    assert y[1] > 0.99 and y[2] < -0.99


def test_multichannel_average_or_error(tmp_path):
    st = np.stack([tone(440, 16000, 0.1), np.zeros(1600, np.float32)], axis=1)
    sf.write(tmp_path / "st.wav", st, 16000, subtype="FLOAT")
    y, _ = load_audio(tmp_path / "st.wav", "s1")
    np.testing.assert_allclose(y, st.mean(axis=1), atol=1e-7)
    with pytest.raises(AudioError, match=r"st.wav: utterance s1: has 2 channels"):
        load_audio(tmp_path / "st.wav", "s1", multichannel="error")


@pytest.mark.parametrize("case,match", [
    ("missing", "file not found"),
    ("empty", r"empty file \(0 bytes\)"),
    ("corrupt", "unreadable or corrupt audio"),
    ("truncated", "unreadable or corrupt|no audio samples"),
    ("zero", "no audio samples"),
    ("one", r"only 1 sample"),
    ("nan", "NaN or infinite"),
    ("dir", "is a directory"),
])
def test_bad_audio_errors_name_file_and_utt(tmp_path, case, match):
    p = tmp_path / f"{case}.flac"
    if case == "empty":
        p.write_bytes(b"")
    elif case == "corrupt":
        p.write_bytes(b"fLaC" + os.urandom(300))
    elif case == "truncated":
        save_flac(tmp_path / "full.flac", tone(300, 16000, 1.0), 16000)
        p.write_bytes((tmp_path / "full.flac").read_bytes()[:60])
    elif case in ("zero", "one"):
        p = tmp_path / f"{case}.wav"
        sf.write(p, np.zeros(0 if case == "zero" else 1, np.float32), 16000)
    elif case == "nan":
        p = tmp_path / "nan.wav"
        sf.write(p, np.array([0.1, np.nan, 0.2], np.float32), 16000, subtype="FLOAT")
    elif case == "dir":
        p.mkdir()
    with pytest.raises(AudioError, match=match) as ei:
        load_audio(p, utt=f"utt_{case}")
    assert str(p) in str(ei.value) and f"utt_{case}" in str(ei.value)
