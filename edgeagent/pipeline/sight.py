"""What the camera last showed the model: the gate, the newest encoded frame, and looking.

:class:`Sight` outlives vision stage restarts (it lives in
:class:`~edgeagent.pipeline.service.AssistantService`). The vision stage
offers frames to :attr:`Sight.gate`, numbers each frame it sends on
(:meth:`Sight.sent`) and hands over its soft tokens once encoded
(:meth:`Sight.encoded`); ``cmd/ask`` with ``"look": true`` calls
:meth:`Sight.look`, which asks the gate for the next frame and waits for its
soft tokens. Everything here runs on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import numpy as np

from edgeagent.dsp.frame_gate import FrameGate
from edgeagent.errors import VisionError
from edgeagent.settings import CameraSettings

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class SeenFrame:
    """A frame the gate sent on, encoded: its id (as published), where it was, its soft tokens."""

    frame_id: str
    index: int  # CameraCapture's frame index
    at_s: float  # capture timeline, s
    reason: str  # the gate's: first, scene_change, request, interval
    sent: int  # Sight.sent() number: frames sent on before it, plus one
    tokens: np.ndarray = field(repr=False)  # [256, text_hidden] float32


class NoSight(VisionError):
    """``look`` cannot be served; ``code`` is the ``error`` event's code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class Sight:
    """See the module docstring."""

    def __init__(self, settings: CameraSettings) -> None:
        self.settings = settings
        self.gate = FrameGate(settings.gate_threshold, settings.gate_interval_s or None)
        self.latest: SeenFrame | None = None
        self.sent_count = 0  # frames the gate sent on since start-up
        self._why_not: str | None = "the camera is off (camera.enabled = false)"
        self._waiters: list[tuple[int, asyncio.Future[SeenFrame]]] = []

    # -- the vision stage's side -----------------------------------------------------------
    def capturing(self) -> None:
        """Frames are coming: ``look`` waits for the next one."""
        self._why_not = None

    def unavailable(self, why: str) -> None:
        """No frames will come (no encoder, no OpenCV, the file ended): ``look`` fails at once,
        and those waiting now too."""
        self._why_not = why
        for _, future in self._waiters:
            if not future.done():
                future.set_exception(NoSight("no_camera", why))
        self._waiters.clear()

    def sent(self) -> int:
        """Number a frame the gate just sent on (1, 2, …)."""
        self.sent_count += 1
        return self.sent_count

    def encoded(self, seen: SeenFrame) -> None:
        """A sent frame's soft tokens are ready: keep it, wake the looks it answers (those that
        asked before it was sent)."""
        self.latest = seen
        waiting = []
        for after, future in self._waiters:
            if future.done():
                continue
            if seen.sent > after:
                future.set_result(seen)
            else:
                waiting.append((after, future))
        self._waiters = waiting

    # -- cmd/ask's side --------------------------------------------------------------------
    async def look(self, timeout_s: float) -> SeenFrame:
        """The next frame the gate sends on (asked for now), encoded.

        Raises :class:`NoSight` at once when no camera frames come, or after
        ``timeout_s`` without one.
        """
        if self._why_not is not None:
            raise NoSight("no_camera", f"cannot look: {self._why_not}")
        future: asyncio.Future[SeenFrame] = asyncio.get_running_loop().create_future()
        self._waiters.append((self.sent_count, future))
        self.gate.request()
        try:
            async with asyncio.timeout(timeout_s):
                return await future
        except TimeoutError:
            raise NoSight(
                "no_camera",
                f"cannot look: no camera frame within {timeout_s:g} s (camera.look_timeout_s)",
            ) from None
        finally:
            self._waiters = [(a, f) for a, f in self._waiters if f is not future]
