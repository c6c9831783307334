"""At-least-once delivery through the outbox: broker restarts, broker down at start, overflow."""

from __future__ import annotations

import asyncio
from pathlib import Path

from edgeagent.events import Transcript
from edgeagent.publish.service import PublishService

from .conftest import daemon_settings, until
from .mqtt_helpers import Mosquitto, Received, Subscriber, free_port

BASE = "edgeagent/testdev"
TRANSCRIPTS = f"{BASE}/transcript"


def transcript(i: int) -> Transcript:
    return Transcript(utterance_id=f"u{i:05d}", text=f"utterance {i}", final=True)


def deduplicated(messages: list[Received]) -> list[dict[str, object]]:
    """First copy of every msg_id, in arrival order."""
    seen: set[str] = set()
    unique = []
    for message in messages:
        if message.payload["msg_id"] not in seen:
            seen.add(message.payload["msg_id"])
            unique.append(message.payload)
    return unique


def assert_in_seq_order(unique: list[dict[str, object]]) -> None:
    seqs = [p["seq"] for p in unique]
    assert seqs == sorted(seqs), "per-topic order follows seq after de-duplication"
    assert len(set(seqs)) == len(seqs)


async def test_1000_results_while_mosquitto_restarts_three_times(
    short_tmp: Path, mosquitto: Mosquitto, subscribers: list[Subscriber], daemons
) -> None:  # type: ignore[no-untyped-def]
    events = f"{BASE}/event"
    sub = Subscriber(mosquitto.port, [TRANSCRIPTS, events], client_id="persistent-subscriber")
    subscribers.append(sub)
    daemon = daemons(daemon_settings(short_tmp / "state", mosquitto.port))
    await daemon.start()

    produced = 0

    async def produce() -> None:
        nonlocal produced
        for i in range(1000):
            await daemon.put(transcript(i))
            produced += 1
            await asyncio.sleep(0.001)

    async def restart_three_times() -> int:
        """Restart the broker at 250, 500, 750 results, each time once the daemon is back."""
        for count, mark in enumerate((250, 500, 750), start=1):
            await until(lambda m=mark: produced >= m, 60, f"{mark} results")  # type: ignore[misc]
            await asyncio.to_thread(mosquitto.restart, 0.3)
            await until(
                lambda c=count: len(deduplicated(sub.on(events))) >= c,  # type: ignore[misc]
                60,
                f"broker_reconnected #{count}",
            )
        return 3

    async with asyncio.timeout(120):
        _, restarts = await asyncio.gather(produce(), restart_three_times())

    await until(
        lambda: len({m.payload["msg_id"] for m in sub.on(TRANSCRIPTS)}) >= 1000,
        60,
        "every msg_id at the subscriber",
    )
    messages = sub.on(TRANSCRIPTS)
    unique = deduplicated(messages)
    assert restarts == 3
    assert len(unique) == 1000
    assert sorted(p["utterance_id"] for p in unique) == [f"u{i:05d}" for i in range(1000)]
    assert_in_seq_order(unique)
    # seq counts per device: with the broker_reconnected events it has no gaps (nothing dropped).
    reconnects = deduplicated(sub.on(events))
    assert [e["event_type"] for e in reconnects] == ["broker_reconnected"] * 3
    seqs = sorted(p["seq"] for p in unique + reconnects)
    assert seqs == list(range(1, 1004))
    # Duplicates (resent after a restart) are byte-identical copies.
    by_id: dict[str, bytes] = {}
    for message in messages:
        assert by_id.setdefault(message.payload["msg_id"], message.raw) == message.raw
    service = _service(daemon)
    await until(lambda: service.outbox.stats.depth == 0, 10, "an empty outbox")
    assert await daemon.stop() == 0


def _service(daemon) -> PublishService:  # type: ignore[no-untyped-def]
    return daemon.publish  # type: ignore[no-any-return]


def subscriber_with_session(
    directory: Path, port: int, topics: list[str], subscribers: list[Subscriber]
) -> tuple[Mosquitto, Subscriber]:
    """A persistent subscriber whose session the broker keeps, and the broker stopped again."""
    broker = Mosquitto(directory, port=port)
    broker.start()
    sub = Subscriber(port, topics)
    subscribers.append(sub)
    broker.stop()
    return broker, sub


async def test_broker_down_at_start_then_drains_in_order(
    short_tmp: Path, subscribers: list[Subscriber], daemons
) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    broker, sub = subscriber_with_session(short_tmp / "broker", port, [TRANSCRIPTS], subscribers)
    daemon = daemons(daemon_settings(short_tmp / "state", port))
    await daemon.start(connected=False)  # READY=1 without a broker: the outbox is open
    for i in range(200):
        await daemon.put(transcript(i))
    service = _service(daemon)
    await until(lambda: service.outbox.stats.depth == 200, 10, "200 results in the outbox")
    await asyncio.sleep(0.3)
    assert service.outbox.stats.depth == 200, "nothing leaves while the broker is down"
    status = daemon.supervisor.status_line()
    assert status.endswith("; mqtt not connected; outbox 200 waiting, 0 dropped"), status

    await asyncio.to_thread(broker.start)
    try:
        await until(lambda: len(sub.on(TRANSCRIPTS)) >= 200, 30, "the backlog")
        unique = deduplicated(sub.on(TRANSCRIPTS))
        assert [p["utterance_id"] for p in unique] == [f"u{i:05d}" for i in range(200)]
        assert_in_seq_order(unique)
        await until(lambda: service.outbox.stats.depth == 0, 10, "an empty outbox")
        assert "; mqtt connected; outbox 0 waiting" in daemon.supervisor.status_line()
        assert await daemon.stop() == 0
    finally:
        await asyncio.to_thread(broker.stop)


async def _overflow(short_tmp: Path, policy: str, subscribers, daemons) -> tuple[list, dict]:  # type: ignore[no-untyped-def]
    """81 results (80 transcripts, then broker_reconnected) into an outbox bounded at 50."""
    port = free_port()
    topics = [TRANSCRIPTS, f"{BASE}/state", f"{BASE}/event"]
    broker, sub = subscriber_with_session(short_tmp / "broker", port, topics, subscribers)
    settings = daemon_settings(
        short_tmp / "state",
        port,
        mqtt={"outbox_max_messages": 50, "outbox_overflow": policy},
    )
    daemon = daemons(settings)
    await daemon.start(connected=False)
    for i in range(80):
        await daemon.put(transcript(i))
    service = _service(daemon)
    await until(lambda: service.outbox.stats.dropped == 30, 10, "30 results dropped")
    assert service.outbox.stats.depth == 50
    await asyncio.to_thread(broker.start)
    try:
        await until(
            lambda: any(s["outbox"]["dropped"] == 31 for s in sub.payloads(f"{BASE}/state")),
            30,
            "the dropped count in the state message",
        )
        await until(lambda: service.outbox.stats.depth == 0, 10, "an empty outbox")
        await asyncio.sleep(0.2)
        unique = deduplicated(sub.on(TRANSCRIPTS))
        state = sub.payloads(f"{BASE}/state")[-1]
        events = [e["event_type"] for e in deduplicated(sub.on(f"{BASE}/event"))]
        assert await daemon.stop() == 0
    finally:
        await asyncio.to_thread(broker.stop)
    assert events == (["broker_reconnected"] if policy == "drop_oldest" else [])
    return unique, state


async def test_overflow_drop_oldest_is_counted(short_tmp: Path, subscribers, daemons) -> None:  # type: ignore[no-untyped-def]
    unique, state = await _overflow(short_tmp, "drop_oldest", subscribers, daemons)
    assert [p["utterance_id"] for p in unique] == [f"u{i:05d}" for i in range(31, 80)]
    assert state["outbox"]["dropped"] == 31 and state["outbox"]["overflow"] == "drop_oldest"
    # What was dropped left a gap in seq: a consumer can tell that something is missing.
    assert unique[0]["seq"] == 32


async def test_overflow_drop_newest_is_counted(short_tmp: Path, subscribers, daemons) -> None:  # type: ignore[no-untyped-def]
    unique, state = await _overflow(short_tmp, "drop_newest", subscribers, daemons)
    assert [p["utterance_id"] for p in unique] == [f"u{i:05d}" for i in range(50)]
    assert state["outbox"]["dropped"] == 31 and state["outbox"]["overflow"] == "drop_newest"
    assert [p["seq"] for p in unique] == list(range(1, 51))
