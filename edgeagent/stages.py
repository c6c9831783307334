"""Stages: the long-running units the supervisor runs, and the registry that names them.

A stage is a class with ``async run()``, built by a factory from a
:class:`StageContext`. The supervisor builds a fresh instance for every
(re)start, so state that must survive a crash belongs outside the stage.

Contract of ``run()``:

- Raise to fail: the supervisor logs it and restarts the stage with capped
  exponential backoff. Returning means the stage is finished for good.
- Intake stages (``intake = True``: microphone, camera, MQTT commands) are
  cancelled first at shutdown. Catch ``CancelledError`` only to close devices,
  then re-raise.
- Other stages see ``ctx.draining`` set once intake has stopped; they finish
  the work already queued and return. Whatever is still running after
  ``daemon.shutdown_timeout_s`` is cancelled.
- Late stages (``late = True``: the MQTT publisher) carry the others' output
  out of the daemon. They see ``ctx.upstream_done`` set once every other stage
  has finished (or was cancelled), then flush and return within another
  ``daemon.shutdown_timeout_s``.

Stages exchange typed events (:mod:`edgeagent.events`) through the bounded
queues of ``ctx.channels``.

Optional stages (capture, encoders, …) are registered in :data:`BUILTIN_STAGES`
as ``"module:attribute"`` paths, imported only when a configuration names
them; tests and plugins may call :func:`register_stage`. The core stages that
need shared services — the MQTT publisher and the assistant — are wired by
:func:`edgeagent.daemon.build_supervisor` when ``mqtt.enabled`` is true.
"""

from __future__ import annotations

import asyncio
import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

from edgeagent.errors import ConfigError
from edgeagent.events import Channels
from edgeagent.sdnotify import Notifier
from edgeagent.settings import Settings


@dataclass(frozen=True)
class StageContext:
    """What every stage is built from."""

    settings: Settings
    notifier: Notifier
    draining: asyncio.Event = field(default_factory=asyncio.Event)
    """Set at shutdown once intake has stopped: finish queued work and return."""
    upstream_done: asyncio.Event = field(default_factory=asyncio.Event)
    """Set at shutdown once every stage but the late ones has finished."""
    channels: Channels = field(default_factory=Channels)
    """The queues stages exchange events through."""


class Stage(ABC):
    """A long-running unit of the daemon."""

    intake: ClassVar[bool] = False
    """True for sources of new work, which are cancelled first at shutdown."""

    late: ClassVar[bool] = False
    """True for stages that carry the others' output out (the publisher): drained last."""

    @abstractmethod
    async def run(self) -> None:
        """Do the stage's work until done, drained or cancelled; raise to be restarted."""


StageFactory = Callable[[StageContext], Stage]

BUILTIN_STAGES: dict[str, str] = {
    # name: "module:factory", e.g. "audio_capture": "edgeagent.pipeline.capture:AudioCapture"
}

_registered: dict[str, StageFactory] = {}


def register_stage(name: str, factory: StageFactory, *, replace: bool = False) -> None:
    """Make ``factory`` available to ``daemon.stages`` under ``name``."""
    if not replace and (name in _registered or name in BUILTIN_STAGES):
        raise ValueError(f"stage {name!r} is already registered")
    _registered[name] = factory


def unregister_stage(name: str) -> None:
    """Forget a stage added with :func:`register_stage` (tests)."""
    _registered.pop(name, None)


def stage_names() -> list[str]:
    """Every stage name a configuration may use."""
    return sorted({*BUILTIN_STAGES, *_registered})


def stage_factory(name: str) -> StageFactory:
    """The factory for ``name``; an unknown name is a :class:`ConfigError`."""
    if name in _registered:
        return _registered[name]
    if name in BUILTIN_STAGES:
        module_name, _, attribute = BUILTIN_STAGES[name].partition(":")
        factory: StageFactory = getattr(importlib.import_module(module_name), attribute)
        return factory
    known = ", ".join(stage_names()) or "none yet"
    raise ConfigError(f"daemon.stages: unknown stage {name!r} (known: {known})")
