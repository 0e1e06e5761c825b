"""order's tables: the orders it accepted and their own status."""

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


async def cancel_order(db: aiosqlite.Connection, order_id: str, reason: str) -> bool:
    """Mark the order cancelled; False if it was already cancelled."""
    cursor = await db.execute(
        "UPDATE orders SET status = 'cancelled', reason = ? WHERE order_id = ? AND status != 'cancelled'",
        (reason, order_id),
    )
    return cursor.rowcount == 1
