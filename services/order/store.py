"""order's tables: the orders this process accepted over HTTP, and the cancellations its
partition decided.

With several partitions, the process that took `POST /orders` need not own the order's
partition, so cancellations are their own table, keyed by order id, in the owning
partition's store; `orders.status` is only updated where both live in one store.
"""

from typing import Final

import aiosqlite

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS orders (
    order_id       TEXT PRIMARY KEY,
    correlation_id TEXT NOT NULL,
    customer_id    TEXT NOT NULL,
    total_cents    INTEGER NOT NULL,
    status         TEXT NOT NULL,
    reason         TEXT,
    created_at     REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS cancellations (
    order_id       TEXT PRIMARY KEY,
    reason         TEXT NOT NULL,
    correlation_id TEXT NOT NULL,
    cancelled_at   REAL NOT NULL
);
"""


async def insert_order(
    db: aiosqlite.Connection, *, order_id: str, correlation_id: str, customer_id: str,
    total_cents: int, created_at: float,
) -> None:  # fmt: skip
    await db.execute(
        "INSERT INTO orders (order_id, correlation_id, customer_id, total_cents, status,"
        " created_at) VALUES (?, ?, ?, ?, 'placed', ?)",
        (order_id, correlation_id, customer_id, total_cents, created_at),
    )


async def correlation_of(db: aiosqlite.Connection, order_id: str) -> str | None:
    """The correlation id of an order this process accepted, or None."""
    async with db.execute("SELECT correlation_id FROM orders WHERE order_id = ?", (order_id,)) as cur:
        row = await cur.fetchone()
    return str(row[0]) if row else None


async def cancel_order(
    db: aiosqlite.Connection, order_id: str, reason: str, *, correlation_id: str, at: float
) -> bool:
    """Record the cancellation (once per order); False if it was already cancelled."""
    cursor = await db.execute(
        "INSERT INTO cancellations (order_id, reason, correlation_id, cancelled_at)"
        " VALUES (?, ?, ?, ?) ON CONFLICT (order_id) DO NOTHING",
        (order_id, reason, correlation_id, at),
    )
    await db.execute(
        "UPDATE orders SET status = 'cancelled', reason = ? WHERE order_id = ?", (reason, order_id)
    )
    return cursor.rowcount == 1
