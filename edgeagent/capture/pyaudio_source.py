"""The ``pyaudio`` audio source: a PortAudio input device (the optional ``audio`` extra).

The device is chosen by index (``"2"``), by a case-insensitive substring of
its name (``"USB"``), or ``"default"``. Reads block in a worker thread, so
the event loop never waits on the device; an unplugged device surfaces as
:class:`SourceEnded` and the capture supervisor reopens it.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from types import ModuleType
from typing import Any

import numpy as np

from edgeagent.capture.base import SourceEnded
from edgeagent.dsp.pcm import decode
from edgeagent.errors import AudioError

_LOGGER = logging.getLogger(__name__)


def _load_pyaudio() -> ModuleType:
    try:
        return importlib.import_module("pyaudio")
    except ImportError as exc:
        raise AudioError(
            "the pyaudio source needs PyAudio: pip install 'edgeagent[audio]' "
            "(and PortAudio, e.g. apt-get install portaudio19-dev); or use the command source"
        ) from exc


def find_input_device(pa: Any, device: str) -> int | None:
    """PortAudio device index for ``device`` (index, name substring or "default")."""
    if device == "default":
        return None
    inputs = [
        (i, str(info.get("name", "")))
        for i in range(pa.get_device_count())
        if (info := pa.get_device_info_by_index(i)).get("maxInputChannels", 0) > 0
    ]
    if device.isdigit():
        index = int(device)
        if any(i == index for i, _ in inputs):
            return index
    else:
        for i, name in inputs:
            if device.lower() in name.lower():
                return i
    names = ", ".join(f"{i}: {n}" for i, n in inputs) or "none"
    raise AudioError(f"no input device {device!r}; input devices: {names}")


class PyAudioSource:
    """16-bit input from a PortAudio device."""

    def __init__(
        self,
        device: str,
        rate: int,
        channels: int = 1,
        block_frames: int = 320,
        module: ModuleType | None = None,
    ) -> None:
        self.device = device
        self._rate, self._channels, self.block_frames = rate, channels, block_frames
        self._module = module
        self._pa: Any = None
        self._stream: Any = None

    @property
    def name(self) -> str:
        return f"pyaudio {self.device}"

    @property
    def rate(self) -> int:
        return self._rate

    @property
    def channels(self) -> int:
        return self._channels

    async def open(self) -> None:
        pyaudio = self._module or _load_pyaudio()
        self._pa = pyaudio.PyAudio()
        try:
            index = find_input_device(self._pa, self.device)
            self._stream = self._pa.open(
                format=pyaudio.paInt16,
                channels=self._channels,
                rate=self._rate,
                input=True,
                input_device_index=index,
                frames_per_buffer=self.block_frames,
            )
        except OSError as exc:
            await self.close()
            raise SourceEnded(f"cannot open input device {self.device!r}: {exc}") from exc
        except AudioError:
            await self.close()
            raise
        _LOGGER.info("opened input device %r at %d Hz", self.device, self._rate)

    async def read(self) -> np.ndarray | None:
        stream = self._stream
        if stream is None:
            raise SourceEnded(f"{self.name} is not open")
        try:
            raw = await asyncio.to_thread(stream.read, self.block_frames, False)
        except OSError as exc:  # PortAudio: device unavailable, unplugged, …
            raise SourceEnded(f"input device {self.device!r}: {exc}") from exc
        return decode(raw, "S16_LE", self._channels)

    async def close(self) -> None:
        stream, self._stream = self._stream, None
        pa, self._pa = self._pa, None
        if stream is not None:
            try:
                stream.stop_stream()
                stream.close()
            except OSError:
                _LOGGER.debug("closing %s failed", self.name, exc_info=True)
        if pa is not None:
            pa.terminate()
