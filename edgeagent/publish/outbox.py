"""The durable outbox: every result is on disk before it is sent, and leaves after its PUBACK.

SQLite in WAL mode with ``synchronous=FULL``: a committed append survives a
crash of the daemon and a loss of power. Each result gets its envelope here —
``msg_id`` (random, unique), ``seq`` (per device, monotonic, never reused while
the state directory lives) and ``ts`` (RFC 3339) — and the payload is stored
as the exact bytes sent, so a retry is byte-identical.

The outbox is bounded by a count and a byte size. When an append would pass
either bound, ``overflow`` decides: ``drop_oldest`` deletes the oldest unsent
results, ``drop_newest`` refuses the incoming ones. Either way the discards are
counted, persistently, and the count is in the state message.

All SQLite work runs on one thread of its own, so neither the event loop nor
the model's worker thread waits for an fsync.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

from edgeagent.errors import OutboxError
from edgeagent.events import new_id

_LOGGER = logging.getLogger(__name__)
_T = TypeVar("_T")

SCHEMA_VERSION = 1
Overflow = Literal["drop_oldest", "drop_newest"]
Synchronous = Literal["OFF", "NORMAL", "FULL", "EXTRA"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY,
    msg_id TEXT NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    correlation BLOB,
    enqueued REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta VALUES ('next_seq', 1), ('dropped', 0);
"""


@dataclass(frozen=True)
class Outgoing:
    """A result on its way in: absolute topic, payload fields without the envelope."""

    topic: str
    body: dict[str, Any]
    ts: float
    correlation: bytes | None = None


@dataclass(frozen=True)
class Stored:
    """A result in the outbox, waiting for its PUBACK."""

    seq: int
    msg_id: str
    topic: str
    payload: bytes
    correlation: bytes | None
    enqueued: float  # time.time() when it was accepted


@dataclass(frozen=True)
class OutboxStats:
    depth: int
    bytes: int
    dropped: int


def rfc3339(ts: float) -> str:
    """``2025-05-01T12:00:00.123Z``."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def render(seq: int, msg_id: str, item: Outgoing) -> bytes:
    """The payload bytes: the envelope first, then the body; compact UTF-8 JSON."""
    envelope = {"msg_id": msg_id, "seq": seq, "ts": rfc3339(item.ts)}
    return json.dumps({**envelope, **item.body}, ensure_ascii=False, separators=(",", ":")).encode()


class Outbox:
    """See the module docstring. ``open`` before use, ``close`` at the end."""

    def __init__(
        self,
        path: Path,
        max_messages: int,
        max_bytes: int,
        overflow: Overflow = "drop_oldest",
        synchronous: Synchronous = "FULL",
    ) -> None:
        self.path = path
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.overflow = overflow
        self._synchronous = synchronous
        self._db: sqlite3.Connection | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._depth = 0
        self._bytes = 0
        self._dropped = 0
        self._next_seq = 1
        self.changed = asyncio.Event()
        """Set when results were appended; the sender clears it before looking."""

    # -- lifecycle ------------------------------------------------------------------------

    async def open(self) -> None:
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="edgeagent-outbox")
        try:
            await self._call(self._open)
        except BaseException:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise
        _LOGGER.info(
            "outbox %s: %d results pending (%d bytes), next seq %d, %d dropped so far",
            self.path,
            self._depth,
            self._bytes,
            self._next_seq,
            self._dropped,
        )
        if self._depth:
            self.changed.set()

    async def close(self) -> None:
        if self._executor is None:
            return
        await self._call(self._close)
        self._executor.shutdown(wait=True)
        self._executor = None

    @property
    def stats(self) -> OutboxStats:
        return OutboxStats(self._depth, self._bytes, self._dropped)

    # -- operations -----------------------------------------------------------------------

    async def append(self, items: Sequence[Outgoing]) -> list[int]:
        """Write ``items`` in one transaction (one fsync); the seqs of those accepted."""
        seqs = await self._call(self._append, items)
        if seqs:
            self.changed.set()
        return seqs

    async def pending(self, after_seq: int, limit: int) -> list[Stored]:
        """Up to ``limit`` stored results with ``seq > after_seq``, oldest first."""
        return await self._call(self._pending, after_seq, limit)

    async def remove(self, seqs: Iterable[int]) -> None:
        """Forget acknowledged results (missing seqs are ignored)."""
        await self._call(self._remove, list(seqs))

    async def pragmas(self) -> dict[str, Any]:
        """journal_mode, synchronous (0 OFF, 1 NORMAL, 2 FULL, 3 EXTRA) and user_version."""

        def read() -> dict[str, Any]:
            db = self._conn()
            return {
                name: db.execute(f"PRAGMA {name}").fetchone()[0]
                for name in ("journal_mode", "synchronous", "user_version")
            }

        return await self._call(read)

    # -- on the outbox thread -------------------------------------------------------------

    def _open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode != "wal":
                raise OutboxError(f"outbox {self.path}: cannot use WAL (journal_mode {mode})")
            db.execute(f"PRAGMA synchronous={self._synchronous}")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise OutboxError(
                    f"outbox {self.path}: schema version {version}, this edgeagent knows "
                    f"{SCHEMA_VERSION}"
                )
            db.executescript(
                f"BEGIN IMMEDIATE;{_SCHEMA}PRAGMA user_version={SCHEMA_VERSION};COMMIT;"
            )
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
            depth, size = db.execute(
                "SELECT count(*), coalesce(sum(length(payload)), 0) FROM outbox"
            ).fetchone()
        except sqlite3.Error as exc:
            raise OutboxError(f"outbox {self.path}: {exc}") from exc
        self._db = db
        self._next_seq, self._dropped = meta["next_seq"], meta["dropped"]
        self._depth, self._bytes = depth, size

    def _close(self) -> None:
        if self._db is not None:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._db.close()
            self._db = None

    def _append(self, items: Sequence[Outgoing]) -> list[int]:
        db = self._conn()
        seqs: list[int] = []
        rows = []
        seq, depth, size, dropped = self._next_seq, self._depth, self._bytes, 0
        now = time.time()
        for item in items:
            msg_id = new_id()
            payload = render(seq, msg_id, item)
            full = depth + 1 > self.max_messages or size + len(payload) > self.max_bytes
            if len(payload) > self.max_bytes or (full and self.overflow == "drop_newest"):
                dropped += 1
                continue
            rows.append((seq, msg_id, item.topic, payload, item.correlation, now))
            seqs.append(seq)
            seq, depth, size = seq + 1, depth + 1, size + len(payload)
        try:
            with _transaction(db):
                db.executemany("INSERT INTO outbox VALUES (?, ?, ?, ?, ?, ?)", rows)
                if depth > self.max_messages or size > self.max_bytes:
                    evicted, freed = self._evict_oldest(db, depth, size)
                    depth, size, dropped = depth - evicted, size - freed, dropped + evicted
                db.execute("UPDATE meta SET value = ? WHERE key = 'next_seq'", (seq,))
                if dropped:
                    db.execute(
                        "UPDATE meta SET value = value + ? WHERE key = 'dropped'", (dropped,)
                    )
        except sqlite3.Error as exc:
            raise OutboxError(f"outbox {self.path}: append failed: {exc}") from exc
        self._next_seq, self._depth, self._bytes = seq, depth, size
        if dropped:
            self._dropped += dropped
            _LOGGER.warning(
                "outbox full (%d results, %d bytes): %s dropped %d (total %d)",
                depth,
                size,
                self.overflow,
                dropped,
                self._dropped,
            )
        return seqs

    def _evict_oldest(self, db: sqlite3.Connection, depth: int, size: int) -> tuple[int, int]:
        """Delete the oldest rows until both bounds hold; (rows, bytes) deleted."""
        evicted = freed = 0
        last = None
        for seq, length in db.execute("SELECT seq, length(payload) FROM outbox ORDER BY seq"):
            if depth - evicted <= self.max_messages and size - freed <= self.max_bytes:
                break
            evicted, freed, last = evicted + 1, freed + length, seq
        if last is not None:
            db.execute("DELETE FROM outbox WHERE seq <= ?", (last,))
        return evicted, freed

    def _pending(self, after_seq: int, limit: int) -> list[Stored]:
        cursor = self._conn().execute(
            "SELECT seq, msg_id, topic, payload, correlation, enqueued FROM outbox "
            "WHERE seq > ? ORDER BY seq LIMIT ?",
            (after_seq, limit),
        )
        return [Stored(*row) for row in cursor]

    def _remove(self, seqs: list[int]) -> None:
        db = self._conn()
        removed = freed = 0
        try:
            with _transaction(db):
                for start in range(0, len(seqs), 500):
                    chunk = seqs[start : start + 500]
                    marks = ",".join("?" * len(chunk))
                    lengths = db.execute(
                        f"DELETE FROM outbox WHERE seq IN ({marks}) RETURNING length(payload)",
                        chunk,
                    ).fetchall()
                    removed += len(lengths)
                    freed += sum(length for (length,) in lengths)
        except sqlite3.Error as exc:
            raise OutboxError(f"outbox {self.path}: remove failed: {exc}") from exc
        self._depth -= removed
        self._bytes -= freed

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise OutboxError(f"outbox {self.path} is not open")
        return self._db

    async def _call(self, fn: Callable[..., _T], *args: Any) -> _T:
        if self._executor is None:
            raise OutboxError(f"outbox {self.path} is not open")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)


class _transaction:
    """BEGIN IMMEDIATE … COMMIT, or ROLLBACK on error (autocommit connection)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        if not self.db.in_transaction:
            self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None:
            self.db.execute("COMMIT")
        elif self.db.in_transaction:
            self.db.execute("ROLLBACK")
