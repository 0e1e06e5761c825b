"""The service's store: the transactional inbox and outbox on aiosqlite (WAL).

One SQLite file per (service, partition). A batch of handled events is one transaction:
inbox rows (primary key = eventId, so a conflict means duplicate), the business change the
handler makes on the same connection, and the outbox rows of the events it produces. The
outbox is published after commit and its rows are deleted once JetStream acknowledged them.

Statements run inline on the event loop, not through aiosqlite's worker thread: a statement on
a local SQLite file takes microseconds, while each thread round trip cost more than the
statement itself (5+ per message; see docs/PERFORMANCE.md). What can block for long runs on the
connection's thread: COMMIT (the fsync), the autocommitted outbox DELETE, inbox pruning, schema.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

import aiosqlite
import orjson

from common.envelope import Envelope
from common.publisher import OutgoingMessage, Publisher

__all__ = ["OutboxRow", "Store", "flush_outbox"]

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS inbox (
    event_id     TEXT PRIMARY KEY,
    event_type   TEXT NOT NULL,
    processed_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS inbox_processed_at ON inbox (processed_at);
CREATE TABLE IF NOT EXISTS outbox (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id   TEXT NOT NULL UNIQUE,
    event_type TEXT NOT NULL,
    subject    TEXT NOT NULL,
    body       BLOB NOT NULL,
    headers    BLOB NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS suspects (
    stream_seq INTEGER PRIMARY KEY,
    marked_at  REAL NOT NULL
);
"""


_T = TypeVar("_T")


class _InlineConnection(aiosqlite.Connection):
    """aiosqlite's API, but each call runs inline (the caller holds `Store.lock`, so the
    connection is never used by two tasks at once); `in_thread` for what may block."""

    async def _execute(self, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        if not self._running or not self._connection:
            raise ValueError("Connection closed")
        return fn(*args, **kwargs)

    async def in_thread(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Run `fn` on the connection's worker thread; the event loop stays free meanwhile."""
        result: _T = await super()._execute(fn, *args)  # type: ignore[no-untyped-call]
        return result

    async def execute_in_thread(self, sql: str, parameters: Sequence[Any] = ()) -> int:
        """Execute one statement on the worker thread; its rowcount."""
        cursor = await self.in_thread(self._conn.execute, sql, parameters)
        return int(cursor.rowcount)


@dataclass(frozen=True, slots=True)
class OutboxRow:
    seq: int
    event_id: str
    event_type: str
    subject: str
    body: bytes
    headers: dict[str, str]


class Store:
    """The inbox/outbox store, plus whatever tables the service's `schema` adds."""

    def __init__(self, path: Path, *, schema: str = "", synchronous: str = "FULL") -> None:
        self.path = path
        self._schema = schema
        self._synchronous = synchronous
        self._db: _InlineConnection | None = None
        # One connection: the batch transaction, an API's write and an outbox flush take
        # turns, so none of them sees another's uncommitted rows.
        self.lock = asyncio.Lock()

    @property
    def db(self) -> _InlineConnection:
        if self._db is None:
            raise RuntimeError("store is not open")
        return self._db

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        path = str(self.path)

        def connector() -> sqlite3.Connection:
            # Opened on the worker thread, used inline from the loop's thread as well.
            return sqlite3.connect(path, isolation_level=None, check_same_thread=False)

        db = _InlineConnection(connector, iter_chunk_size=64)
        await db
        self._db = db
        # FULL: a commit survives power loss, so an ack never outruns its effect.
        for pragma in ("journal_mode=WAL", f"synchronous={self._synchronous}", "foreign_keys=ON"):
            await db.in_thread(db._conn.execute, f"PRAGMA {pragma}")
        await db.in_thread(db._conn.executescript, _SCHEMA + self._schema)

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """BEGIN IMMEDIATE … COMMIT, or ROLLBACK on error (including cancellation)."""
        async with self.lock:
            db = self.db
            await db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                await db.execute("ROLLBACK")
                raise
            await db.execute_in_thread("COMMIT")  # the fsync: off the event loop

    @asynccontextmanager
    async def savepoint(self, db: aiosqlite.Connection) -> AsyncIterator[None]:
        """One message's changes inside the batch transaction; undone alone on error."""
        await db.execute("SAVEPOINT msg")
        try:
            yield
        except BaseException:
            await db.execute("ROLLBACK TO msg")
            await db.execute("RELEASE msg")
            raise
        await db.execute("RELEASE msg")

    @staticmethod
    async def record_inbox(db: aiosqlite.Connection, envelope: Envelope) -> bool:
        """Insert the event into the inbox; False if it was already there (a duplicate)."""
        cursor = await db.execute(
            "INSERT INTO inbox (event_id, event_type, processed_at) VALUES (?, ?, ?)"
            " ON CONFLICT (event_id) DO NOTHING",
            (str(envelope.event_id), envelope.event_type, time.time()),
        )
        return cursor.rowcount == 1

    @staticmethod
    async def add_outbox(
        db: aiosqlite.Connection, events: Sequence[Envelope], headers: Sequence[dict[str, str]]
    ) -> None:
        """Queue produced events for publishing; an event already queued is not queued twice."""
        now = time.time()
        await db.executemany(
            "INSERT INTO outbox (event_id, event_type, subject, body, headers, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (event_id) DO NOTHING",
            [
                (str(e.event_id), e.event_type, e.subject, e.to_json(), orjson.dumps(h), now)
                for e, h in zip(events, headers, strict=True)
            ],
        )

    async def pending_outbox(self, *, limit: int = 4096) -> list[OutboxRow]:
        async with (
            self.lock,
            self.db.execute(
                "SELECT seq, event_id, event_type, subject, body, headers FROM outbox ORDER BY seq LIMIT ?",
                (limit,),
            ) as cursor,
        ):
            rows = await cursor.fetchall()
        return [OutboxRow(r[0], r[1], r[2], r[3], bytes(r[4]), orjson.loads(r[5])) for r in rows]

    async def mark_sent(self, seqs: Sequence[int]) -> None:
        """Forget outbox rows JetStream has acknowledged."""
        if not seqs:
            return
        async with self.lock:
            await self.db.execute_in_thread(
                f"DELETE FROM outbox WHERE seq IN ({','.join('?' * len(seqs))})",  # noqa: S608
                list(seqs),
            )

    async def mark_suspect(self, stream_seq: int) -> None:
        """Note, durably, that a redelivered message is being handled: if the process dies
        now, the next life knows which message it was."""
        async with self.lock:
            await self.db.execute_in_thread(
                "INSERT INTO suspects (stream_seq, marked_at) VALUES (?, ?)"
                " ON CONFLICT (stream_seq) DO NOTHING",
                (stream_seq, time.time()),
            )

    async def clear_suspect(self, stream_seq: int) -> None:
        async with self.lock:
            await self.db.execute_in_thread("DELETE FROM suspects WHERE stream_seq = ?", (stream_seq,))

    async def suspects(self) -> set[int]:
        """Stream sequences of messages a previous life of this process died handling."""
        async with self.lock, self.db.execute("SELECT stream_seq FROM suspects") as cursor:
            return {int(row[0]) for row in await cursor.fetchall()}

    async def prune_inbox(self, *, older_than_seconds: float) -> int:
        """Delete inbox rows older than the retention (well past the redelivery horizon)."""
        async with self.lock:
            return await self.db.execute_in_thread(
                "DELETE FROM inbox WHERE processed_at < ?", (time.time() - older_than_seconds,)
            )

    async def inbox_size(self) -> int:
        async with self.lock, self.db.execute("SELECT count(*) FROM inbox") as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row else 0


async def flush_outbox(store: Store, publisher: Publisher) -> int:
    """Publish every unsent outbox row (pipelined), then forget the acknowledged ones.

    Safe to run concurrently and after a crash: JetStream drops re-publishes by eventId."""
    sent = 0
    rows = await store.pending_outbox()
    while rows:
        messages = [OutgoingMessage(r.subject, r.body, r.headers, r.event_type) for r in rows]
        await publisher.publish_messages(messages)
        await store.mark_sent([r.seq for r in rows])
        sent += len(rows)
        rows = await store.pending_outbox()
    return sent
