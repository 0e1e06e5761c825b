"""Bad input published straight to `events.*` on a running system (per-service users on): each
case ends as CONTRACT.md says (a DLQ entry per receiving consumer with the precise
`Dlq-Reason`, or processing), the services keep running, and valid orders around it ship.

Decisions, documented here and in docs/SECURITY.md:
- An unknown eventType (`events.order.exploded.<id>`) is stored in EVENTS (the stream takes
  `events.>`), but no consumer filters it: it stays there unconsumed, no DLQ entry, no pending.
- The same eventId with different content: the first one wins. Re-published with the same
  Nats-Msg-Id (= eventId, as the contract says) JetStream drops it inside the duplicate window;
  under another Nats-Msg-Id it is stored, and every inbox skips it as a duplicate.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
import pytest_asyncio

from common.envelope import new_event
from services.contract import ORDER_PLACED, LineItem, OrderPlaced
from tests.cluster import RunningSystem, consumer_infos, running_system

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(120)]

ORDER_PLACED_CONSUMERS = {"payment", "inventory", "order-status"}
DEADLINE = 30.0


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def system(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningSystem]:
    env = {"CHOREO_ACK_WAIT_SECONDS": "2", "CHOREO_MAX_DELIVER": "3"}
    async with running_system(
        tmp_path_factory.mktemp("badinput"), partitions=2, env=env, cluster=False
    ) as running:
        yield running


def order_placed(order_id: str | None = None, *, total: int = 300) -> dict[str, Any]:
    """A valid order.placed envelope as a dict."""
    order_id = order_id or str(uuid.uuid4())
    payload = OrderPlaced(
        order_id=order_id, customer_id="bad-input",
        items=[LineItem(sku="sku-7", quantity=1, unit_price_cents=total)], total_cents=total,
    )  # fmt: skip
    return dict(
        orjson.loads(new_event(ORDER_PLACED, order_id, payload, correlation_id=f"bad-{order_id}").to_json())
    )


async def publish(system: RunningSystem, subject: str, body: bytes, *, msg_id: str | None = None) -> Any:
    nc = await system.admin()
    try:
        headers = {"Nats-Msg-Id": msg_id or str(uuid.uuid4())}
        return await nc.jetstream().publish(subject, body, headers=headers, timeout=5)
    finally:
        await nc.close()


async def dlq_entries(system: RunningSystem, aggregate: str) -> list[dict[str, str]]:
    """Headers of every DLQ entry whose original subject is events.<type>.<aggregate>[.<p>]."""
    nc = await system.admin()
    js = nc.jetstream()
    found = []
    try:
        last = (await js.stream_info("DLQ")).state.last_seq
        for seq in range(1, last + 1):
            try:
                msg = await js.get_msg("DLQ", seq)
            except Exception:
                continue
            headers = dict(msg.headers or {})
            tokens = headers.get("Dlq-Original-Subject", "").split(".")
            if len(tokens) >= 4 and tokens[3] == aggregate:
                found.append(headers)
    finally:
        await nc.close()
    return found


async def expect_dead_letters(
    system: RunningSystem, aggregate: str, reason: str, consumers: set[str]
) -> None:
    """One DLQ entry per receiving consumer, each with `reason`, within the deadline."""
    deadline = time.monotonic() + DEADLINE
    entries: list[dict[str, str]] = []
    while time.monotonic() < deadline:
        entries = await dlq_entries(system, aggregate)
        if {e["Dlq-Consumer"].rsplit("-", 1)[0] for e in entries} >= consumers:
            break
        await asyncio.sleep(0.5)
    assert {e["Dlq-Consumer"].rsplit("-", 1)[0] for e in entries} == consumers, entries
    assert [e["Dlq-Reason"] for e in entries] == [reason] * len(entries), entries
    assert len(entries) == len(consumers), entries


async def status_of(system: RunningSystem, order_id: str, want: str) -> str | None:
    deadline = time.monotonic() + DEADLINE
    status = None
    async with httpx.AsyncClient(timeout=5) as http:
        while time.monotonic() < deadline:
            response = await http.get(f"{system.url('order-status')}/orders/{order_id}")
            status = response.json()["status"] if response.status_code == 200 else None
            if status == want:
                return status
            await asyncio.sleep(0.3)
    return status


async def place_valid_order(system: RunningSystem) -> str:
    async with httpx.AsyncClient(timeout=5) as http:
        body = {"customerId": "around", "items": [{"sku": "sku-1", "quantity": 1, "unitPriceCents": 10}]}
        response = await http.post(f"{system.url('order')}/orders", json=body)
    assert response.status_code == 202
    return str(response.json()["orderId"])


def poison_cases() -> list[tuple[str, Any, str]]:
    """(case, body builder taking the aggregate id, expected Dlq-Reason) for order.placed."""

    def with_(changes: dict[str, Any], drop: str | None = None) -> Any:
        def build(agg: str) -> bytes:
            body = order_placed(agg)
            body.update(changes)
            if drop:
                del body[drop]
            return orjson.dumps(body)

        return build

    def payload_change(**changes: Any) -> Any:
        def build(agg: str) -> bytes:
            body = order_placed(agg)
            body["payload"].update(changes)
            return orjson.dumps(body)

        return build

    def nested(agg: str) -> bytes:
        body = orjson.dumps(order_placed(agg))
        return body[:-1] + b',"deep":' + b"[" * 5000 + b"]" * 5000 + b"}"

    def oversized(agg: str) -> bytes:
        body = order_placed(agg)
        body["padding"] = "x" * 70_000
        return orjson.dumps(body)

    return [
        ("invalid JSON", lambda _agg: b'{"eventId": "not closed', "invalid_json"),
        ("invalid UTF-8", lambda _agg: b'{"eventId": "\xff\xfe"}', "invalid_json"),
        ("non-object JSON", lambda _agg: b"[1, 2, 3]", "invalid_envelope"),
        ("missing eventId", with_({}, drop="eventId"), "invalid_envelope"),
        ("payload of the wrong type", with_({"payload": "a string"}), "invalid_envelope"),
        ("payload field of the wrong type", payload_change(totalCents="lots"), "invalid_payload"),
        ("payload missing a field", payload_change(items=[]), "invalid_payload"),
        (
            "body aggregateId differs from the subject",
            with_({"aggregateId": "someone-else"}),
            "subject_mismatch",
        ),
        ("unsupported major version", with_({"schemaVersion": "2.0.0"}), "unsupported_schema_version"),
        ("payload over the limit", oversized, "payload_too_large"),
        ("deeply nested JSON", nested, "invalid_json"),
    ]


@pytest.mark.parametrize(("case", "build", "reason"), poison_cases(), ids=[c[0] for c in poison_cases()])
async def test_poison_order_placed_is_dead_lettered_with_its_reason(
    system: RunningSystem, case: str, build: Any, reason: str
) -> None:
    """A bad order.placed gets one DLQ entry per consuming service with the precise reason."""
    aggregate = f"bad-{uuid.uuid4().hex[:12]}"
    await publish(system, f"events.order.placed.{aggregate}", build(aggregate))
    await expect_dead_letters(system, aggregate, reason, ORDER_PLACED_CONSUMERS)


async def test_extra_top_level_fields_are_ignored(system: RunningSystem) -> None:
    """Unknown top-level fields are ignored: the order is processed to shipped."""
    body = order_placed()
    body["somethingNew"] = {"from": "a newer producer"}
    await publish(system, f"events.order.placed.{body['aggregateId']}", orjson.dumps(body))
    assert await status_of(system, body["aggregateId"], "shipped") == "shipped"


async def test_newer_minor_version_with_extra_payload_fields_is_processed(system: RunningSystem) -> None:
    """schemaVersion 1.7.0 with payload fields this build does not know ships like 1.0.0."""
    body = order_placed()
    body["schemaVersion"] = "1.7.0"
    body["payload"]["giftWrap"] = True
    body["payload"]["items"][0]["colour"] = "blue"
    await publish(system, f"events.order.placed.{body['aggregateId']}", orjson.dumps(body))
    assert await status_of(system, body["aggregateId"], "shipped") == "shipped"
    assert await dlq_entries(system, body["aggregateId"]) == []


async def test_unknown_event_type_stays_in_events_unconsumed(system: RunningSystem) -> None:
    """events.order.exploded.<id> is stored, no consumer receives it, no DLQ entry is made."""
    aggregate = f"exploded-{uuid.uuid4().hex[:12]}"
    body = order_placed(aggregate)
    body["eventType"] = "order.exploded"
    ack = await publish(system, f"events.order.exploded.{aggregate}", orjson.dumps(body))
    assert ack.stream == "EVENTS"
    await place_valid_order(system)  # consumers move past it
    await asyncio.sleep(2)
    nc = await system.admin()
    try:
        info = await nc.jetstream().stream_info(
            "EVENTS", subjects_filter=f"events.order.exploded.{aggregate}.*"
        )
        assert sum((info.state.subjects or {}).values()) == 1
        for consumer in await consumer_infos(nc):
            assert consumer.num_ack_pending == 0, consumer.name
    finally:
        await nc.close()
    assert await dlq_entries(system, aggregate) == []


async def test_same_event_id_with_other_content_first_one_wins(system: RunningSystem) -> None:
    """A second body under the same eventId: dropped by JetStream with the same Nats-Msg-Id,
    skipped by every inbox under another one; the first (a small order) ships, never declined."""
    first = order_placed(total=300)
    big = [{"sku": "sku-7", "quantity": 1, "unitPriceCents": 9_000_000}]
    second = dict(
        first, payload={**first["payload"], "customerId": "impostor", "totalCents": 9_000_000, "items": big}
    )
    subject = f"events.order.placed.{first['aggregateId']}"
    assert not (await publish(system, subject, orjson.dumps(first), msg_id=first["eventId"])).duplicate
    assert (await publish(system, subject, orjson.dumps(second), msg_id=first["eventId"])).duplicate
    assert not (
        await publish(system, subject, orjson.dumps(second), msg_id=f"other-{first['eventId']}")
    ).duplicate
    assert await status_of(system, first["aggregateId"], "shipped") == "shipped"
    async with httpx.AsyncClient(timeout=5) as http:
        view = (await http.get(f"{system.url('order-status')}/orders/{first['aggregateId']}")).json()
    assert "payment.failed" not in view["events"]
    assert view["events"].count("order.placed") == 1


async def test_services_keep_running_and_valid_orders_ship(system: RunningSystem) -> None:
    """After all the bad input: every process alive, never restarted, and a new order ships."""
    order_id = await place_valid_order(system)
    assert await status_of(system, order_id, "shipped") == "shipped"
    for proc in system.processes():
        assert proc.process is not None
        assert proc.process.returncode is None, proc.name
        assert proc.restarts == 0, proc.name
