"""Resampling to 16 kHz and PCM conversions."""

from __future__ import annotations

import numpy as np
import pytest

from edgeagent.dsp.pcm import apply_gain, bytes_per_frame, decode, to_mono
from edgeagent.dsp.resample import Resampler
from edgeagent.errors import AudioError


def sine(rate: int, freq: float, seconds: float = 1.0, amp: float = 0.5) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * np.arange(round(rate * seconds)) / rate)).astype(
        np.float32
    )


def resample_all(r: Resampler, x: np.ndarray, cuts: np.ndarray | None = None) -> np.ndarray:
    parts = np.split(x, cuts) if cuts is not None else [x]
    return np.concatenate([*(r.process(p) for p in parts), r.flush()])


@pytest.mark.parametrize(
    ("rate", "freq"),
    [
        (r, f)
        for r in (8000, 22050, 44100, 48000)
        for f in (300.0, 1000.0, 3000.0, 6500.0)
        if f < 0.45 * r
    ],
)
def test_resampled_sine_is_clean(rate: int, freq: float) -> None:
    y = resample_all(Resampler(rate), sine(rate, freq))
    assert len(y) == 16000
    ref = sine(16000, freq)
    err = y[300:-300] - ref[300:-300]
    snr_db = 10 * np.log10(np.mean(ref[300:-300] ** 2) / np.mean(err**2))
    assert snr_db > 60, snr_db


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_any_split_gives_the_same_output(rate: int) -> None:
    x = np.random.default_rng(rate).standard_normal(rate // 2).astype(np.float32) * 0.1
    rng = np.random.default_rng(1)
    cuts = np.cumsum(rng.integers(0, 700, size=300))
    cuts = cuts[cuts < len(x)]
    whole = resample_all(Resampler(rate), x)
    np.testing.assert_array_equal(resample_all(Resampler(rate), x, cuts), whole)
    assert len(whole) == -(-len(x) * 16000 // rate)


def test_alias_rejection_and_passthrough() -> None:
    y = resample_all(Resampler(48000), sine(48000, 12000.0))  # above 8 kHz: must vanish
    assert np.sqrt(np.mean(y[300:-300] ** 2)) < 1e-3
    x = sine(16000, 440.0)
    r = Resampler(16000)
    assert r.process(x) is not None and np.array_equal(r.process(x), x)
    assert len(r.flush()) == 0
    with pytest.raises(AudioError):
        Resampler(0)


def test_delay_is_small() -> None:
    r = Resampler(48000)
    out = r.process(np.zeros(480, np.float32))  # 10 ms in
    assert len(out) >= 160 - 40  # at most ~2 ms held back
    assert r.delay_samples() / 48000 < 0.0025


def test_decode_formats() -> None:
    raw16 = np.array([0, 16384, -32768, 32767], "<i2").tobytes()
    np.testing.assert_allclose(decode(raw16, "S16_LE", 2), [[0, 0.5], [-1, 32767 / 32768]])
    raw32 = np.array([1 << 30], "<i4").tobytes()
    assert decode(raw32, "S32_LE", 1)[0, 0] == 0.5
    rawf = np.array([0.25, -0.75], "<f4").tobytes()
    np.testing.assert_array_equal(decode(rawf, "FLOAT_LE", 1)[:, 0], [0.25, -0.75])
    assert bytes_per_frame("S16_LE", 2) == 4
    with pytest.raises(AudioError, match="whole number"):
        decode(b"\x00\x01\x02", "S16_LE", 1)
    with pytest.raises(AudioError, match="unsupported sample format"):
        decode(b"", "U8", 1)


def test_channel_selection_and_gain() -> None:
    frames = np.array([[0.1, 0.3], [0.5, -0.5]], np.float32)
    np.testing.assert_allclose(to_mono(frames, None), [0.2, 0.0])
    np.testing.assert_allclose(to_mono(frames, 1), [0.3, -0.5])
    with pytest.raises(AudioError, match="channel 2"):
        to_mono(frames, 2)
    np.testing.assert_allclose(apply_gain(np.array([0.1], np.float32), 20.0), [1.0], rtol=1e-6)
    assert apply_gain(frames, 0.0) is frames
