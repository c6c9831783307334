"""The ``command`` audio source: any program that writes raw PCM to its stdout.

Like wyoming-satellite's ``--mic-command``: ``arecord -q -t raw -f S16_LE -r
16000 -c 1``, ``parecord --raw``, ``sox -d -t raw -``, a network receiver…
When the program exits, the source has died: :class:`SourceEnded` carries
its exit status and the last lines it wrote to stderr, and the capture
supervisor starts it again after a backoff.

The program writes into a pipe of our own, read by a protocol
(:class:`_Output`) connected to the event loop directly, which wakes the
reading task once per whole block; and when the program writes in pieces
smaller than a block (a device with 10 ms periods, 20 ms blocks), the pipe
is left unread until the next block is due, so its pieces come in one
wake-up. Through ``asyncio.create_subprocess_exec``'s ``StreamReader`` every
write cost three event-loop passes (the subprocess transport forwards each
read with ``call_soon``; ``readexactly`` wakes its task on every write); see
``benchmarks/audio_silence.py``. The program's stderr and exit go through
the subprocess transport as usual (:class:`_Process`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
from collections import deque
from collections.abc import Sequence

import numpy as np

from edgeagent.capture.base import SourceEnded
from edgeagent.dsp.pcm import bytes_per_frame, decode
from edgeagent.errors import AudioError

_LOGGER = logging.getLogger(__name__)
_STOP_TIMEOUT_S = 2.0
_PAUSE_BLOCKS = 32  # stop reading the pipe (the program blocks) past this many unread blocks
_HOLD_MARGIN = 0.1  # of a block: how long after the next block is due the pipe is read again


class _Output(asyncio.Protocol):
    """The program's stdout, handed out in whole blocks.

    Two reasons stop reading the pipe (the program then waits, or its data
    waits in the pipe): a backlog of ``_PAUSE_BLOCKS`` unread blocks, and
    *holding*: when the program writes in pieces smaller than a block, the
    pipe is left unread until the next block should be complete (``block_s``
    after the last one was, plus ``_HOLD_MARGIN``), so the pieces are read
    together in one wake-up instead of one each.
    """

    def __init__(self, block_bytes: int, block_s: float) -> None:
        self.block_bytes = block_bytes
        self.block_s = block_s
        self.buffer = bytearray()
        self.eof = False
        self.transport: asyncio.ReadTransport | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._backlog = False  # paused: too much unread
        self._holding: asyncio.TimerHandle | None = None  # paused until the next block is due
        self._completed_at: float | None = None  # loop time the last whole block arrived
        self._piecewise = False  # the program's writes are smaller than a block

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.ReadTransport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._piecewise = len(data) < self.block_bytes
        if len(self.buffer) >= self.block_bytes:
            self._completed_at = asyncio.get_running_loop().time()
            self._wake()
            if len(self.buffer) >= _PAUSE_BLOCKS * self.block_bytes:
                self._backlog = True
                self._update()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self._release()
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _update(self) -> None:
        """Read the pipe unless there is a backlog or a hold."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self._backlog or self._holding is not None:
            if transport.is_reading():
                transport.pause_reading()
        elif not transport.is_reading():
            transport.resume_reading()

    def _hold(self) -> None:
        """After a block is handed out: leave the pipe until the next one is due."""
        if not self._piecewise or self._completed_at is None or self.eof:
            return
        loop = asyncio.get_running_loop()
        delay = self._completed_at + self.block_s * (1.0 + _HOLD_MARGIN) - loop.time()
        if delay > 0 and self._holding is None:
            self._holding = loop.call_later(delay, self._release)
            self._update()

    def _release(self) -> None:
        if self._holding is not None:
            self._holding.cancel()
            self._holding = None
            self._update()

    async def read(self, max_bytes: int) -> bytes:
        """The next ``max_bytes`` (a block), fewer only at the end; ``b""`` once it ended."""
        while len(self.buffer) < max_bytes and not self.eof:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        data = bytes(self.buffer[:max_bytes])
        del self.buffer[:max_bytes]
        if self._backlog and len(self.buffer) < _PAUSE_BLOCKS * self.block_bytes // 2:
            self._backlog = False
            self._update()
        if len(self.buffer) < self.block_bytes:
            self._hold()
        return data


class _Process(asyncio.SubprocessProtocol):
    """The program's stderr, by line (the last few kept), and its exit."""

    def __init__(self, stderr_tail: deque[str], program: str) -> None:
        loop = asyncio.get_running_loop()
        self.stderr_tail = stderr_tail
        self.program = program
        self.exited: asyncio.Future[None] = loop.create_future()
        self.stderr_closed: asyncio.Future[None] = loop.create_future()
        self._err = bytearray()

    def pipe_data_received(self, fd: int, data: bytes | bytearray) -> None:
        if fd == 2:
            self._err += data
            *lines, rest = self._err.split(b"\n")
            self._err = bytearray(rest)
            for line in lines:
                self._line(line)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if fd == 2:
            if self._err:
                self._line(self._err)
                self._err.clear()
            if not self.stderr_closed.done():
                self.stderr_closed.set_result(None)

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)

    def _line(self, line: bytes | bytearray) -> None:
        text = line.decode(errors="replace").rstrip()
        if text:
            self.stderr_tail.append(text)
            _LOGGER.debug("%s: %s", self.program, text)


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
        self._transport: asyncio.SubprocessTransport | None = None
        self._process: _Process | None = None
        self._output: _Output | None = None
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
        return self._transport.get_pid() if self._transport else None

    async def open(self) -> None:
        self._stderr.clear()
        loop = asyncio.get_running_loop()
        read_fd, write_fd = os.pipe()
        try:
            try:
                transport, process = await loop.subprocess_exec(
                    lambda: _Process(self._stderr, self.argv[0]),
                    *self.argv,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=write_fd,
                    stderr=asyncio.subprocess.PIPE,
                )
            finally:
                os.close(write_fd)  # the program holds it now: its exit closes the pipe
        except OSError as exc:
            os.close(read_fd)
            raise SourceEnded(f"cannot start {self.argv[0]}: {exc}") from exc
        frame_bytes = bytes_per_frame(self.sample_format, self._channels)
        output = _Output(self.block_bytes, self.block_bytes / frame_bytes / self._rate)
        await loop.connect_read_pipe(lambda: output, os.fdopen(read_fd, "rb", buffering=0))
        self._transport, self._process, self._output = transport, process, output
        _LOGGER.info("started %s (pid %d)", self.name, transport.get_pid())

    async def read(self) -> np.ndarray | None:
        output = self._output
        if output is None:
            raise SourceEnded(f"{self.name} is not running")
        raw = await output.read(self.block_bytes)
        frame = bytes_per_frame(self.sample_format, self._channels)
        whole = len(raw) - len(raw) % frame
        if whole:  # a block; at the end, the last audio it wrote (the next read reports the exit)
            return decode(raw[:whole], self.sample_format, self._channels)
        raise SourceEnded(await self._exit_reason())

    async def close(self) -> None:
        transport, process, output = self._transport, self._process, self._output
        self._transport = self._process = self._output = None
        if output is not None and output.transport is not None:
            output.transport.close()
        if transport is None or process is None:
            return
        if transport.get_returncode() is None:
            with contextlib.suppress(ProcessLookupError):
                transport.terminate()
            try:
                await asyncio.wait_for(asyncio.shield(process.exited), _STOP_TIMEOUT_S)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    transport.kill()
                await process.exited
        transport.close()

    async def _exit_reason(self) -> str:
        transport, process = self._transport, self._process
        if transport is None or process is None:
            return f"{self.argv[0]} is not running"
        try:
            await asyncio.wait_for(asyncio.shield(process.exited), _STOP_TIMEOUT_S)
        except TimeoutError:
            return f"{self.argv[0]} closed its output"
        with contextlib.suppress(TimeoutError):  # let it read the last lines
            await asyncio.wait_for(asyncio.shield(process.stderr_closed), 0.5)
        tail = " | ".join(self._stderr)
        status = transport.get_returncode()
        return f"{self.argv[0]} exited with status {status}" + (f": {tail}" if tail else "")
