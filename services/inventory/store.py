"""inventory's tables: stock per SKU, the items of each order, and reservations.

Each partition owns a share of every SKU's stock (initial // P, the remainder on partition 0),
so the partitions together hold exactly the configured stock and never coordinate.
"""

from typing import Final

import aiosqlite
import orjson

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS stock (
    sku       TEXT PRIMARY KEY,
    available INTEGER NOT NULL CHECK (available >= 0),
    initial   INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS order_items (
    order_id TEXT PRIMARY KEY,
    items    BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS reservations (
    order_id       TEXT PRIMARY KEY,
    reservation_id TEXT NOT NULL,
    items          BLOB NOT NULL
);
"""


def share(initial: int, partition: int, partitions: int) -> int:
    """This partition's share of a SKU's stock."""
    return initial // partitions + (initial % partitions if partition == 0 else 0)


async def seed(db: aiosqlite.Connection, *, sku_count: int, units: int) -> None:
    await db.executemany(
        "INSERT INTO stock (sku, available, initial) VALUES (?, ?, ?) ON CONFLICT (sku) DO NOTHING",
        [(f"sku-{i}", units, units) for i in range(1, sku_count + 1)],
    )


async def remember_items(db: aiosqlite.Connection, order_id: str, items: dict[str, int]) -> None:
    await db.execute(
        "INSERT INTO order_items (order_id, items) VALUES (?, ?) ON CONFLICT (order_id) DO NOTHING",
        (order_id, orjson.dumps(items)),
    )


async def items_of(db: aiosqlite.Connection, order_id: str) -> dict[str, int] | None:
    async with db.execute("SELECT items FROM order_items WHERE order_id = ?", (order_id,)) as cur:
        row = await cur.fetchone()
    return orjson.loads(row[0]) if row else None


async def reserve(
    db: aiosqlite.Connection, order_id: str, reservation_id: str, items: dict[str, int]
) -> str | None:
    """Reserve every item or none; the failure reason (`unknown_sku`, `out_of_stock`) or None."""
    marks = ",".join("?" * len(items))
    async with db.execute(
        f"SELECT sku, available FROM stock WHERE sku IN ({marks})",  # noqa: S608
        list(items),
    ) as cursor:
        available: dict[str, int] = {str(r[0]): int(r[1]) for r in await cursor.fetchall()}
    if len(available) < len(items):
        return "unknown_sku"
    if any(available[sku] < quantity for sku, quantity in items.items()):
        return "out_of_stock"
    await db.executemany(
        "UPDATE stock SET available = available - ? WHERE sku = ?",
        [(quantity, sku) for sku, quantity in items.items()],
    )
    await db.execute(
        "INSERT INTO reservations (order_id, reservation_id, items) VALUES (?, ?, ?)",
        (order_id, reservation_id, orjson.dumps(items)),
    )
    return None


async def stock_levels(db: aiosqlite.Connection, sku: str | None = None) -> list[dict[str, object]]:
    query = "SELECT sku, available, initial FROM stock"
    args: tuple[str, ...] = ()
    if sku is not None:
        query, args = query + " WHERE sku = ?", (sku,)
    async with db.execute(query + " ORDER BY rowid", args) as cursor:
        rows = await cursor.fetchall()
    return [{"sku": s, "available": a, "initial": i} for s, a, i in rows]


async def reserved_units(db: aiosqlite.Connection) -> dict[str, int]:
    totals: dict[str, int] = {}
    async with db.execute("SELECT items FROM reservations") as cursor:
        async for (items,) in cursor:
            for sku, quantity in orjson.loads(items).items():
                totals[sku] = totals.get(sku, 0) + quantity
    return totals
