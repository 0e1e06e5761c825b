"""The service's store: the transactional inbox and outbox on aiosqlite (WAL).

One SQLite file per (service, partition). A batch of handled events is one transaction:
inbox rows (primary key = eventId, so a conflict means duplicate), the business change the
handler makes on the same connection, and the outbox rows of the events it produces. The
outbox is published after commit and its rows are deleted once JetStream acknowledged them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

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
"""


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
        self._db: aiosqlite.Connection | None = None
        # One connection: the batch transaction, an API's write and an outbox flush take
        # turns, so none of them sees another's uncommitted rows.
        self.lock = asyncio.Lock()

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("store is not open")
        return self._db

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = await aiosqlite.connect(self.path, isolation_level=None)
        # FULL: a commit survives power loss, so an ack never outruns its effect.
        for pragma in ("journal_mode=WAL", f"synchronous={self._synchronous}", "foreign_keys=ON"):
            await self._db.execute(f"PRAGMA {pragma}")
        await self._db.executescript(_SCHEMA + self._schema)

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
            await db.execute("COMMIT")

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
            await self.db.execute(
                f"DELETE FROM outbox WHERE seq IN ({','.join('?' * len(seqs))})",  # noqa: S608
                list(seqs),
            )

    async def prune_inbox(self, *, older_than_seconds: float) -> int:
        """Delete inbox rows older than the retention (well past the redelivery horizon)."""
        async with self.lock:
            cursor = await self.db.execute(
                "DELETE FROM inbox WHERE processed_at < ?", (time.time() - older_than_seconds,)
            )
        return cursor.rowcount

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
