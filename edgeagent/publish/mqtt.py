"""The MQTT publisher stage: results into the outbox, the outbox to the broker, commands in.

Three loops share one :class:`~edgeagent.publish.service.PublishService`:

- accept: ``ctx.channels.results`` → outbox (one transaction per batch), and
  state updates into the device state. It runs whether or not the broker is
  reachable: the outbox is where results wait.
- connection: connect (backoff with jitter between attempts), announce
  (``online``, subscriptions, state, discovery), then send the outbox in
  ``seq`` order with up to ``max_inflight`` QoS 1 messages awaiting PUBACK,
  receive commands, refresh the state. Any failure ends the connection and
  everything unacknowledged is sent again on the next one, in order.
- acks: removes acknowledged results from the outbox in batches.

A late stage: at shutdown it flushes what the other stages produced, sends
as much of the outbox as ``daemon.shutdown_timeout_s`` allows, publishes
``offline`` and disconnects. What is left stays in the outbox for next time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edgeagent.errors import OutboxError, PublishError
from edgeagent.events import Event, Result, StateUpdate, error_event
from edgeagent.publish.commands import parse_command
from edgeagent.publish.connection import V5, Backoff, Client, PublishRefused
from edgeagent.publish.discovery import render_discovery
from edgeagent.publish.outbox import Outgoing, Stored
from edgeagent.publish.service import PublishService
from edgeagent.publish.topics import AVAILABLE, UNAVAILABLE
from edgeagent.stages import Stage, StageContext

_LOGGER = logging.getLogger(__name__)

_BATCH = 256  # results per outbox transaction, rows per outbox read
_ACK_GATHER_S = 0.01  # acknowledgements gathered this long into one DELETE
_STATE_COALESCE_S = 0.2  # state changes closer together than this are sent once
_FLUSH_SHARE = 0.8  # of shutdown_timeout_s spent sending; the rest is for "offline"


class MqttPublisher(Stage):
    """See the module docstring."""

    late = True

    def __init__(self, ctx: StageContext, service: PublishService) -> None:
        self.ctx = ctx
        self.service = service
        self.outbox = service.outbox
        self.topics = service.topics
        self._acks: list[int] = []
        self._ack_ready = asyncio.Event()
        self._accepted_all = asyncio.Event()

    async def run(self) -> None:
        tasks: list[asyncio.Task[None]] = []
        try:
            async with asyncio.TaskGroup() as group:
                tasks.append(group.create_task(self._accept(), name="mqtt:accept"))
                tasks.append(group.create_task(self._flush_acks(), name="mqtt:acks"))
                await self._connection_loop()
                await self._accepted_all.wait()
                for task in tasks:
                    task.cancel()
        finally:
            await self._remove_acked()

    # -- accept -------------------------------------------------------------------------

    async def _accept(self) -> None:
        queue = self.ctx.channels.results
        while True:
            batch: list[Result | StateUpdate] = []
            if queue.empty():
                if self.ctx.upstream_done.is_set():
                    self._accepted_all.set()
                    await asyncio.Future()  # until cancelled
                item = await self._next_or_done()
                if item is None:
                    continue
                batch.append(item)
            while not queue.empty() and len(batch) < _BATCH:
                batch.append(queue.get_nowait())
            await self._store(batch)

    async def _next_or_done(self) -> Result | StateUpdate | None:
        """The next queued item, or None once upstream_done is set."""
        get = asyncio.create_task(self.ctx.channels.results.get(), name="mqtt:accept-get")
        done = asyncio.create_task(self.ctx.upstream_done.wait(), name="mqtt:accept-done")
        try:
            await asyncio.wait({get, done}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            done.cancel()
            if not get.done():
                get.cancel()  # asyncio.Queue.get leaves the item queued when cancelled
        return get.result() if get.done() and not get.cancelled() else None

    async def _store(self, batch: list[Result | StateUpdate]) -> None:
        rows: list[Outgoing] = []
        for item in batch:
            if isinstance(item, StateUpdate):
                if self.service.state.apply(item.changes):
                    self.service.state_dirty.set()
            else:
                rows.extend(self.service.outgoing(item))
        if not rows:
            return
        dropped = self.outbox.stats.dropped
        try:
            await self.outbox.append(rows)
        except OutboxError:
            _LOGGER.error("%d results could not be written to the outbox and are lost", len(rows))
            raise
        if self.outbox.stats.dropped != dropped:
            self.service.state_dirty.set()

    # -- connection ---------------------------------------------------------------------

    async def _connection_loop(self) -> None:
        backoff = Backoff(
            self.service.settings.reconnect_initial_s, self.service.settings.reconnect_max_s
        )
        outage: float | None = None
        connector = self.service.connector
        while True:
            try:
                async with connector.connect() as client:
                    _LOGGER.info(
                        "connected to %s:%d (MQTT %s) as %s",
                        connector.host,
                        connector.port,
                        connector.protocol_name,
                        client.identifier,
                    )
                    if outage is not None:
                        self._reconnected(time.monotonic() - outage, backoff.attempts)
                    backoff.reset()
                    outage = None
                    await self._session(client)
                    return
            except (PublishError, aiomqtt.MqttError, OSError) as exc:
                if outage is None:
                    outage = time.monotonic()
                if self.ctx.upstream_done.is_set():
                    _LOGGER.info(
                        "broker unreachable at shutdown (%s); %d results stay in the outbox",
                        exc,
                        self.outbox.stats.depth,
                    )
                    return
                delay = backoff.next()
                _LOGGER.warning(
                    "%s; retrying in %.1fs (attempt %d)",
                    exc if isinstance(exc, PublishError) else connector.describe(exc),
                    delay,
                    backoff.attempts,
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.ctx.upstream_done.wait(), delay)

    def _reconnected(self, outage_s: float, attempts: int) -> None:
        event = Event(
            event_type="broker_reconnected",
            data={"outage_s": round(outage_s, 3), "attempts": attempts},
        )
        try:
            self.ctx.channels.results.put_nowait(event)
        except asyncio.QueueFull:
            _LOGGER.warning("results queue full: broker_reconnected event not sent")

    async def _session(self, client: Client) -> None:
        """One connection's work; returns after the shutdown flush."""
        topics = self.topics
        await client.subscribe(topics.command_filter, qos=1)
        if self.service.settings.homeassistant_discovery:
            await client.subscribe(topics.homeassistant_status, qos=1)
            await self._announce(client)
        await client.publish(topics.availability, AVAILABLE, qos=1, retain=True)
        self.service.connected.set()
        try:
            await self._work(client)
            await self._publish_state(client)
            await client.publish(topics.availability, UNAVAILABLE, qos=1, retain=True)
        except asyncio.CancelledError:
            # Cut short: say "offline" without waiting (a graceful disconnect skips the will).
            with contextlib.suppress(Exception):
                client._client.publish(topics.availability, UNAVAILABLE, 1, True)
            raise

    async def _work(self, client: Client) -> None:
        """Send, receive and refresh the state until the shutdown flush is done."""
        try:
            async with asyncio.TaskGroup() as group:
                workers = [
                    group.create_task(self._send(client), name="mqtt:send"),
                    group.create_task(self._receive(client), name="mqtt:receive"),
                    group.create_task(self._refresh_state(client), name="mqtt:state"),
                ]
                await self._until_flushed()
                for task in workers:
                    task.cancel()
        except ExceptionGroup as group:
            # One failure (the connection dropped) ends the session; report the first cause.
            errors = _leaves(group)
            for other in errors[1:]:
                _LOGGER.debug("also: %r", other)
            raise errors[0] from None
        finally:
            self.service.connected.clear()

    async def _until_flushed(self) -> None:
        await self.ctx.upstream_done.wait()
        await self._accepted_all.wait()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.service.shutdown_timeout_s * _FLUSH_SHARE
        # A count to watch, not an event; bounded by the deadline.
        while self.outbox.stats.depth > len(self.service.acked) and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        left = self.outbox.stats.depth - len(self.service.acked)
        _LOGGER.info("publisher flushed; %d results stay in the outbox", left)

    async def _announce(self, client: Client) -> None:
        values = self.service.state.values
        payload = render_discovery(self.topics, values["tiers"], values["model"])
        await client.publish(self.topics.discovery, payload, qos=1, retain=True)
        _LOGGER.debug("Home Assistant discovery sent to %s", self.topics.discovery)

    # -- sending ------------------------------------------------------------------------

    async def _send(self, client: Client) -> None:
        window = asyncio.Semaphore(self.service.settings.max_inflight)
        last = 0
        async with asyncio.TaskGroup() as group:
            while True:
                self.outbox.changed.clear()
                rows = await self.outbox.pending(last, _BATCH)
                if not rows:
                    await self.outbox.changed.wait()
                    continue
                last = rows[-1].seq
                for row in rows:
                    if row.seq in self.service.acked:
                        continue
                    await window.acquire()
                    group.create_task(
                        self._send_one(client, row, window), name=f"mqtt:send:{row.seq}"
                    )

    async def _send_one(self, client: Client, row: Stored, window: asyncio.Semaphore) -> None:
        properties = None
        if row.correlation is not None and self.service.connector.protocol == V5:
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.CorrelationData = row.correlation
        try:
            await client.publish_acked(row.topic, row.payload, properties)
        except PublishRefused as exc:
            if row.topic.startswith(self.topics.base + "/"):
                raise  # our own topics: keep it, reconnect, retry (the log says why)
            # A requester's response topic the broker will not take: do not let it block.
            _LOGGER.warning("%s; reply seq %d dropped", exc, row.seq)
        finally:
            window.release()
        self.service.acked.add(row.seq)
        self._acks.append(row.seq)
        self._ack_ready.set()
        if self.service.observer is not None:
            self.service.observer(row, time.time())

    async def _flush_acks(self) -> None:
        while True:
            await self._ack_ready.wait()
            await asyncio.sleep(_ACK_GATHER_S)
            await self._remove_acked()

    async def _remove_acked(self) -> None:
        self._ack_ready.clear()
        seqs, self._acks = self._acks, []
        if seqs:
            await self.outbox.remove(seqs)
            self.service.acked.difference_update(seqs)

    # -- receiving ----------------------------------------------------------------------

    async def _receive(self, client: Client) -> None:
        async for message in client.messages:
            await self._handle(client, message)

    async def _handle(self, client: Client, message: aiomqtt.Message) -> None:
        topic = message.topic.value
        payload = message.payload if isinstance(message.payload, bytes) else b""
        if topic == self.topics.homeassistant_status:
            if payload.strip() == b"online":
                _LOGGER.info("Home Assistant is online: sending discovery again")
                await self._announce(client)
                self.service.state_dirty.set()
            return
        name = self.topics.command_name(topic)
        if name is None:
            return  # not addressed to this device
        if self.ctx.draining.is_set():
            _LOGGER.info("shutting down: command %s ignored", name)
            return
        results = self.ctx.channels.results
        if message.retain:
            await results.put(
                error_event("retained_command", "retained commands are not executed", name)
            )
            return
        props = message.properties
        response_topic = getattr(props, "ResponseTopic", None) if props else None
        correlation = getattr(props, "CorrelationData", None) if props else None
        command = parse_command(
            name, payload, self.service.settings.max_command_bytes, response_topic, correlation
        )
        if isinstance(command, Event):
            _LOGGER.info("command %s rejected: %s", name, command.data.get("message"))
            await results.put(command)
            return
        try:
            self.ctx.channels.commands.put_nowait(command)
        except asyncio.QueueFull:
            await results.put(
                error_event("busy", "too many commands waiting; try again", name, command.reply)
            )

    # -- state --------------------------------------------------------------------------

    async def _refresh_state(self, client: Client) -> None:
        interval = self.service.settings.state_interval_s
        while True:
            self.service.state_dirty.clear()
            await self._publish_state(client)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.service.state_dirty.wait(), interval)
            await asyncio.sleep(_STATE_COALESCE_S)

    async def _publish_state(self, client: Client) -> None:
        payload = self.service.state.render(self.outbox.stats, self.service.connector.protocol_name)
        await client.publish(self.topics.state, payload, qos=1, retain=True)


def _leaves(group: BaseExceptionGroup[Exception]) -> list[Exception]:
    """The exceptions of a (nested) exception group, depth first."""
    leaves: list[Exception] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            leaves.extend(_leaves(exc))
        else:
            leaves.append(exc)
    return leaves
