"""Stages for tests, registered under ``test-*`` names (also inside subprocesses).

A subprocess gets them with ``python -c`` and :data:`BOOTSTRAP`, which imports
this module before handing over to the real CLI.
"""

from __future__ import annotations

import asyncio
import logging
from typing import ClassVar

from edgeagent.stages import Stage, StageContext, register_stage

_LOGGER = logging.getLogger(__name__)

BOOTSTRAP = (
    "import sys; sys.path.insert(0, {tests_dir!r}); "
    "import foundation.fake_stages as f; f.register_all(); "
    "from edgeagent.cli import main; sys.exit(main(sys.argv[1:]))"
)


class CrashingStage(Stage):
    """Fails a moment after every start."""

    starts: ClassVar[list[float]] = []  # loop times of every start, for in-process tests

    def __init__(self, ctx: StageContext) -> None:
        self.ctx = ctx

    async def run(self) -> None:
        CrashingStage.starts.append(asyncio.get_running_loop().time())
        _LOGGER.info("crashing stage started")
        await asyncio.sleep(0.01)
        raise RuntimeError("boom")


class SlowDrainStage(Stage):
    """Waits for draining, then takes far longer than any shutdown timeout."""

    def __init__(self, ctx: StageContext) -> None:
        self.ctx = ctx

    async def run(self) -> None:
        await self.ctx.draining.wait()
        await asyncio.sleep(3600)


def register_all() -> None:
    register_stage("test-crash", CrashingStage, replace=True)
    register_stage("test-slow-drain", SlowDrainStage, replace=True)
