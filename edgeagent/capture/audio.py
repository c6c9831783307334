"""Audio capture: any raw source in, timestamped 16 kHz mono float32 blocks out.

:class:`AudioCapture` opens a source built by a factory (the seam tests
replace), converts what it reads (channel, gain, resampling to 16 kHz) and,
when the source dies — a command exits, a device is unplugged — closes it,
reports a ``lost`` :class:`SourceEvent`, waits a capped exponential backoff
and opens a fresh one, reporting ``reopened`` with the gap. A source that
ran for ``stable_s`` before dying starts over from the initial delay. The
timeline keeps counting through the outage, so block timestamps stay on the
wall clock.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import numpy as np

from edgeagent.capture.base import (
    RATE,
    AudioBlock,
    EventSink,
    RawSource,
    ReopenPolicy,
    SourceEnded,
    SourceEvent,
    report,
)
from edgeagent.dsp.pcm import apply_gain, to_mono
from edgeagent.dsp.resample import Resampler
from edgeagent.errors import AudioError

SourceFactory = Callable[[], RawSource]


@dataclass(frozen=True)
class CaptureOptions(ReopenPolicy):
    """Conversion and reopen policy (times in seconds)."""

    channel: int | None = None  # channel to keep (from 0); None: the mean of all
    gain_db: float = 0.0


class AudioCapture:
    """A supervised audio source yielding :class:`AudioBlock` s."""

    def __init__(
        self,
        factory: SourceFactory,
        options: CaptureOptions | None = None,
        on_event: EventSink | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.factory = factory
        self.options = options or CaptureOptions()
        self.on_event = on_event
        self._clock, self._sleep = clock, sleep
        self.position = 0  # timeline index of the next sample

    def _emit(self, event: SourceEvent) -> None:
        report(event, self.on_event)

    async def blocks(self) -> AsyncIterator[AudioBlock]:
        """Blocks until a finite source ends (forever for devices and commands)."""
        started = self._clock()
        attempt, lost = 0, False
        while True:
            source = self.factory()
            try:
                await source.open()
            except AudioError as exc:
                attempt += 1
                await self._lost(source, f"cannot open: {exc}", attempt)
                lost = True
                continue
            opened_at = self._clock()
            if lost:
                caught_up = max(self.position, round((opened_at - started) * RATE))
                gap = (caught_up - self.position) / RATE
                self.position = caught_up
                self._emit(SourceEvent("reopened", source.name, self.position / RATE,
                                       gap_s=gap, attempt=attempt))  # fmt: skip
            else:
                self._emit(SourceEvent("opened", source.name, self.position / RATE))
            reason: str | None = None
            try:
                async for block in self._convert(source):
                    yield block
            except SourceEnded as exc:
                reason = str(exc) or type(exc).__name__
            finally:
                await source.close()
            if reason is None:
                self._emit(SourceEvent("ended", source.name, self.position / RATE))
                return
            attempt = 1 if self._clock() - opened_at >= self.options.stable_s else attempt + 1
            await self._lost(source, reason, attempt)
            lost = True

    async def _lost(self, source: RawSource, reason: str, attempt: int) -> None:
        delay = self.options.backoff(attempt)
        self._emit(SourceEvent("lost", source.name, self.position / RATE, reason=reason,
                               retry_in_s=delay, attempt=attempt))  # fmt: skip
        await self._sleep(delay)

    async def _convert(self, source: RawSource) -> AsyncIterator[AudioBlock]:
        """Read until the source ends (return) or dies (``SourceEnded``), converting each block."""
        resampler = Resampler(source.rate, RATE)
        opts = self.options
        try:
            while (frames := await source.read()) is not None:
                mono = apply_gain(to_mono(frames, opts.channel), opts.gain_db)
                block = self._block(resampler.process(mono))
                if block is not None:
                    yield block
        except SourceEnded:
            tail = self._block(resampler.flush())  # the resampler's last few ms
            if tail is not None:
                yield tail
            raise
        tail = self._block(resampler.flush())
        if tail is not None:
            yield tail

    def _block(self, pcm: np.ndarray) -> AudioBlock | None:
        if len(pcm) == 0:
            return None
        block = AudioBlock(pcm, self.position, self._clock())
        self.position += len(pcm)
        return block
