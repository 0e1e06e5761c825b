"""The service's store: the transactional inbox and outbox on aiosqlite (WAL).

One SQLite file per (service, partition). A batch of handled events is one transaction:
inbox rows (primary key = eventId, so a conflict means duplicate), the business change the
handler makes on the same connection, and the outbox rows of the events it produces. The
outbox is published after commit. Rows JetStream acknowledged are deleted in the next write
transaction (one fsync per batch, not two); until then a restart may publish them again,
which JetStream de-duplicates by eventId and the consumers' inboxes would catch anyway.

Statements run inline on the event loop, not through aiosqlite's worker thread: a statement on
a local SQLite file takes microseconds, while each thread round trip cost more than the
statement itself (5+ per message; see docs/PERFORMANCE.md). What can block for long runs on the
connection's thread: COMMIT (the fsync), autocommitted deletes, inbox pruning, schema.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

import aiosqlite
import orjson

from common.envelope import Envelope
from common.publisher import HDR_MSG_ID, OutgoingMessage, Publisher

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
_INSERT_OUTBOX: Final = (
    "INSERT INTO outbox (event_id, event_type, subject, body, headers, created_at)"
    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (event_id) DO NOTHING"
)
_INSERT_INBOX: Final = (
    "INSERT INTO inbox (event_id, event_type, processed_at) VALUES (?, ?, ?)"
    " ON CONFLICT (event_id) DO NOTHING"
)
# One statement for a whole list of ids (a JSON array), not one per row.
_DELETE_SENT: Final = "DELETE FROM outbox WHERE event_id IN (SELECT value FROM json_each(?))"


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
        # Outbox rows published and acknowledged, deleted with the next write (see the top).
        self._sent: list[str] = []
        # True while the outbox may hold rows nobody is about to publish (at start, after a
        # failed publish): the runner then re-reads the whole outbox instead of publishing
        # only what its batch produced.
        self.outbox_backlog = True

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
        """BEGIN IMMEDIATE … COMMIT, or ROLLBACK on error (including cancellation).
        Outbox rows acknowledged since the last write are deleted in it."""
        async with self.lock:
            db = self.db
            await db.execute("BEGIN IMMEDIATE")
            try:
                deleted = self._delete_sent(db._conn)
                yield db
            except BaseException:
                await db.execute("ROLLBACK")
                raise
            await db.execute_in_thread("COMMIT")  # the fsync: off the event loop
            del self._sent[:deleted]

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """One message's changes inside the batch transaction; undone alone on error."""
        conn = self.db._conn
        conn.execute("SAVEPOINT msg")
        try:
            yield
        except BaseException:
            conn.execute("ROLLBACK TO msg")
            conn.execute("RELEASE msg")
            raise
        conn.execute("RELEASE msg")

    def record_inbox(self, envelope: Envelope, now: float) -> bool:
        """Insert the event into the inbox, inside the open transaction; False if it was
        already there (a duplicate)."""
        cursor = self.db._conn.execute(_INSERT_INBOX, (envelope.event_id_str, envelope.event_type, now))
        return cursor.rowcount == 1

    def add_outbox(self, messages: Sequence[OutgoingMessage]) -> None:
        """Queue messages for publishing, inside the open transaction; an event already
        queued is not queued twice."""
        if messages:
            now = time.time()
            self.db._conn.executemany(_INSERT_OUTBOX, [_outbox_row(m, now) for m in messages])

    def _delete_sent(self, conn: sqlite3.Connection) -> int:
        """Delete the acknowledged rows in the open transaction; how many ids it covered
        (forgotten once the transaction commits: more may be added meanwhile)."""
        count = len(self._sent)
        if count:
            conn.execute(_DELETE_SENT, (orjson.dumps(self._sent[:count]),))
        return count

    async def pending_outbox(self, *, limit: int = 4096) -> list[OutboxRow]:
        """Outbox rows not yet acknowledged by JetStream, oldest first."""
        if self._sent:
            async with self.transaction():
                pass  # it deletes the acknowledged rows
        async with (
            self.lock,
            self.db.execute(
                "SELECT event_id, event_type, subject, body, headers FROM outbox ORDER BY seq LIMIT ?",
                (limit,),
            ) as cursor,
        ):
            rows = await cursor.fetchall()
        return [OutboxRow(r[0], r[1], r[2], bytes(r[3]), orjson.loads(r[4])) for r in rows]

    def mark_sent(self, event_ids: Sequence[str]) -> None:
        """Forget outbox rows JetStream has acknowledged (deleted with the next write)."""
        self._sent.extend(event_ids)

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


def _outbox_row(message: OutgoingMessage, now: float) -> tuple[Any, ...]:
    """A message's outbox row, in `_INSERT_OUTBOX`'s column order."""
    headers = message.headers
    return (
        headers[HDR_MSG_ID],
        message.event_type,
        message.subject,
        message.body,
        orjson.dumps(headers),
        now,
    )


async def flush_outbox(store: Store, publisher: Publisher) -> int:
    """Publish every unsent outbox row (pipelined), then forget the acknowledged ones.

    Safe to run concurrently and after a crash: JetStream drops re-publishes by eventId.
    The backlog flag is cleared before the read, so a publish failing elsewhere meanwhile
    leaves it set (its rows may have been committed after this read)."""
    sent = 0
    store.outbox_backlog = False
    try:
        rows = await store.pending_outbox()
        while rows:
            messages = [OutgoingMessage(r.subject, r.body, r.headers, r.event_type) for r in rows]
            await publisher.publish_messages(messages)
            store.mark_sent([r.event_id for r in rows])
            sent += len(rows)
            rows = await store.pending_outbox()
    except BaseException:
        store.outbox_backlog = True
        raise
    return sent
