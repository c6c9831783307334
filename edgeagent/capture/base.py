"""What audio capture produces and what a raw source must offer.

A raw source (microphone, command, file) delivers float32 frames
``[n, channels]`` at its own rate; :class:`~edgeagent.capture.audio.AudioCapture`
turns them into :class:`AudioBlock` s (16 kHz mono, timestamped) and reopens
sources that die, reporting each loss and recovery as a :class:`SourceEvent`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

from edgeagent.errors import AudioError

RATE = 16_000
"""Samples per second of every block leaving capture (the model's rate)."""


@dataclass(frozen=True)
class AudioBlock:
    """16 kHz mono float32 audio and where it sits on the capture timeline.

    The timeline counts 16 kHz samples from the moment capture started; it
    keeps counting through a source's outage, so after a reopen ``start``
    jumps by the gap.
    """

    pcm: np.ndarray = field(repr=False)  # [n] float32 in [-1, 1)
    start: int  # timeline index of pcm[0]
    captured_at: float  # time.monotonic() when the block arrived

    @property
    def start_s(self) -> float:
        """Timeline time of the first sample, seconds."""
        return self.start / RATE

    @property
    def end(self) -> int:
        """Timeline index just after the last sample."""
        return self.start + len(self.pcm)

    @property
    def end_s(self) -> float:
        """Timeline time just after the last sample, seconds."""
        return self.end / RATE


SourceEventKind = Literal["opened", "lost", "reopened", "ended"]
SourceMedium = Literal["audio", "camera"]


@dataclass(frozen=True)
class SourceEvent:
    """A change in a capture source's health (audio, or camera with ``medium="camera"``).

    ``opened``: first open; ``lost``: it died (``reason``), retry in
    ``retry_in_s``; ``reopened``: back after ``gap_s`` seconds of timeline
    lost; ``ended``: a finite source (a file) ran out.
    """

    kind: SourceEventKind
    source: str
    at_s: float  # timeline time, seconds
    reason: str = ""
    gap_s: float | None = None
    retry_in_s: float | None = None
    attempt: int = 0
    medium: SourceMedium = "audio"

    @property
    def event_type(self) -> str:
        """Name on ``<base>/event``: ``audio_source_lost``, ``camera_source_lost`` etc."""
        return f"{self.medium}_source_{self.kind}"

    def data(self) -> dict[str, Any]:
        """The event's JSON fields besides ``event_type``."""
        d: dict[str, Any] = {"source": self.source, "at_s": round(self.at_s, 3)}
        if self.reason:
            d["reason"] = self.reason
        if self.gap_s is not None:
            d["gap_s"] = round(self.gap_s, 3)
        if self.retry_in_s is not None:
            d["retry_in_s"] = round(self.retry_in_s, 3)
        if self.attempt:
            d["attempt"] = self.attempt
        return d


EventSink = Callable[[SourceEvent], None]

_LOGGER = logging.getLogger("edgeagent.capture")


def report(event: SourceEvent, sink: EventSink | None) -> None:
    """Log a source's health change (a loss as a warning) and hand it to ``sink``."""
    log = _LOGGER.warning if event.kind == "lost" else _LOGGER.info
    log("%s source %s: %s %s", event.medium, event.kind, event.source, event.reason)
    if sink is not None:
        sink(event)


@dataclass(frozen=True)
class ReopenPolicy:
    """When a lost source is opened again (seconds): delays double from ``backoff_initial_s``
    up to ``backoff_max_s``; a source that stayed up ``stable_s`` starts over at the first."""

    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    stable_s: float = 30.0

    def backoff(self, attempt: int) -> float:
        """Delay before reopen attempt ``attempt`` (1, 2, …): doubling, capped."""
        delay: float = self.backoff_initial_s * 2.0 ** max(0, attempt - 1)
        return min(self.backoff_max_s, delay)


class SourceEnded(AudioError):
    """A source stopped delivering audio (command exited, device unplugged); it may reopen."""


class RawSource(Protocol):
    """A device, program or file delivering interleaved audio at its own rate."""

    @property
    def name(self) -> str:
        """For logs and events, e.g. ``command arecord`` or ``file speech.wav``."""
        ...

    @property
    def rate(self) -> int:
        """Samples per second per channel (known once open)."""
        ...

    @property
    def channels(self) -> int:
        """Channels per frame (known once open)."""
        ...

    async def open(self) -> None:
        """Start delivering; raise :class:`AudioError` when that is impossible now."""

    async def read(self) -> np.ndarray | None:
        """The next frames ``[n, channels]`` float32; ``None`` at the end of a finite source.

        Raises :class:`SourceEnded` when the source dies.
        """

    async def close(self) -> None:
        """Release the device or process; safe to call more than once."""
