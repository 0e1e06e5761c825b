"""order-status's tables: one row per order, and every event seen (for traces)."""

from typing import Any, Final

import aiosqlite

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS orders_view (
    order_id       TEXT PRIMARY KEY,
    correlation_id TEXT NOT NULL,
    status         TEXT NOT NULL,
    reason         TEXT,
    updated_at     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS orders_view_status ON orders_view (status, updated_at);
CREATE TABLE IF NOT EXISTS view_events (
    event_id       TEXT PRIMARY KEY,
    order_id       TEXT NOT NULL,
    correlation_id TEXT NOT NULL,
    causation_id   TEXT,
    event_type     TEXT NOT NULL,
    service        TEXT NOT NULL,
    occurred_at    TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS view_events_order ON view_events (order_id, occurred_at);
CREATE INDEX IF NOT EXISTS view_events_correlation ON view_events (correlation_id, occurred_at);
"""

_ORDER_COLUMNS: Final = "order_id, correlation_id, status, reason, updated_at"


async def current_status(db: aiosqlite.Connection, order_id: str) -> str | None:
    async with db.execute("SELECT status FROM orders_view WHERE order_id = ?", (order_id,)) as cur:
        row = await cur.fetchone()
    return str(row[0]) if row else None


async def upsert_order(
    db: aiosqlite.Connection, *, order_id: str, correlation_id: str, status: str,
    reason: str | None, updated_at: str,
) -> None:  # fmt: skip
    await db.execute(
        "INSERT INTO orders_view (order_id, correlation_id, status, reason, updated_at)"
        " VALUES (?, ?, ?, ?, ?) ON CONFLICT (order_id) DO UPDATE SET status = excluded.status,"
        " reason = coalesce(excluded.reason, orders_view.reason),"
        " updated_at = max(orders_view.updated_at, excluded.updated_at)",
        (order_id, correlation_id, status, reason, updated_at),
    )


async def add_event(db: aiosqlite.Connection, row: tuple[str | None, ...]) -> None:
    await db.execute(
        "INSERT INTO view_events (event_id, order_id, correlation_id, causation_id, event_type,"
        " service, occurred_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (event_id) DO NOTHING",
        row,
    )


def _order(row: Any) -> dict[str, Any]:
    order = dict(zip(("orderId", "correlationId", "status", "reason", "updatedAt"), row, strict=True))
    if order["reason"] is None:
        del order["reason"]
    return order


async def get_order(db: aiosqlite.Connection, order_id: str) -> dict[str, Any] | None:
    async with db.execute(
        f"SELECT {_ORDER_COLUMNS} FROM orders_view WHERE order_id = ?",  # noqa: S608
        (order_id,),
    ) as cursor:
        row = await cursor.fetchone()
    if row is None:
        return None
    order = _order(row)
    async with db.execute(
        "SELECT event_type FROM view_events WHERE order_id = ? ORDER BY occurred_at, rowid",
        (order_id,),
    ) as cursor:
        order["events"] = [r[0] for r in await cursor.fetchall()]
    return order


async def list_orders(db: aiosqlite.Connection, *, status: str | None, limit: int) -> list[dict[str, Any]]:
    where, args = ("WHERE status = ?", (status, limit)) if status else ("", (limit,))
    async with db.execute(
        f"SELECT {_ORDER_COLUMNS} FROM orders_view {where} ORDER BY updated_at DESC LIMIT ?",  # noqa: S608
        args,
    ) as cursor:
        return [_order(row) for row in await cursor.fetchall()]


async def trace(db: aiosqlite.Connection, correlation_id: str) -> list[dict[str, Any]]:
    async with db.execute(
        "SELECT event_id, causation_id, event_type, service, occurred_at, order_id FROM view_events"
        " WHERE correlation_id = ? ORDER BY occurred_at, rowid",
        (correlation_id,),
    ) as cursor:
        rows = await cursor.fetchall()
    keys = ("eventId", "causationId", "eventType", "service", "occurredAt", "orderId")
    return [dict(zip(keys, row, strict=True)) for row in rows]


async def counts_by_status(db: aiosqlite.Connection) -> dict[str, int]:
    async with db.execute("SELECT status, count(*) FROM orders_view GROUP BY status") as cursor:
        return {str(r[0]): int(r[1]) for r in await cursor.fetchall()}


async def snapshot(db: aiosqlite.Connection) -> dict[str, tuple[Any, ...]]:
    """The whole view, for comparing a rebuild with the live copy (updated_at excluded)."""
    view: dict[str, tuple[Any, ...]] = {}
    async with db.execute("SELECT order_id, correlation_id, status, reason FROM orders_view") as cur:
        async for row in cur:
            view[row[0]] = tuple(row[1:])
    async with db.execute(
        "SELECT order_id, group_concat(event_id, ',') FROM"
        " (SELECT order_id, event_id FROM view_events ORDER BY event_id) GROUP BY order_id"
    ) as cur:
        async for order_id, events in cur:
            view[order_id] = (*view.get(order_id, ()), events)
    return view
