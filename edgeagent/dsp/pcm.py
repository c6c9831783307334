"""Raw PCM to float: sample formats, channel selection, gain.

Capture sources deliver interleaved integer or float samples; everything
downstream works on float32 in [-1, 1) (int16 / 32768, like the reference
processor's input).
"""

from __future__ import annotations

import numpy as np

from edgeagent.errors import AudioError

F32 = np.float32

SAMPLE_FORMATS: dict[str, tuple[str, float]] = {
    # ALSA name: (numpy dtype, full scale)
    "S16_LE": ("<i2", 32768.0),
    "S32_LE": ("<i4", 2147483648.0),
    "FLOAT_LE": ("<f4", 1.0),
}


def bytes_per_frame(sample_format: str, channels: int) -> int:
    """Bytes of one frame (one sample of every channel)."""
    return np.dtype(_format(sample_format)[0]).itemsize * channels


def decode(raw: bytes, sample_format: str, channels: int) -> np.ndarray:
    """Interleaved PCM bytes -> float32 ``[frames, channels]`` (whole frames only)."""
    dtype, scale = _format(sample_format)
    frame = bytes_per_frame(sample_format, channels)
    if len(raw) % frame:
        raise AudioError(f"{len(raw)} bytes is not a whole number of {frame}-byte frames")
    samples = np.frombuffer(raw, dtype=dtype).astype(F32)
    if scale != 1.0:
        samples *= F32(1.0 / scale)
    return samples.reshape(-1, channels)


def to_mono(frames: np.ndarray, channel: int | None) -> np.ndarray:
    """``[n, channels] -> [n]``: the channel numbered ``channel`` (from 0), or the mean of all."""
    if frames.ndim == 1:
        return frames
    if channel is None:
        n = frames.shape[1]
        return frames @ np.full(n, 1.0 / n, F32) if n > 1 else frames[:, 0]  # the mean
    if not 0 <= channel < frames.shape[1]:
        raise AudioError(f"channel {channel} does not exist; the source has {frames.shape[1]}")
    return frames[:, channel]


def apply_gain(x: np.ndarray, gain_db: float) -> np.ndarray:
    """``x · 10^(gain_db/20)`` (no clipping: float samples may exceed 1)."""
    if gain_db == 0.0:
        return x
    return x * F32(10.0 ** (gain_db / 20.0))


def _format(sample_format: str) -> tuple[str, float]:
    try:
        return SAMPLE_FORMATS[sample_format]
    except KeyError:
        raise AudioError(
            f"unsupported sample format {sample_format!r}; use one of {', '.join(SAMPLE_FORMATS)}"
        ) from None
