"""The chaos suite's invariant checker: every order, every store, every consumer, no sample.

Sources of truth, read after quiescence: the whole `EVENTS` stream (admin), every SQLite store
under <data-dir>/stores (read-only; WAL readers see the last commit), consumer infos and the
`DLQ` stream. `check` returns the violations (empty = all invariants hold) and the counts.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from nats.aio.client import Client as NATS
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import ServiceUnavailableError

from common.envelope import parse_envelope
from common.inbox import Store
from services.contract import payload_registry
from services.order_status import handlers as view_handlers
from services.order_status import store as view_store
from tests.cluster import consumer_infos

TERMINAL = {"shipped", "cancelled"}
READ_DEADLINE_SECONDS = 300.0


@dataclass
class Event:
    seq: int
    event_id: str
    event_type: str
    order_id: str
    data: bytes
    subject: str


@dataclass
class Report:
    violations: list[str] = field(default_factory=list)
    counts: dict[str, Any] = field(default_factory=dict)

    def fail(self, invariant: str, offenders: list[Any] | int | str) -> None:
        if isinstance(offenders, list):
            if not offenders:
                return
            sample = ", ".join(str(o) for o in offenders[:5])
            self.violations.append(f"{invariant}: {len(offenders)} (e.g. {sample})")
        else:
            self.violations.append(f"{invariant}: {offenders}")


async def read_events(nc: NATS) -> list[Event]:
    """Every message of EVENTS, in stream order (an ephemeral no-ack consumer, bounded)."""
    js = nc.jetstream()
    total = (await js.stream_info("EVENTS")).state.messages
    sub = await js.pull_subscribe(
        "events.>", stream="EVENTS",
        config=ConsumerConfig(ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL,
                              inactive_threshold=60.0, mem_storage=True),
    )  # fmt: skip
    events: list[Event] = []
    deadline = time.monotonic() + READ_DEADLINE_SECONDS
    try:
        while len(events) < total and time.monotonic() < deadline:
            try:
                msgs = await sub.fetch(2000, timeout=2)
            except (TimeoutError, NatsTimeoutError):
                continue
            except ServiceUnavailableError:  # a stream/consumer leader election after the chaos
                await asyncio.sleep(0.5)
                continue
            for msg in msgs:
                tokens = msg.subject.split(".")
                event_id = orjson.loads(msg.data).get("eventId", "") if msg.data.startswith(b"{") else ""
                events.append(
                    Event(msg.metadata.sequence.stream, str(event_id), f"{tokens[1]}.{tokens[2]}",
                          tokens[3], msg.data, msg.subject)
                )  # fmt: skip
    finally:
        await sub.unsubscribe()
    if len(events) < total:
        raise TimeoutError(f"read {len(events)} of {total} EVENTS messages before the deadline")
    return sorted(events, key=lambda e: e.seq)


def _rows(stores: Path, service: str, query: str) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = []
    for path in sorted(stores.glob(f"{service}-[0-9]*.db")):
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            rows += db.execute(query).fetchall()
    return rows


async def rebuild_view(events: list[Event], path: Path) -> dict[str, tuple[Any, ...]]:
    """The order-status view rebuilt from EVENTS with its own handlers (inbox included)."""
    registry = payload_registry()
    on_event = view_handlers.handlers(None)
    store = Store(path, schema=view_store.SCHEMA, synchronous="OFF")
    await store.open()
    try:
        async with store.transaction() as db:
            for event in events:
                envelope = parse_envelope(event.data, subject=event.subject)
                if store.record_inbox(envelope, time.time()):
                    await on_event[envelope.event_type](envelope, registry.decode(envelope), db)
        return await view_store.snapshot(store.db)
    finally:
        await store.close()


def _live_view(path: Path) -> dict[str, tuple[Any, ...]]:
    view: dict[str, tuple[Any, ...]] = {}
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        for order_id, *rest in db.execute("SELECT order_id, correlation_id, status, reason FROM orders_view"):
            view[order_id] = tuple(rest)
        for order_id, ids in db.execute(
            "SELECT order_id, group_concat(event_id, ',') FROM"
            " (SELECT order_id, event_id FROM view_events ORDER BY event_id) GROUP BY order_id"
        ):
            view[order_id] = (*view.get(order_id, ()), ids)
    return view


def _types_per_order(events: list[Event]) -> dict[str, Counter[str]]:
    """Distinct eventIds per (order, eventType): a re-publish of one event counts once."""
    seen: set[tuple[str, str]] = set()
    per_order: dict[str, Counter[str]] = defaultdict(Counter)
    for event in events:
        if (event.event_id, event.event_type) in seen:
            continue
        seen.add((event.event_id, event.event_type))
        per_order[event.order_id][event.event_type] += 1
    return per_order


async def check(
    nc: NATS,
    data_dir: Path,
    *,
    intended: dict[str, str],
    initial_stock: int,
    sku_count: int,
) -> Report:
    """All invariants on all orders. `intended`: order id -> happy | declined | out_of_stock
    for every order the load generator got a 202 for."""
    report = Report()
    stores = data_dir / "stores"
    events = await read_events(nc)
    per_order = _types_per_order(events)
    orders = {r[0]: r for r in _rows(stores, "order", "SELECT order_id, status, reason FROM orders")}
    report.counts["orders"] = len(orders)
    report.counts["events in EVENTS"] = len(events)

    report.fail("accepted orders missing from the order stores", sorted(set(intended) - set(orders)))
    report.fail("order.placed events without an order row", sorted(set(per_order) - set(orders)))

    # Every order is terminal, in the events and in every view replica; intended outcome reached.
    terminal_events = {o for o, c in per_order.items() if c["shipment.scheduled"] or c["order.cancelled"]}
    report.fail("orders not terminal in EVENTS", sorted(set(orders) - terminal_events))
    views = sorted(stores.glob("order-status-[0-9]*.db"))
    for path in views:
        live = _live_view(path)
        not_terminal = [o for o in orders if o not in live or live[o][1] not in TERMINAL]
        report.fail(f"orders not terminal in {path.stem}", not_terminal)
    # The intended outcome, as the query view tells it. (Not the order service's own row: with
    # P > 1 the row lives in the store of the process that took the POST, while the cancellation
    # is handled by the partition owning the order, so that row can stay `placed`.)
    expected = {"happy": ("shipped", None), "declined": ("cancelled", "payment_declined"),
                "out_of_stock": ("cancelled", "out_of_stock")}  # fmt: skip
    first_view = _live_view(views[0]) if views else {}
    wrong = []
    for order_id, kind in intended.items():
        row = first_view.get(order_id)
        if row is None or (row[1], row[2]) != expected[kind]:
            wrong.append(f"{order_id}: {kind} but the view says {row and row[1:3]}")
    report.fail("orders that did not end as intended", wrong)

    # Payments: exactly one charge per non-declined order, at most one refund, none for declined.
    payments: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    for row in _rows(stores, "payment", "SELECT order_id, status, refund_id FROM payments"):
        payments[row[0]].append(row)
    declined = {o for o, c in per_order.items() if c["payment.failed"]}
    report.fail("payment rows for unknown orders", sorted(set(payments) - set(orders)))
    report.fail("orders without exactly one ledger row", [o for o in orders if len(payments[o]) != 1])
    report.fail(
        "declined orders charged or refunded",
        [o for o in declined if any(r[1] != "declined" for r in payments[o])],
    )
    charged = {o for o, rows in payments.items() if any(r[1] in ("charged", "refunded") for r in rows)}
    report.fail("non-declined orders not charged", sorted(set(orders) - declined - charged))
    report.fail(
        "orders with more than one payment.succeeded / payment.refunded / payment.failed",
        [
            o
            for o, c in per_order.items()
            if max(c["payment.succeeded"], c["payment.refunded"], c["payment.failed"]) > 1
        ],
    )
    report.fail(
        "declined orders with a payment.succeeded or payment.refunded event",
        [o for o in declined if per_order[o]["payment.succeeded"] or per_order[o]["payment.refunded"]],
    )
    refunded = {o for o, rows in payments.items() if any(r[1] == "refunded" for r in rows)}
    failed_reservation = {o for o, c in per_order.items() if c["inventory.reservation_failed"]}
    report.fail("refunds that do not match failed reservations", sorted(refunded ^ failed_reservation))

    # Stock conservation, exact: available + reserved == initial per SKU, over all partitions.
    stock: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for sku, available, initial in _rows(stores, "inventory", "SELECT sku, available, initial FROM stock"):
        stock[sku][0] += available
        stock[sku][2] += initial
    for (items,) in _rows(stores, "inventory", "SELECT items FROM reservations"):
        for sku, quantity in orjson.loads(items).items():
            stock[sku][1] += quantity
    report.fail(
        "SKUs whose available + reserved != initial",
        [f"{s}: {a}+{r}!={i}" for s, (a, r, i) in stock.items() if a + r != i],
    )
    report.fail(
        "SKUs whose initial stock over partitions != configured",
        [s for s, (_, _, i) in stock.items() if i != initial_stock]
        + ([] if len(stock) == sku_count else ["count"]),
    )
    reservations = Counter(r[0] for r in _rows(stores, "inventory", "SELECT order_id FROM reservations"))
    report.fail("orders reserved more than once", [o for o, n in reservations.items() if n > 1])

    # Shipments: at most one per order, exactly one per shipped order, none for cancelled ones.
    shipments = Counter(r[0] for r in _rows(stores, "shipping", "SELECT order_id FROM shipments"))
    shipped = {o for o, c in per_order.items() if c["shipment.scheduled"]}
    report.fail("orders with more than one shipment", [o for o, n in shipments.items() if n > 1])
    report.fail("shipped orders without exactly one shipment row", [o for o in shipped if shipments[o] != 1])
    report.fail("shipments of unshipped orders", sorted(set(shipments) - shipped))
    report.fail(
        "orders with more than one shipment.scheduled",
        [o for o in shipped if per_order[o]["shipment.scheduled"] > 1],
    )
    report.fail("shipped orders without a reservation", sorted(shipped - set(reservations)))

    # The projection equals a rebuild from EVENTS.
    rebuilt = await rebuild_view(events, data_dir / "rebuilt-view.db")
    for path in views:
        live = _live_view(path)
        diff = sorted(k for k in set(live) | set(rebuilt) if live.get(k) != rebuilt.get(k))
        report.fail(f"{path.stem} differs from a rebuild from EVENTS", diff)

    # No consumer has pending or unacked messages; the DLQ is empty.
    infos = await consumer_infos(nc)
    report.fail(
        "consumers with pending or unacked messages",
        [f"{i.name} pending={i.num_pending} ack_pending={i.num_ack_pending}" for i in infos
         if i.num_pending or i.num_ack_pending],
    )  # fmt: skip
    dlq = (await nc.jetstream().stream_info("DLQ")).state.messages
    report.counts["dlq entries"] = dlq
    if dlq:
        report.fail("DLQ entries (all input was valid)", dlq)

    cancelled = {o for o, c in per_order.items() if c["order.cancelled"]}
    report.counts.update(
        {
            "shipped": len(shipped),
            "cancelled (declined)": len(declined & cancelled),
            "cancelled (out of stock)": len(failed_reservation & cancelled),
            "charges": len(charged),
            "refunds": len(refunded),
            "shipments": sum(shipments.values()),
            "re-published event copies in EVENTS": len(events)
            - len({(e.event_id, e.event_type) for e in events}),
        }
    )
    counts = report.counts
    if counts["shipped"] + counts["cancelled (declined)"] + counts["cancelled (out of stock)"] != len(orders):
        report.fail("shipped + cancelled != orders", f"{counts}")
    if (
        counts["charges"] != len(orders) - len(declined)
        or counts["refunds"] != counts["cancelled (out of stock)"]
    ):
        report.fail("charges/refunds do not add up", f"{counts}")
    return report


def table(rows: list[tuple[str, Any]]) -> str:
    width = max(len(k) for k, _ in rows)
    line = "+" + "-" * (width + 2) + "+" + "-" * 14 + "+"
    body = [f"| {k:<{width}} | {v!s:>12} |" for k, v in rows]
    return "\n".join([line, *body, line])


async def wait_for(predicate: Any, *, timeout: float, every: float = 1.0) -> bool:
    """Poll an async predicate until true or the deadline; never hangs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return True
        await asyncio.sleep(every)
    return False
