"""Camera capture: frames from any raw source, capped in rate, newest first, reopened when lost.

A raw :class:`FrameSource` (a V4L2 device, a network stream, a video file, a
folder of images; see ``camera_opencv``) is synchronous, because OpenCV
blocks: ``grab`` takes the next frame without decoding it where the backend
allows, ``retrieve`` decodes the grabbed one to RGB within the size cap.
:class:`CameraCapture` reads each open source in a thread of its own, so
the event loop never waits on a camera, and hands frames over through a
one-frame mailbox:

- Rate cap: a frame is decoded only when it is due (``max_fps``); the
  others are grabbed and skipped, which for a V4L2 camera costs no decode.
- Back-pressure (DESIGN §1): live sources (devices, streams) and files paced
  in real time keep only the newest decoded frame; an older one not yet
  taken is dropped (counted in ``dropped``). A file read as fast as
  possible (``realtime=False``) is lossless instead: the reader waits until
  the consumer has taken each frame.
- A source that fails to open or dies (device unplugged, stream ended or
  broken) is closed and reopened after a capped exponential backoff, each
  loss and recovery reported as a :class:`~edgeagent.capture.base.SourceEvent`
  with ``medium="camera"`` (``camera_source_lost`` etc. on ``<base>/event``).
  A file or folder that runs out without ``loop`` ends the capture.

Timeline (``Frame.at_s``): for live sources, seconds since capture started;
for files and folders, media time (frame number over the file's frame rate;
a folder's images are ``1 / max_fps`` apart), continuing across loops.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from edgeagent.capture.base import EventSink, ReopenPolicy, SourceEvent, report
from edgeagent.errors import CameraError

_LOGGER = logging.getLogger(__name__)
_JOIN_TIMEOUT_S = 5.0  # a reader thread stuck in a driver call is abandoned after this
_DUE_TOLERANCE = 0.2  # of the capped period (at most half a source frame): jitter accepted

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class Frame:
    """One camera frame and where it sits on the capture timeline."""

    image: np.ndarray = field(repr=False)  # [H, W, 3] uint8 RGB
    index: int  # frames grabbed since capture started, skipped ones included
    at_s: float  # capture timeline, seconds (module docstring)
    captured_at: float  # time.monotonic() when it was decoded

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])


class CameraLost(CameraError):
    """A source stopped delivering frames (unplugged, stream ended, unreadable); it may reopen."""


class FrameSource(Protocol):
    """A camera, stream, file or folder; every method may block (called in a worker thread)."""

    @property
    def name(self) -> str:
        """For logs and events, e.g. ``device /dev/video0`` or ``file clip.avi``."""
        ...

    @property
    def live(self) -> bool:
        """True for devices and streams (frames come at their own pace, never paced here)."""
        ...

    @property
    def fps(self) -> float | None:
        """Frames per second of a file, known once open; None: unknown (use ``max_fps``)."""
        ...

    def open(self) -> None:
        """Start; raise :class:`CameraLost` when that is impossible now (retried after a
        backoff), another :class:`CameraError` when it never will be (OpenCV missing)."""

    def grab(self) -> bool:
        """Advance to the next frame; False at the end of a finite source.

        Raises :class:`CameraLost` when the source dies.
        """
        ...

    def retrieve(self) -> np.ndarray:
        """The grabbed frame, decoded: ``[H, W, 3]`` uint8 RGB within the size cap."""
        ...

    def close(self) -> None:
        """Release the device, stream or file; safe to call more than once."""


FrameSourceFactory = Callable[[], FrameSource]


@dataclass(frozen=True)
class CameraOptions(ReopenPolicy):
    """Rate cap, pacing and reopen policy (times in seconds)."""

    max_fps: float = 1.0
    realtime: bool = True  # files and folders: pace at their own rate (else lossless, fast)


class CameraCapture:
    """A supervised camera source yielding :class:`Frame` s (see the module docstring)."""

    def __init__(
        self,
        factory: FrameSourceFactory,
        options: CameraOptions | None = None,
        on_event: EventSink | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.factory = factory
        self.options = options or CameraOptions()
        self.on_event = on_event
        self._clock, self._sleep = clock, sleep
        self.grabbed = 0  # frames grabbed so far (the next frame's index)
        self.delivered = 0  # frames handed to the consumer
        self.dropped = 0  # decoded, then replaced by a newer frame before the consumer took it
        self.media_s = 0.0  # timeline of files and folders
        self._started = 0.0

    def set_max_fps(self, max_fps: float) -> None:
        """Change the rate cap while capturing (the governor's economy tier)."""
        if max_fps <= 0:
            raise ValueError("max_fps must be above 0")
        self.options = dataclasses.replace(self.options, max_fps=max_fps)

    def timeline_s(self, live: bool) -> float:
        """Where the capture timeline is now (see the module docstring)."""
        return self._clock() - self._started if live else self.media_s

    def _emit(self, event: SourceEvent) -> None:
        report(event, self.on_event)

    async def frames(self) -> AsyncGenerator[Frame, None]:
        """Frames until a finite source ends (forever for devices and streams)."""
        self._started = self._clock()
        attempt, lost_at = 0, None
        while True:
            source = self.factory()
            try:
                await asyncio.to_thread(source.open)
            except CameraLost as exc:  # other camera errors (OpenCV missing) are not retried
                await asyncio.to_thread(source.close)
                attempt += 1
                lost_at = self._clock() if lost_at is None else lost_at
                await self._lost(source, f"cannot open: {exc}", attempt)
                continue
            opened_at = self._clock()
            at_s = self.timeline_s(source.live)
            if lost_at is not None:
                self._emit(SourceEvent("reopened", source.name, at_s, gap_s=opened_at - lost_at,
                                       attempt=attempt, medium="camera"))  # fmt: skip
            else:
                self._emit(SourceEvent("opened", source.name, at_s, medium="camera"))
            reason: str | None = None
            reader = _Reader(self, source, asyncio.get_running_loop())
            try:
                async with contextlib.aclosing(reader.frames()) as frames:
                    async for frame in frames:
                        self.delivered += 1
                        yield frame
            except CameraLost as exc:
                reason = str(exc) or type(exc).__name__
            finally:
                if await reader.stop():
                    await asyncio.to_thread(source.close)
            if reason is None:
                self._emit(SourceEvent("ended", source.name, self.timeline_s(source.live),
                                       medium="camera"))  # fmt: skip
                return
            lost_at = self._clock()
            stable = lost_at - opened_at >= self.options.stable_s
            attempt = 1 if stable else attempt + 1
            await self._lost(source, reason, attempt)

    async def _lost(self, source: FrameSource, reason: str, attempt: int) -> None:
        delay = self.options.backoff(attempt)
        self._emit(SourceEvent("lost", source.name, self.timeline_s(source.live), reason=reason,
                               retry_in_s=delay, attempt=attempt, medium="camera"))  # fmt: skip
        await self._sleep(delay)


class _Reader:
    """One open source read in a thread; frames handed to the event loop through a mailbox."""

    def __init__(
        self, capture: CameraCapture, source: FrameSource, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.capture, self.source, self.loop = capture, source, loop
        self.lossless = not source.live and not capture.options.realtime
        self._latest: Frame | None = None  # loop side: the newest frame not yet taken
        self._finished = False
        self._reason: str | None = None  # why the source died; None: it ended
        self._wake = asyncio.Event()
        self._taken = threading.Event()  # lossless: the consumer took the last frame
        self._taken.set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"camera-{source.name}", daemon=True)

    async def frames(self) -> AsyncGenerator[Frame, None]:
        """Frames as the thread decodes them; raises :class:`CameraLost` when the source died."""
        self._thread.start()
        while True:
            if self._latest is not None:
                frame, self._latest = self._latest, None
                self._taken.set()
                yield frame
            elif self._finished:
                if self._reason is not None:
                    raise CameraLost(self._reason)
                return
            else:
                self._wake.clear()
                await self._wake.wait()

    async def stop(self) -> bool:
        """Stop the thread; False if it is stuck in the driver (then the source is left open)."""
        self._stop.set()
        self._taken.set()
        if not self._thread.is_alive():
            return True
        await asyncio.to_thread(self._thread.join, _JOIN_TIMEOUT_S)
        if self._thread.is_alive():
            _LOGGER.warning("camera %s: reader stuck for %.0f s, abandoned",
                            self.source.name, _JOIN_TIMEOUT_S)  # fmt: skip
            return False
        return True

    # -- loop side -------------------------------------------------------------------------

    def _put(self, frame: Frame) -> None:
        if self._latest is not None:
            self.capture.dropped += 1
        self._latest = frame
        self._wake.set()

    def _end(self, reason: str | None) -> None:
        self._finished, self._reason = True, reason
        self._wake.set()

    # -- thread side -----------------------------------------------------------------------

    def _run(self) -> None:
        reason: str | None = None
        try:
            self._read()
        except CameraError as exc:
            reason = str(exc) or type(exc).__name__
        except Exception as exc:  # a driver's failure must not end capture
            _LOGGER.exception("camera %s: reader failed", self.source.name)
            reason = f"{type(exc).__name__}: {exc}"
        self._call(self._end, reason)

    def _read(self) -> None:
        """Grab, skip what is not due, pace, decode and post; returns at the end or on stop."""
        cap, source = self.capture, self.source
        wall0, media0 = cap._clock(), cap.media_s
        due: float | None = None
        while not self._stop.is_set():
            if not source.grab():
                return
            max_fps = cap.options.max_fps  # read per frame: set_max_fps() applies at once
            period = 1.0 / max_fps
            step = 1.0 / (source.fps or max_fps)  # the source's frame interval (known or not)
            early = min(_DUE_TOLERANCE * period, 0.5 * step)  # jitter accepted before a due
            index = cap.grabbed
            cap.grabbed += 1
            at_s = cap.timeline_s(source.live)
            if not source.live:
                cap.media_s += step
            if due is not None and at_s < due - early:
                continue  # above max_fps: skipped undecoded
            due = due + period if due is not None and at_s - due < period else at_s + period
            if not source.live and cap.options.realtime:
                delay = wall0 + (at_s - media0) - cap._clock()
                if delay > 0 and self._stop.wait(delay):
                    return
            frame = Frame(source.retrieve(), index, at_s, cap._clock())
            if not self._post(frame):
                return

    def _post(self, frame: Frame) -> bool:
        """Hand a frame to the loop (lossless: and wait until it is taken); False once stopped."""
        if self.lossless:
            self._taken.clear()
        if not self._call(self._put, frame):
            return False
        if self.lossless:
            while not self._taken.wait(0.5):
                if self._stop.is_set():
                    return False
        return not self._stop.is_set()

    def _call(self, fn: Callable[..., None], *args: object) -> bool:
        try:
            self.loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop is closed: nobody is reading any more
            return False
        return True
