"""The governor stage: polls the sensors, applies the policy, asks the assistant to switch.

:class:`GovernorService` outlives stage restarts: it holds the sensor reader,
the ladder (set once the model is loaded, see
:meth:`edgeagent.pipeline.assistant.AssistantService.load_model`) and where
the policy stands. :class:`Governor` polls every ``governor.poll_s``: the
readings go to the state message, and a decision to change rung goes to the
assistant as a :class:`~edgeagent.events.TierRequest`; the assistant applies it
between utterances and publishes ``tier_changed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from edgeagent.events import StateUpdate, TierRequest
from edgeagent.governor.ladder import Ladder
from edgeagent.governor.policy import (
    Decision,
    PolicyConfig,
    PolicyState,
    Readings,
    advance,
    policy_config,
)
from edgeagent.governor.sensors import Opener, SensorReader, read_sysfs
from edgeagent.settings import Settings
from edgeagent.stages import Stage, StageContext

_LOGGER = logging.getLogger(__name__)


class GovernorService:
    """Sensors, ladder and policy state; see the module docstring."""

    def __init__(self, settings: Settings, opener: Opener = read_sysfs) -> None:
        governor = settings.governor
        self.settings = settings
        self.reader = SensorReader(
            governor.battery_capacity_path,
            governor.battery_status_path,
            governor.thermal_zone_paths,
            root=governor.sysfs_root,
            opener=opener,
        )
        self.ladder: Ladder | None = None
        self.config: PolicyConfig | None = None
        self.state: PolicyState | None = None
        self.readings = Readings()

    def set_ladder(self, ladder: Ladder, rung: str | None = None) -> None:
        """Start-up: the ladder checked against the checkpoint, and the rung running now."""
        self.ladder = ladder
        self.config = policy_config(self.settings.governor, ladder.names)
        self.state = PolicyState(rung or ladder.names[0])
        _LOGGER.info("governor: ladder %s", " > ".join(ladder.names))

    def set_override(self, rung: str | None) -> None:
        """``cmd/tier``: hold ``rung`` (None: ``auto``, the policy decides again)."""
        if self.state is None:
            return
        current = rung or self.state.rung
        self.state = PolicyState(current, 0.0 if rung else self.state.time_in_rung_s, rung)

    def poll(self, elapsed_s: float) -> Decision | None:
        """Read the sensors and decide; the decision if the rung changes, else None."""
        self.readings = self.reader.read()
        if self.state is None or self.config is None:
            return None
        before = self.state.rung
        self.state, decision = advance(self.state, self.readings, self.config, elapsed_s)
        return decision if decision.rung != before else None


class Governor(Stage):
    """Polls, decides, and sends tier requests to the assistant."""

    def __init__(self, ctx: StageContext, service: GovernorService) -> None:
        self.ctx = ctx
        self.service = service

    async def run(self) -> None:
        interval = self.ctx.settings.governor.poll_s
        channels = self.ctx.channels
        previous = time.monotonic()
        published: dict[str, object] | None = None
        while not self.ctx.draining.is_set():
            now = time.monotonic()
            decision = self.service.poll(now - previous)
            previous = now
            readings = self.service.readings.as_json()
            if readings != published:
                await channels.results.put(StateUpdate(readings))
                published = dict(readings)
            if decision is not None:
                _LOGGER.info(
                    "governor: %s (%s; %s)", decision.rung, decision.reason, _describe(readings)
                )
                request = TierRequest(
                    rung=decision.rung,
                    cause=decision.reason,
                    urgent=decision.urgent,
                    readings=readings,
                )
                if decision.urgent:
                    channels.interrupt.set()  # stop an answer in progress at its next token
                await channels.tier_requests.put(request)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.ctx.draining.wait(), interval)


def _describe(readings: dict[str, float | bool | None]) -> str:
    return ", ".join(f"{k} {v}" for k, v in readings.items())
