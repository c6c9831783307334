"""The ``file`` audio source: a PCM WAV file, paced in real time or as fast as possible.

Reads 8-bit unsigned and 16/24/32-bit signed integer PCM, any rate and
channel count (capture resamples and picks the channel). Real-time pacing
hands each block over when its last sample "would have been recorded"; with
``loop`` the file starts over at its end, otherwise the source ends.
"""

from __future__ import annotations

import asyncio
import time
import wave
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np

from edgeagent.errors import AudioError

F32 = np.float32
Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


def pcm_to_float(raw: bytes, sample_width: int, channels: int) -> np.ndarray:
    """WAV sample bytes -> float32 ``[frames, channels]`` in [-1, 1)."""
    if sample_width == 1:
        x = (np.frombuffer(raw, np.uint8).astype(F32) - F32(128.0)) / F32(128.0)
    elif sample_width == 2:
        x = np.frombuffer(raw, "<i2").astype(F32) / F32(32768.0)
    elif sample_width == 3:
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        x = (np.where(v >= 1 << 23, v - (1 << 24), v)).astype(F32) / F32(1 << 23)
    elif sample_width == 4:
        x = np.frombuffer(raw, "<i4").astype(F32) / F32(2**31)
    else:
        raise AudioError(f"unsupported WAV sample width {sample_width} bytes")
    return x.reshape(-1, channels)


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """A whole WAV file: ``(float32 [frames, channels], rate)``."""
    try:
        with wave.open(str(path), "rb") as w:
            raw = w.readframes(w.getnframes())
            return pcm_to_float(raw, w.getsampwidth(), w.getnchannels()), w.getframerate()
    except (OSError, EOFError, wave.Error) as exc:
        raise AudioError(f"{path}: cannot read WAV: {exc}") from exc


def write_wav(path: str | Path, pcm: np.ndarray, rate: int = 16_000) -> None:
    """Write mono float audio as 16-bit PCM (clipped to full scale)."""
    data = np.clip(np.round(np.asarray(pcm, np.float64) * 32768.0), -32768, 32767)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(data.astype("<i2").tobytes())


class WavFileSource:
    """Blocks of ``block_ms`` from a WAV file."""

    def __init__(
        self,
        path: str | Path,
        block_ms: float = 20.0,
        realtime: bool = True,
        loop: bool = False,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.path = Path(path)
        self.block_ms, self.realtime, self.loop = block_ms, realtime, loop
        self._clock, self._sleep = clock, sleep
        self._wav: wave.Wave_read | None = None
        self._rate = self._channels = self._width = 0
        self._started = 0.0
        self._delivered = 0  # frames handed out since open (pacing)

    @property
    def name(self) -> str:
        return f"file {self.path}"

    @property
    def rate(self) -> int:
        return self._rate

    @property
    def channels(self) -> int:
        return self._channels

    async def open(self) -> None:
        try:
            wav = wave.open(str(self.path), "rb")  # noqa: SIM115 - held open until close()
        except (OSError, EOFError, wave.Error) as exc:
            raise AudioError(f"{self.path}: cannot read WAV: {exc}") from exc
        self._wav = wav
        self._rate, self._channels, self._width = (
            wav.getframerate(), wav.getnchannels(), wav.getsampwidth(),
        )  # fmt: skip
        if self._width not in (1, 2, 3, 4):
            raise AudioError(f"{self.path}: unsupported sample width {self._width} bytes")
        self._started, self._delivered = self._clock(), 0

    async def read(self) -> np.ndarray | None:
        wav = self._wav
        if wav is None:
            raise AudioError(f"{self.path} is not open")
        n = max(1, round(self._rate * self.block_ms / 1000.0))
        raw = wav.readframes(n)
        if not raw and self.loop and wav.getnframes() > 0:
            wav.rewind()
            raw = wav.readframes(n)
        if not raw:
            return None
        frames = pcm_to_float(raw, self._width, self._channels)
        self._delivered += len(frames)
        if self.realtime:
            due = self._started + self._delivered / self._rate
            delay = due - self._clock()
            if delay > 0:
                await self._sleep(delay)
        return frames

    async def close(self) -> None:
        wav, self._wav = self._wav, None
        if wav is not None:
            wav.close()
