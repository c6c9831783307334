"""What outlives a publisher stage restart: outbox, device state, embedded broker, connector.

The daemon builds one :class:`PublishService`, opens it in a start-up step
(before READY=1: the outbox is open, the embedded broker started; the broker
may still be unreachable) and closes it in a clean-up step, after the
publisher stage has flushed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from edgeagent.events import Result
from edgeagent.publish.broker import LOOPBACK, AmqttBroker, EmbeddedBroker, embedded_broker
from edgeagent.publish.broker import port_open as _port_open
from edgeagent.publish.connection import V311, Connector
from edgeagent.publish.outbox import Outbox, Outgoing, Stored
from edgeagent.publish.state import DeviceState
from edgeagent.publish.topics import Topics
from edgeagent.settings import Settings
from edgeagent.stages import StageContext

_LOGGER = logging.getLogger(__name__)

OUTBOX_FILE = "outbox.sqlite3"
AckObserver = Callable[[Stored, float], None]
"""Called with each acknowledged result and the time.time() of its PUBACK (benchmarks)."""


class PublishService:
    """See the module docstring."""

    def __init__(self, settings: Settings) -> None:
        mqtt = settings.mqtt
        self.settings = mqtt
        self.shutdown_timeout_s = settings.daemon.shutdown_timeout_s
        self.topics = Topics.from_settings(mqtt)
        self.outbox = Outbox(
            settings.daemon.state_dir / OUTBOX_FILE,
            max_messages=mqtt.outbox_max_messages,
            max_bytes=int(mqtt.outbox_max_mb * 1024 * 1024),
            overflow=mqtt.outbox_overflow,
        )
        self.state = DeviceState(mqtt.outbox_overflow)
        self.state_dirty = asyncio.Event()
        self.connected = asyncio.Event()
        """Set while connected, subscribed to the commands and announced ``online``."""
        self.broker: EmbeddedBroker | None = None
        if mqtt.host is None:
            self.broker = embedded_broker(
                mqtt.embedded_broker, mqtt.port, settings.daemon.state_dir / "broker"
            )
        self.connector = Connector(mqtt, self.topics, mqtt.host or LOOPBACK, mqtt.port)
        if isinstance(self.broker, AmqttBroker):
            self.connector.protocol = V311  # known: no need to be refused first
        self.acked: set[int] = set()
        """PUBACKed seqs not yet removed from the outbox (never sent again meanwhile)."""
        self.observer: AckObserver | None = None

    async def open(self, ctx: StageContext) -> None:
        """Start-up step: open the outbox, start the embedded broker (failure is not fatal)."""
        await self.outbox.open()
        if self.broker is None:
            return
        if await _port_open(self.broker.port):
            _LOGGER.info(
                "something already listens on %s:%d; using it as the broker",
                LOOPBACK,
                self.broker.port,
            )
            self.broker = None
            return
        ctx.notifier.extend_timeout(30)
        try:
            await self.broker.start()
        except Exception:
            _LOGGER.exception("embedded %s broker failed to start", self.broker.name)

    async def close(self) -> None:
        """Clean-up step: close the outbox (a WAL checkpoint), stop the embedded broker."""
        try:
            await self.outbox.close()
        finally:
            if self.broker is not None:
                await self.broker.stop()

    def status(self) -> str:
        """For systemd's STATUS= line: the broker connection and the outbox."""
        link = "connected" if self.connected.is_set() else "not connected"
        stats = self.outbox.stats
        return f"mqtt {link}; outbox {stats.depth} waiting, {stats.dropped} dropped"

    def outgoing(self, result: Result) -> list[Outgoing]:
        """The outbox rows for ``result``: its topic, plus the requester's response topic."""
        body = result.body()
        rows = [Outgoing(self.topics.result(result.topic), body, result.ts)]
        reply = result.reply
        if reply.response_topic is not None:
            rows.append(Outgoing(reply.response_topic, body, result.ts, reply.correlation_data))
        return rows
