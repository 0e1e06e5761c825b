"""payment's ledger: one row per order, so at most one charge and at most one refund."""

from dataclasses import dataclass
from typing import Final

import aiosqlite

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS payments (
    order_id     TEXT PRIMARY KEY,
    payment_id   TEXT NOT NULL,
    amount_cents INTEGER NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('charged', 'declined', 'refunded')),
    refund_id    TEXT
);
"""


@dataclass(frozen=True)
class Payment:
    order_id: str
    payment_id: str
    amount_cents: int
    status: str


async def record(
    db: aiosqlite.Connection, order_id: str, payment_id: str, amount_cents: int, status: str
) -> bool:
    """Record the charge (or decline) of an order; False if the order already has one."""
    cursor = await db.execute(
        "INSERT INTO payments (order_id, payment_id, amount_cents, status) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (order_id) DO NOTHING",
        (order_id, payment_id, amount_cents, status),
    )
    return cursor.rowcount == 1


async def refund(db: aiosqlite.Connection, order_id: str, refund_id: str) -> Payment | None:
    """Refund a charged order; None if it was never charged or is already refunded."""
    cursor = await db.execute(
        "UPDATE payments SET status = 'refunded', refund_id = ?"
        " WHERE order_id = ? AND status = 'charged'"
        " RETURNING order_id, payment_id, amount_cents, status",
        (refund_id, order_id),
    )
    row = await cursor.fetchone()
    await cursor.close()
    return Payment(*row) if row else None


async def totals(db: aiosqlite.Connection) -> dict[str, int]:
    """Count of ledger rows per status (for tests and operators)."""
    async with db.execute("SELECT status, count(*) FROM payments GROUP BY status") as cursor:
        return {str(r[0]): int(r[1]) for r in await cursor.fetchall()}
