"""Push-to-talk from a Linux input device: key down starts listening, key up stops.

Reads the kernel's ``struct input_event`` records (``struct timeval`` —
two C longs —, ``__u16 type``, ``__u16 code``, ``__s32 value``: 24 bytes on
64-bit boards) straight from ``/dev/input/event*``, without a library. Only
``EV_KEY`` events for the configured key count: value 1 is down, 0 up, 2
auto-repeat (ignored). A device that cannot be opened, or disappears (a
Bluetooth remote going to sleep), is retried with a capped backoff.
"""

from __future__ import annotations

import asyncio
import logging
import os
import struct
from collections.abc import Callable
from pathlib import Path

from edgeagent.errors import ConfigError

_LOGGER = logging.getLogger(__name__)
EVENT = struct.Struct("@llHHi")  # struct input_event, native layout
EV_KEY = 1
RETRY_INITIAL_S, RETRY_MAX_S = 1.0, 30.0

# linux/input-event-codes.h, the keys a push-to-talk button is likely to send
KEY_CODES = {
    "KEY_ESC": 1, "KEY_ENTER": 28, "KEY_LEFTCTRL": 29, "KEY_LEFTSHIFT": 42, "KEY_SPACE": 57,
    "KEY_F1": 59, "KEY_F2": 60, "KEY_F3": 61, "KEY_F4": 62, "KEY_F5": 63, "KEY_F6": 64,
    "KEY_F7": 65, "KEY_F8": 66, "KEY_F9": 67, "KEY_F10": 68, "KEY_F11": 87, "KEY_F12": 88,
    "KEY_MUTE": 113, "KEY_VOLUMEDOWN": 114, "KEY_VOLUMEUP": 115, "KEY_PAUSE": 119,
    "KEY_MICMUTE": 248, "KEY_F13": 183, "KEY_F14": 184, "KEY_F15": 185, "KEY_PLAYPAUSE": 164,
    "KEY_VOICECOMMAND": 0x246, "KEY_ASSISTANT": 0x247, "BTN_LEFT": 0x110, "BTN_RIGHT": 0x111,
    "BTN_MIDDLE": 0x112, "BTN_0": 0x100, "BTN_1": 0x101, "BTN_SOUTH": 0x130,
}  # fmt: skip


def key_code(name: str) -> int:
    """A key name from :data:`KEY_CODES` or a number (``57``, ``0x39``) → its code."""
    if name.upper() in KEY_CODES:
        return KEY_CODES[name.upper()]
    try:
        return int(name, 0)
    except ValueError:
        known = ", ".join(sorted(KEY_CODES))
        raise ConfigError(
            f"voice.push_to_talk_key: unknown key {name!r}; use a number or one of {known}"
        ) from None


class PushToTalkKey:
    """Calls ``on_change(down)`` when the key goes down or up."""

    def __init__(self, device: Path, key: str, on_change: Callable[[bool], None]) -> None:
        self.device = device
        self.code = key_code(key)
        self.on_change = on_change
        self._pending = b""

    async def run(self) -> None:
        delay = RETRY_INITIAL_S
        while True:
            try:
                fd = os.open(self.device, os.O_RDONLY | os.O_NONBLOCK)
            except OSError as exc:
                _LOGGER.warning("push-to-talk %s: %s; retry in %.0fs", self.device, exc, delay)
                await asyncio.sleep(delay)
                delay = min(RETRY_MAX_S, delay * 2)
                continue
            delay = RETRY_INITIAL_S
            try:
                await self._read(fd)
            finally:
                os.close(fd)
                self.on_change(False)  # a vanished key is a released key
            await asyncio.sleep(delay)

    async def _read(self, fd: int) -> None:
        """Until the device goes away (EOF or an error)."""
        loop = asyncio.get_running_loop()
        ready = asyncio.Event()
        loop.add_reader(fd, ready.set)
        try:
            while True:
                await ready.wait()
                ready.clear()
                try:
                    data = os.read(fd, EVENT.size * 64)
                except BlockingIOError:
                    continue
                except OSError as exc:
                    _LOGGER.warning("push-to-talk %s: %s", self.device, exc)
                    return
                if not data:
                    return
                self.feed(data)
        finally:
            loop.remove_reader(fd)

    def feed(self, data: bytes) -> None:
        """Parse whole ``input_event`` records (a partial one waits for the rest)."""
        data = self._pending + data
        whole = len(data) - len(data) % EVENT.size
        for _sec, _usec, kind, code, value in EVENT.iter_unpack(data[:whole]):
            if kind == EV_KEY and code == self.code and value in (0, 1):
                self.on_change(value == 1)
        self._pending = data[whole:]
