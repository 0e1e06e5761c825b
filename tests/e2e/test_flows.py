"""The order choreography end to end: every service its own process, a real nats-server.

One system serves the module; each test places its own orders and checks only them (stock
and ledger checks are before/after deltas around the test's own orders).
"""

from __future__ import annotations

import asyncio
import itertools
import signal
import sqlite3
import subprocess
import sys
import uuid
from typing import Any

import httpx
import nats
import orjson
import psutil
import pytest

from common.envelope import new_event
from common.publisher import HDR_MSG_ID, event_headers
from services.contract import ORDER_PLACED, LineItem, OrderPlaced
from tests.e2e.system import ROOT, System, item, place_order, wait_terminal

pytestmark = pytest.mark.e2e

HAPPY_CHAIN = ["order.placed", "payment.succeeded", "inventory.reserved", "shipment.scheduled"]
DECLINED_CHAIN = ["order.placed", "payment.failed", "order.cancelled"]
OUT_OF_STOCK_CHAIN = [
    "order.placed",
    "payment.succeeded",
    "inventory.reservation_failed",
    "payment.refunded",
    "order.cancelled",
]


def trace_of(client: httpx.Client, system: System, correlation_id: str) -> list[dict[str, Any]]:
    response = client.get(f"{system.status_url}/traces/{correlation_id}")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["correlationId"] == correlation_id
    events: list[dict[str, Any]] = body["events"]
    return events


def assert_causal_chain(events: list[dict[str, Any]], chain: list[str]) -> None:
    """The events are `chain`, the first a root, each caused by the one before it."""
    assert [e["eventType"] for e in events] == chain
    assert events[0]["causationId"] is None
    for cause, effect in itertools.pairwise(events):
        assert effect["causationId"] == cause["eventId"], (cause, effect)


def payment_rows(system: System, order_id: str) -> list[tuple[Any, ...]]:
    return system.query(
        "payment", 0, "SELECT status, refund_id FROM payments WHERE order_id = ?", (order_id,)
    )


def test_happy_path_ships_with_one_correlation_and_a_causal_chain(
    system: System, client: httpx.Client
) -> None:
    """A payable, in-stock order ends `shipped`; its events share the correlationId and each
    causationId is the eventId of the event before it."""
    correlation_id = f"e2e-happy-{uuid.uuid4()}"
    order_id, returned = place_order(client, system, [item("sku-5", 3, 1250)], correlation_id=correlation_id)
    assert returned == correlation_id
    view = wait_terminal(client, system, order_id)
    assert view["status"] == "shipped"
    assert view["correlationId"] == correlation_id
    assert view["events"] == HAPPY_CHAIN
    events = trace_of(client, system, correlation_id)
    assert {e["orderId"] for e in events} == {order_id}
    assert_causal_chain(events, HAPPY_CHAIN)
    assert [e["service"] for e in events] == ["order", "payment", "inventory", "shipping"]


def test_declined_payment_cancels_without_reserving_stock(system: System, client: httpx.Client) -> None:
    """An order above the payment limit ends `cancelled` (payment_declined); inventory reserves nothing."""
    before = system.stock()["sku-7"]
    order_id, correlation_id = place_order(client, system, [item("sku-7", 1, 600_000)])
    view = wait_terminal(client, system, order_id)
    assert (view["status"], view.get("reason")) == ("cancelled", "payment_declined")
    assert view["events"] == DECLINED_CHAIN
    events = trace_of(client, system, correlation_id)
    assert_causal_chain(events, DECLINED_CHAIN)
    assert not [e for e in events if e["eventType"].startswith("inventory.")]
    assert system.stock()["sku-7"] == before
    assert system.query("inventory", 0, "SELECT 1 FROM reservations WHERE order_id = ?", (order_id,)) == []
    assert payment_rows(system, order_id) == [("declined", None)]


def test_out_of_stock_refunds_then_cancels_with_stock_unchanged(system: System, client: httpx.Client) -> None:
    """More units than in stock: `refunding` then `cancelled` (out_of_stock); exactly one
    charge and one refund; stock unchanged."""
    stock_before, ledger_before = system.stock()["sku-9"], system.ledger()
    # Two lines of 600,000 units of one SKU: together more than its 1,000,000.
    too_many = [item("sku-9", 600_000, 0), item("sku-9", 600_000, 0)]
    order_id, correlation_id = place_order(client, system, too_many)
    view = wait_terminal(client, system, order_id)
    assert (view["status"], view.get("reason")) == ("cancelled", "out_of_stock")
    # The events in order: the view passed through `refunding` before `cancelled`.
    assert view["events"] == OUT_OF_STOCK_CHAIN
    assert_causal_chain(trace_of(client, system, correlation_id), OUT_OF_STOCK_CHAIN)
    rows = payment_rows(system, order_id)
    assert len(rows) == 1
    assert rows[0][0] == "refunded"
    assert rows[0][1] is not None
    ledger_after = system.ledger()
    assert ledger_after.get("refunded", 0) - ledger_before.get("refunded", 0) == 1
    assert ledger_after.get("charged", 0) == ledger_before.get("charged", 0)
    assert system.stock()["sku-9"] == stock_before


def test_unknown_sku_is_accepted_by_the_api_and_rejected_by_inventory(
    system: System, client: httpx.Client
) -> None:
    """A well-formed but unknown SKU gets 202; inventory fails it with unknown_sku, payment
    refunds it, and the order ends `cancelled`."""
    order_id, _ = place_order(client, system, [item("sku-424242", 1, 100)])
    view = wait_terminal(client, system, order_id)
    # order.cancelled's reason is payment_declined or out_of_stock (the contract): an unknown
    # SKU is "not in stock"; the precise reason travels in the inventory and payment events.
    assert (view["status"], view.get("reason")) == ("cancelled", "out_of_stock")
    assert view["events"] == OUT_OF_STOCK_CHAIN
    reasons = asyncio.run(_payload_reasons(system, order_id))
    assert reasons == {"inventory.reservation_failed": "unknown_sku", "payment.refunded": "unknown_sku"}
    assert "sku-424242" not in system.stock()


async def _payload_reasons(system: System, order_id: str) -> dict[str, str]:
    nc = await nats.connect(system.nats_url)
    try:
        js = nc.jetstream()
        reasons = {}
        for event_type in ("inventory.reservation_failed", "payment.refunded"):
            msg = await js.get_last_msg("EVENTS", f"events.{event_type}.{order_id}.0")
            assert msg.data is not None
            reasons[event_type] = orjson.loads(msg.data)["payload"]["reason"]
        return reasons
    finally:
        await nc.close()


def test_same_order_placed_published_three_times_charges_once(system: System, client: httpx.Client) -> None:
    """One order.placed stored three times in EVENTS (three Nats-Msg-Ids): one charge, one
    reservation, and order.placed once in the view."""
    order_id = str(uuid.uuid4())
    line = LineItem(sku="sku-11", quantity=4, unit_price_cents=250)
    payload = OrderPlaced(order_id=order_id, customer_id="e2e-dup", items=[line], total_cents=1000)
    event = new_event(ORDER_PLACED, order_id, payload, correlation_id=f"e2e-dup-{order_id}")
    stock_before, ledger_before = system.stock()["sku-11"], system.ledger()
    acks = asyncio.run(_publish_three_times(system, event.subject, event.to_json(), event_headers(event)))
    assert not any(ack.duplicate for ack in acks)
    assert len({ack.seq for ack in acks}) == 3  # all three stored
    view = wait_terminal(client, system, order_id)
    assert view["status"] == "shipped"
    assert view["events"] == HAPPY_CHAIN
    assert payment_rows(system, order_id) == [("charged", None)]
    assert system.ledger().get("charged", 0) - ledger_before.get("charged", 0) == 1
    stock_after = system.stock()["sku-11"]
    assert stock_before["available"] - stock_after["available"] == 4
    assert stock_after["reserved"] - stock_before["reserved"] == 4


async def _publish_three_times(
    system: System, subject: str, body: bytes, headers: dict[str, str]
) -> list[Any]:
    nc = await nats.connect(system.nats_url)
    msg_id = headers[HDR_MSG_ID]
    try:
        js = nc.jetstream()
        return [
            await js.publish(subject, body, headers={**headers, HDR_MSG_ID: f"{msg_id}-copy-{n}"})
            for n in range(3)
        ]
    finally:
        await nc.close()


def test_killed_service_process_is_restarted_and_the_flow_completes(
    system: System, client: httpx.Client
) -> None:
    """SIGKILL of payment's process: `choreo up` prints a restart line, restarts it, and an
    order placed meanwhile still ships."""
    assert system.process is not None
    victims = [
        p for p in psutil.Process(system.process.pid).children(recursive=True)
        if p.cmdline()[-2:] == ["serve", "payment"]
    ]  # fmt: skip
    assert len(victims) == 1
    seen = len(system.lines)
    victims[0].send_signal(signal.SIGKILL)
    order_id, _ = place_order(client, system, [item("sku-13", 1, 100)])
    restart = system.wait_line("restart", timeout=20, after=seen)
    assert "payment-0" in restart
    view = wait_terminal(client, system, order_id, timeout=60)
    assert view["status"] == "shipped"
    assert payment_rows(system, order_id) == [("charged", None)]


def test_projection_rebuild_equals_the_live_view(system: System, client: httpx.Client, tmp_path: Any) -> None:
    """`choreo projection rebuild` replays EVENTS into a fresh store equal to the live view
    (by SQLite diff and by URL digest), detects a tampered copy, and leaves no consumer behind."""
    placed = [
        place_order(client, system, [item("sku-20", 1, 100)])[0],
        place_order(client, system, [item("sku-21", 1, 600_000)])[0],
        place_order(client, system, [item("sku-22", 700_000, 0), item("sku-22", 700_000, 0)])[0],
    ]
    for order_id in placed:
        wait_terminal(client, system, order_id)
    live = system.store_path("order-status")
    by_file = rebuild(system, tmp_path / "by-file.db", str(live))
    assert by_file.returncode == 0, by_file.stdout
    assert "equal" in by_file.stdout
    by_url = rebuild(system, tmp_path / "by-url.db", system.status_url)
    assert by_url.returncode == 0, by_url.stdout
    assert "equal" in by_url.stdout
    # A copy of the live view with one order's status changed must be reported.
    tampered = tmp_path / "tampered.db"
    with sqlite3.connect(f"file:{live}?mode=ro", uri=True) as source, sqlite3.connect(tampered) as copy:
        source.backup(copy)
        copy.execute("UPDATE orders_view SET status = 'refunding' WHERE order_id = ?", (placed[0],))
    different = rebuild(system, tmp_path / "vs-tampered.db", str(tampered))
    assert different.returncode == 1, different.stdout
    assert "DIFFERENT" in different.stdout
    assert placed[0] in different.stdout
    assert not [c for c in asyncio.run(_consumer_names(system)) if "rebuild" in c]


def rebuild(system: System, db: Any, compare: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "common.cli", "projection", "rebuild", "--nats-url", system.nats_url,
         "--db", str(db), "--compare", compare, "--timeout", "60"],
        cwd=ROOT, capture_output=True, text=True, timeout=90, check=False,
    )  # fmt: skip


async def _consumer_names(system: System) -> list[str]:
    nc = await nats.connect(system.nats_url)
    try:
        return [info.name for info in await nc.jetstream().consumers_info("EVENTS")]
    finally:
        await nc.close()


def test_retried_post_with_an_idempotency_key_places_one_order(system: System, client: httpx.Client) -> None:
    """The same POST sent three times with one Idempotency-Key answers one orderId and the
    first correlation id; one order.placed in the view, one charge."""
    key = f"retry-{uuid.uuid4().hex}"
    body = {"customerId": "e2e-idem", "items": [item("sku-12", 1, 700)]}
    ledger_before = system.ledger()
    answers = [
        client.post(
            f"{system.order_url}/orders",
            json=body,
            headers={"Idempotency-Key": key, "X-Correlation-Id": f"idem-{n}-{key}"},
        )
        for n in range(3)
    ]
    assert [a.status_code for a in answers] == [202, 202, 202]
    assert len({a.json()["orderId"] for a in answers}) == 1
    assert {a.json()["correlationId"] for a in answers} == {f"idem-0-{key}"}
    order_id = answers[0].json()["orderId"]
    view = wait_terminal(client, system, order_id)
    assert view["events"] == HAPPY_CHAIN
    assert system.ledger().get("charged", 0) - ledger_before.get("charged", 0) == 1
    other = client.post(f"{system.order_url}/orders", json=body, headers={"Idempotency-Key": f"{key}-2"})
    assert other.json()["orderId"] != order_id  # another key, another order


def test_invalid_idempotency_key_is_a_422(system: System, client: httpx.Client) -> None:
    """A key outside [A-Za-z0-9_.:-]{1,128} is refused with a JSON error, nothing placed."""
    body = {"customerId": "e2e-idem", "items": [item("sku-12", 1, 700)]}
    response = client.post(f"{system.order_url}/orders", json=body, headers={"Idempotency-Key": "bad key!"})
    assert response.status_code == 422
    assert response.json()["error"] == "invalid_request"
