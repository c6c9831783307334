"""Seeded noise for VAD tests and measurements: stationary colours and harder cases.

Every generator returns float32 at 16 kHz scaled to an RMS level in dBFS.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

RATE = 16_000
Generator = Callable[[int, np.random.Generator], np.ndarray]


def _scaled(x: np.ndarray, dbfs: float) -> np.ndarray:
    x = x - x.mean()
    return (x * (10 ** (dbfs / 20) / np.sqrt(np.mean(x**2)))).astype(np.float32)


def _coloured(n: int, rng: np.random.Generator, exponent: float) -> np.ndarray:
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / RATE)
    spectrum[1:] /= freqs[1:] ** (exponent / 2)
    spectrum[0] = 0
    return np.fft.irfft(spectrum, n)


def white(n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.standard_normal(n)


def pink(n: int, rng: np.random.Generator) -> np.ndarray:
    return _coloured(n, rng, 1.0)


def brown(n: int, rng: np.random.Generator) -> np.ndarray:
    return _coloured(n, rng, 2.0)


def hum(n: int, rng: np.random.Generator) -> np.ndarray:
    """Mains hum (50 Hz and harmonics) over faint white noise."""
    t = np.arange(n) / RATE
    tone = sum(np.sin(2 * np.pi * 50 * k * t + rng.uniform(0, 6.3)) / k for k in range(1, 8))
    return tone + 0.05 * rng.standard_normal(n)


def fluctuating(n: int, rng: np.random.Generator) -> np.ndarray:
    """Pink noise whose level wanders ±6 dB a few times a second (traffic, wind)."""
    t = np.arange(n) / RATE
    envelope_db = 6 * np.sin(2 * np.pi * 0.3 * t) * np.sin(2 * np.pi * 0.07 * t + 1)
    return pink(n, rng) * 10 ** (envelope_db / 20)


def stepped(n: int, rng: np.random.Generator) -> np.ndarray:
    """White noise that jumps ±6 dB every 7.5 s (a fan switching speed, a door opening)."""
    levels = np.repeat(rng.choice([-6.0, 0.0, 6.0], size=n // (RATE * 15 // 2) + 1), RATE * 15 // 2)
    return rng.standard_normal(n) * 10 ** (levels[:n] / 20)


NOISES: dict[str, Generator] = {
    "white": white,
    "pink": pink,
    "brown": brown,
    "hum": hum,
    "fluctuating": fluctuating,
    "stepped": stepped,
}


def noise(kind: str, seconds: float, dbfs: float, seed: int = 0) -> np.ndarray:
    """``seconds`` of noise ``kind`` at ``dbfs`` RMS."""
    n = round(seconds * RATE)
    return _scaled(NOISES[kind](n, np.random.default_rng(seed)), dbfs)
