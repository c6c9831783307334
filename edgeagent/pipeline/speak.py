"""Spoken output: final results read aloud by a configured command, one at a time.

``voice.speak_command`` is run once per result with the text on its standard
input (e.g. ``["sh", "-c", "espeak-ng -v fr --stdout | aplay -q"]``); which
results are spoken is ``voice.speak``. Texts wait in a short queue (the
oldest is dropped past :data:`QUEUE_SIZE`: speech that old is stale). A
command that is missing, fails or hangs is reported as an ``error`` event
(``speak_failed``) and the next text is spoken all the same.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from edgeagent.events import Answer, Result, Transcript, Translation, error_event

_LOGGER = logging.getLogger(__name__)
QUEUE_SIZE = 4
TIMEOUT_S = 120.0
_KINDS: dict[type[Result], str] = {
    Answer: "answer",
    Translation: "translation",
    Transcript: "transcript",
}


class Speaker:
    """Reads final results aloud through ``argv``."""

    def __init__(
        self,
        argv: Sequence[str],
        kinds: Sequence[str],
        emit: Callable[[Result], None],
        timeout_s: float = TIMEOUT_S,
    ) -> None:
        self.argv = tuple(argv)
        self.kinds = set(kinds)
        self.emit = emit
        self.timeout_s = timeout_s
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._idle = asyncio.Event()
        self._idle.set()

    def offer(self, result: Result) -> None:
        """A final result: queue its text if its kind is spoken."""
        kind = _KINDS.get(type(result))
        text = getattr(result, "text", "").strip()
        if not self.argv or kind not in self.kinds or not text:
            return
        while self._queue.qsize() >= QUEUE_SIZE:
            dropped = self._queue.get_nowait()
            _LOGGER.warning("speak queue full: dropped %r", dropped[:40])
        self._idle.clear()
        self._queue.put_nowait(text)

    async def drain(self) -> None:
        """Wait until everything offered has been spoken (or failed)."""
        if self.argv:
            await self._idle.wait()

    async def run(self) -> None:
        while True:
            text = await self._queue.get()
            await self.say(text)
            if self._queue.empty():
                self._idle.set()

    async def say(self, text: str) -> None:
        """Run the command once with ``text`` on its standard input."""
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            self._fail(f"cannot run {self.argv[0]}: {exc.strerror or exc}")
            return
        try:
            _, stderr = await asyncio.wait_for(
                proc.communicate(text.encode() + b"\n"), self.timeout_s
            )
        except TimeoutError:
            proc.kill()
            await proc.wait()
            self._fail(f"{self.argv[0]} did not finish within {self.timeout_s:.0f}s")
            return
        if proc.returncode != 0:
            tail = stderr.decode(errors="replace").strip()[-200:]
            self._fail(f"{self.argv[0]} exited with {proc.returncode}: {tail}")

    def _fail(self, message: str) -> None:
        _LOGGER.error("speak: %s", message)
        self.emit(error_event("speak_failed", message, None))
