"""shipping's table: at most one shipment per order."""

from typing import Final

import aiosqlite

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS shipments (
    order_id    TEXT PRIMARY KEY,
    shipment_id TEXT NOT NULL,
    carrier     TEXT NOT NULL
);
"""


async def schedule(db: aiosqlite.Connection, order_id: str, shipment_id: str, carrier: str) -> bool:
    cursor = await db.execute(
        "INSERT INTO shipments (order_id, shipment_id, carrier) VALUES (?, ?, ?)"
        " ON CONFLICT (order_id) DO NOTHING",
        (order_id, shipment_id, carrier),
    )
    return cursor.rowcount == 1


async def count(db: aiosqlite.Connection) -> int:
    async with db.execute("SELECT count(*) FROM shipments") as cursor:
        row = await cursor.fetchone()
    return int(row[0]) if row else 0
