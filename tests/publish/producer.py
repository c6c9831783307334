"""A stage for subprocess tests that emits numbered transcripts, registered as ``test-producer``.

A subprocess gets it with ``python -c`` and :data:`BOOTSTRAP`. ``PRODUCER_COUNT``
transcripts ``u00000``, ``u00001``, ... are emitted, one every
``PRODUCER_INTERVAL_MS`` milliseconds (environment variables; default 0: none).
"""

from __future__ import annotations

import asyncio
import os

from edgeagent.events import Transcript
from edgeagent.stages import Stage, StageContext, register_stage

BOOTSTRAP = (
    "import sys; sys.path.insert(0, {tests_dir!r}); "
    "import publish.producer as p; p.register(); "
    "from edgeagent.cli import main; sys.exit(main(sys.argv[1:]))"
)


class Producer(Stage):
    def __init__(self, ctx: StageContext) -> None:
        self.ctx = ctx

    async def run(self) -> None:
        count = int(os.environ.get("PRODUCER_COUNT", "0"))
        interval = float(os.environ.get("PRODUCER_INTERVAL_MS", "1")) / 1000
        for i in range(count):
            if self.ctx.draining.is_set():
                return
            text = f"utterance {i}"
            await self.ctx.channels.results.put(
                Transcript(utterance_id=f"u{i:05d}", text=text, final=True)
            )
            await asyncio.sleep(interval)


def register() -> None:
    register_stage("test-producer", Producer, replace=True)
