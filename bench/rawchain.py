"""The raw reference chain: payment, inventory, shipping and the order-status projection, each a
plain nats-py + sqlite3 process (`python -m bench.rawchain <role> ...`).

Written the way a competent engineer would without a framework: pull fetch 256, orjson, one
sqlite3 transaction per batch (WAL, synchronous=FULL, like Choreo's stores), deterministic
derived event ids, `publish_async` with `Nats-Msg-Id` for the whole batch, acks after the PubAcks.
It binds to the durable consumers `choreo provision` created, so it sees the same streams.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from nats.aio.msg import Msg

from bench.hop import NAMESPACE, _raw_validate, derived, raw_sqlite
from bench.support import connect

SCHEMAS = {
    "payment": "CREATE TABLE IF NOT EXISTS payments (order_id TEXT PRIMARY KEY, payment_id TEXT, amount_cents INTEGER, status TEXT);",
    "inventory": """
CREATE TABLE IF NOT EXISTS stock (sku TEXT PRIMARY KEY, available INTEGER NOT NULL CHECK (available >= 0));
CREATE TABLE IF NOT EXISTS order_items (order_id TEXT PRIMARY KEY, items BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS reservations (order_id TEXT PRIMARY KEY, reservation_id TEXT, items BLOB);
""",
    "shipping": "CREATE TABLE IF NOT EXISTS shipments (order_id TEXT PRIMARY KEY, shipment_id TEXT, carrier TEXT);",
    "projection": """
CREATE TABLE IF NOT EXISTS orders_view (order_id TEXT PRIMARY KEY, correlation_id TEXT, status TEXT, updated_at TEXT);
CREATE TABLE IF NOT EXISTS view_events (event_id TEXT PRIMARY KEY, order_id TEXT, correlation_id TEXT,
    causation_id TEXT, event_type TEXT, occurred_at TEXT);
""",
}
RANK = {"pending_payment": 0, "pending_inventory": 1, "pending_shipping": 2, "shipped": 3}
STATUS_AFTER = {
    "order.placed": "pending_payment",
    "payment.succeeded": "pending_inventory",
    "inventory.reserved": "pending_shipping",
    "shipment.scheduled": "shipped",
}
Out = tuple[str, bytes, dict[str, str]]


class Retry(Exception):
    """Not yet possible (an event of the same order is still on its way): nak with a delay."""


def payment(db: Any, event: dict[str, Any], now: str) -> list[Out]:
    if event["eventType"] != "order.placed":
        return []
    order_id, total = _raw_validate(event)
    payment_id = str(uuid.uuid5(NAMESPACE, f"{event['eventId']}:payment"))
    db.execute(
        "INSERT INTO payments VALUES (?, ?, ?, 'charged') ON CONFLICT (order_id) DO NOTHING",
        (order_id, payment_id, total),
    )
    payload = {"orderId": order_id, "paymentId": payment_id, "amountCents": total}
    return [derived(event, "payment.succeeded", payload, now)]


def inventory(db: Any, event: dict[str, Any], now: str) -> list[Out]:
    if event["eventType"] == "order.placed":
        order_id, _ = _raw_validate(event)
        items: dict[str, int] = {}
        for item in event["payload"]["items"]:
            items[item["sku"]] = items.get(item["sku"], 0) + item["quantity"]
        db.execute(
            "INSERT INTO order_items VALUES (?, ?) ON CONFLICT DO NOTHING", (order_id, orjson.dumps(items))
        )
        return []
    order_id = event["payload"]["orderId"]
    row = db.execute("SELECT items FROM order_items WHERE order_id = ?", (order_id,)).fetchone()
    if row is None:
        raise Retry(order_id)
    items = orjson.loads(row[0])
    marks = ",".join("?" * len(items))
    available = dict(
        db.execute(f"SELECT sku, available FROM stock WHERE sku IN ({marks})", list(items)).fetchall()
    )
    reservation_id = str(uuid.uuid5(NAMESPACE, f"{event['eventId']}:reservation"))
    if len(available) < len(items) or any(available[s] < q for s, q in items.items()):
        reason = "unknown_sku" if len(available) < len(items) else "out_of_stock"
        return [derived(event, "inventory.reservation_failed", {"orderId": order_id, "reason": reason}, now)]
    db.executemany(
        "UPDATE stock SET available = available - ? WHERE sku = ?", [(q, s) for s, q in items.items()]
    )
    db.execute(
        "INSERT INTO reservations VALUES (?, ?, ?) ON CONFLICT DO NOTHING", (order_id, reservation_id, row[0])
    )
    expires = (datetime.now(UTC) + timedelta(hours=24)).isoformat().replace("+00:00", "Z")
    payload = {
        "orderId": order_id, "reservationId": reservation_id,
        "items": [{"sku": s, "quantity": q} for s, q in items.items()], "expiresAt": expires,
    }  # fmt: skip
    return [derived(event, "inventory.reserved", payload, now)]


def shipping(db: Any, event: dict[str, Any], now: str) -> list[Out]:
    order_id = event["payload"]["orderId"]
    shipment_id = str(uuid.uuid5(NAMESPACE, f"{event['eventId']}:shipment"))
    db.execute(
        "INSERT INTO shipments VALUES (?, ?, 'raw-post') ON CONFLICT DO NOTHING", (order_id, shipment_id)
    )
    payload = {"orderId": order_id, "shipmentId": shipment_id, "carrier": "raw-post"}
    return [derived(event, "shipment.scheduled", payload, now)]


def projection(db: Any, event: dict[str, Any], now: str) -> list[Out]:
    order_id = event["payload"]["orderId"]
    db.execute(
        "INSERT INTO view_events VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        (
            event["eventId"],
            order_id,
            event["correlationId"],
            event["causationId"],
            event["eventType"],
            event["occurredAt"],
        ),
    )
    status = STATUS_AFTER.get(event["eventType"], "pending_payment")
    row = db.execute("SELECT status FROM orders_view WHERE order_id = ?", (order_id,)).fetchone()
    if row is not None and RANK.get(row[0], 0) >= RANK.get(status, 0):
        status = row[0]  # never backwards
    db.execute(
        "INSERT INTO orders_view VALUES (?, ?, ?, ?) ON CONFLICT (order_id) DO UPDATE SET status = excluded.status,"
        " updated_at = max(orders_view.updated_at, excluded.updated_at)",
        (order_id, event["correlationId"], status, event["occurredAt"]),
    )
    return []


ROLES: dict[str, Callable[[Any, dict[str, Any], str], list[Out]]] = {
    "payment": payment, "inventory": inventory, "shipping": shipping, "projection": projection,
}  # fmt: skip


async def serve(role: str, url: str, consumer: str, db_path: Path) -> None:
    import uvloop  # noqa: F401  (run under uvloop by main)

    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    react = ROLES[role]
    db = raw_sqlite(db_path, SCHEMAS[role])
    if role == "inventory":
        db.executemany(
            "INSERT OR IGNORE INTO stock VALUES (?, ?)", [(f"sku-{i}", 1_000_000) for i in range(1, 101)]
        )
    nc = await connect(url)
    js = nc.jetstream()
    sub = await js.pull_subscribe_bind(consumer, stream="EVENTS")
    sys.stdout.write("READY\n")
    sys.stdout.flush()
    while not stop.is_set():
        try:
            msgs = await sub.fetch(256, timeout=1.0)
        except Exception:
            continue
        now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        out: list[Out] = []
        done: list[Msg] = []
        retry: list[Msg] = []
        bad: list[Msg] = []
        db.execute("BEGIN IMMEDIATE")
        for msg in msgs:
            db.execute("SAVEPOINT m")
            try:
                out += react(db, orjson.loads(msg.data), now)
                done.append(msg)
            except Retry:
                db.execute("ROLLBACK TO m")
                retry.append(msg)
            except (ValueError, KeyError, TypeError):
                db.execute("ROLLBACK TO m")
                bad.append(msg)
            db.execute("RELEASE m")
        db.execute("COMMIT")
        futures = [await js.publish_async(s, b, headers=h) for s, b, h in out]
        await asyncio.wait_for(asyncio.gather(*futures), 10)
        for msg in done:
            await msg.ack()
        for msg in retry:
            await msg.nak(delay=0.2)
        for msg in bad:
            await msg.term()
    await nc.drain()


if __name__ == "__main__":
    import uvloop

    parser = argparse.ArgumentParser(prog="python -m bench.rawchain")
    parser.add_argument("role", choices=list(ROLES))
    parser.add_argument("--url", required=True)
    parser.add_argument("--consumer", required=True)
    parser.add_argument("--db", type=Path, required=True)
    args = parser.parse_args()
    uvloop.run(serve(args.role, args.url, args.consumer, args.db))
