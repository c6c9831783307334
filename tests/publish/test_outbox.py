"""The outbox on its own: pragmas, envelope, order, bounds, persistence across reopen."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest

from edgeagent.errors import OutboxError
from edgeagent.publish.outbox import Outbox, Outgoing, rfc3339


def item(i: int, size: int = 0) -> Outgoing:
    return Outgoing(
        "edgeagent/d/event", {"event_type": "n", "i": i, "pad": "x" * size}, time.time()
    )


async def opened(path: Path, **kwargs: object) -> Outbox:
    outbox = Outbox(path, **{"max_messages": 1000, "max_bytes": 1 << 20, **kwargs})  # type: ignore[arg-type]
    await outbox.open()
    return outbox


async def test_pragmas_wal_and_synchronous_full(tmp_path: Path) -> None:
    outbox = await opened(tmp_path / "outbox.sqlite3")
    try:
        pragmas = await outbox.pragmas()
        assert pragmas == {"journal_mode": "wal", "synchronous": 2, "user_version": 1}  # 2: FULL
    finally:
        await outbox.close()
    # WAL is a property of the file: a fresh connection sees it too.
    db = sqlite3.connect(tmp_path / "outbox.sqlite3")
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        db.close()


async def test_envelope_order_and_seq_survive_reopen(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    outbox = await opened(path)
    assert await outbox.append([item(0), item(1), item(2)]) == [1, 2, 3]
    rows = await outbox.pending(0, 10)
    payloads = [json.loads(r.payload) for r in rows]
    assert [p["seq"] for p in payloads] == [1, 2, 3]
    assert [p["i"] for p in payloads] == [0, 1, 2]
    assert len({p["msg_id"] for p in payloads}) == 3
    assert list(payloads[0])[:3] == ["msg_id", "seq", "ts"]
    assert payloads[0]["ts"].endswith("Z")
    await outbox.remove([1, 2, 3])
    assert outbox.stats.depth == 0 and outbox.stats.bytes == 0
    await outbox.close()

    again = await opened(path)  # seq never goes back, even with the outbox empty
    assert await again.append([item(3)]) == [4]
    assert again.stats.depth == 1
    await again.close()


async def test_byte_bound_and_oversized_result(tmp_path: Path) -> None:
    outbox = await opened(tmp_path / "o.sqlite3", max_bytes=2000)
    await outbox.append([item(i, size=400) for i in range(8)])
    assert outbox.stats.bytes <= 2000 and outbox.stats.dropped == 8 - outbox.stats.depth
    rows = await outbox.pending(0, 100)
    assert [json.loads(r.payload)["i"] for r in rows] == list(range(8 - len(rows), 8))
    dropped = outbox.stats.dropped
    assert await outbox.append([item(99, size=5000)]) == []  # can never fit: dropped, counted
    assert outbox.stats.dropped == dropped + 1
    await outbox.close()


async def test_dropped_count_is_persistent(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite3"
    outbox = await opened(path, max_messages=2, overflow="drop_newest")
    await outbox.append([item(i) for i in range(5)])
    assert (outbox.stats.depth, outbox.stats.dropped) == (2, 3)
    await outbox.close()
    again = await opened(path, max_messages=2, overflow="drop_newest")
    assert (again.stats.depth, again.stats.dropped) == (2, 3)
    await again.close()


async def test_unusable_database_is_an_outbox_error(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(OutboxError, match=str(path)):
        await opened(path)


def test_rfc3339() -> None:
    assert rfc3339(0.0) == "1970-01-01T00:00:00.000Z"
