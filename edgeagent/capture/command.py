"""The ``command`` audio source: any program that writes raw PCM to its stdout.

Like wyoming-satellite's ``--mic-command``: ``arecord -q -t raw -f S16_LE -r
16000 -c 1``, ``parecord --raw``, ``sox -d -t raw -``, a network receiver…
When the program exits, the source has died: :class:`SourceEnded` carries
its exit status and the last lines it wrote to stderr, and the capture
supervisor starts it again after a backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shlex
from collections import deque
from collections.abc import Sequence

import numpy as np

from edgeagent.capture.base import SourceEnded
from edgeagent.dsp.pcm import bytes_per_frame, decode
from edgeagent.errors import AudioError

_LOGGER = logging.getLogger(__name__)
_STOP_TIMEOUT_S = 2.0


class CommandSource:
    """Reads ``block_frames`` frames at a time from a program's stdout."""

    def __init__(
        self,
        argv: Sequence[str],
        rate: int,
        channels: int = 1,
        sample_format: str = "S16_LE",
        block_frames: int = 320,
    ) -> None:
        if not argv:
            raise AudioError("the command source needs a command")
        self.argv = tuple(argv)
        self._rate, self._channels = rate, channels
        self.sample_format = sample_format
        self.block_bytes = block_frames * bytes_per_frame(sample_format, channels)
        self._proc: asyncio.subprocess.Process | None = None
        self._stderr_task: asyncio.Task[None] | None = None
        self._stderr: deque[str] = deque(maxlen=5)

    @property
    def name(self) -> str:
        return f"command {shlex.join(self.argv)}"

    @property
    def rate(self) -> int:
        return self._rate

    @property
    def channels(self) -> int:
        return self._channels

    @property
    def pid(self) -> int | None:
        """The running program's process id."""
        return self._proc.pid if self._proc else None

    async def open(self) -> None:
        self._stderr.clear()
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            raise SourceEnded(f"cannot start {self.argv[0]}: {exc}") from exc
        self._stderr_task = asyncio.create_task(
            self._drain_stderr(self._proc), name=f"stderr of {self.argv[0]}"
        )
        _LOGGER.info("started %s (pid %d)", self.name, self._proc.pid)

    async def read(self) -> np.ndarray | None:
        proc = self._proc
        if proc is None or proc.stdout is None:
            raise SourceEnded(f"{self.name} is not running")
        try:
            raw = await proc.stdout.readexactly(self.block_bytes)
        except asyncio.IncompleteReadError as exc:
            frame = bytes_per_frame(self.sample_format, self._channels)
            whole = len(exc.partial) - len(exc.partial) % frame
            if whole:  # the last audio it wrote; the next read reports the exit
                return decode(exc.partial[:whole], self.sample_format, self._channels)
            raise SourceEnded(await self._exit_reason(proc)) from None
        return decode(raw, self.sample_format, self._channels)

    async def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), _STOP_TIMEOUT_S)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        task, self._stderr_task = self._stderr_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _exit_reason(self, proc: asyncio.subprocess.Process) -> str:
        try:
            status = await asyncio.wait_for(proc.wait(), _STOP_TIMEOUT_S)
        except TimeoutError:
            return f"{self.argv[0]} closed its output"
        if self._stderr_task is not None:  # let it read the last lines
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._stderr_task), 0.5)
        tail = " | ".join(self._stderr)
        return f"{self.argv[0]} exited with status {status}" + (f": {tail}" if tail else "")

    async def _drain_stderr(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stderr is not None
        async for line in proc.stderr:
            text = line.decode(errors="replace").rstrip()
            if text:
                self._stderr.append(text)
                _LOGGER.debug("%s: %s", self.argv[0], text)
