"""The services' reactions, called with plain events and an in-memory store: no broker."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiosqlite
import pytest

from common.envelope import Envelope, caused_by, new_event
from common.inbox import Store
from services.contract import (
    INVENTORY_RESERVATION_FAILED,
    MODELS,
    ORDER_PLACED,
    PAYMENT_FAILED,
    PAYMENT_SUCCEEDED,
)
from services.inventory import handlers as inventory
from services.inventory import store as inventory_store
from services.order import handlers as order
from services.order import store as order_store
from services.order_status import handlers as view
from services.order_status import store as view_store
from services.order_status.status import CANCELLED, PENDING_SHIPPING, advance
from services.payment import handlers as payment
from services.payment import store as payment_store


async def _db(tmp_path: Path, schema: str) -> Store:
    store = Store(tmp_path / "s.db", schema=schema, synchronous="OFF")
    await store.open()
    return store


@pytest.fixture
async def payment_db(tmp_path: Path) -> AsyncIterator[aiosqlite.Connection]:
    store = await _db(tmp_path, payment_store.SCHEMA)
    yield store.db
    await store.close()


def placed(total_quantity: int = 2, price: int = 100, order_id: str = "o-1") -> Envelope:
    items = [{"sku": "sku-1", "quantity": total_quantity, "unitPriceCents": price}]
    payload = {"orderId": order_id, "customerId": "c", "items": items, "totalCents": total_quantity * price}
    return new_event(ORDER_PLACED, order_id, payload, correlation_id="corr-1")


def typed(event: Envelope) -> object:
    return MODELS[event.event_type].model_validate(event.payload)


async def test_payment_charges_once_per_order(payment_db: aiosqlite.Connection) -> None:
    """A second order.placed for the same order (another eventId) charges nothing more."""
    react = payment.handlers(payment.PaymentSettings())[ORDER_PLACED]
    first = await react(placed(), typed(placed()), payment_db)
    again = placed()
    second = await react(again, typed(again), payment_db)
    assert [e.event_type for e in first] == [PAYMENT_SUCCEEDED]
    assert second == []
    assert await payment_store.totals(payment_db) == {"charged": 1}


async def test_payment_declines_above_the_limit(payment_db: aiosqlite.Connection) -> None:
    """A total above the limit yields payment.failed and records a decline, not a charge."""
    react = payment.handlers(payment.PaymentSettings(payment_decline_above_cents=150))[ORDER_PLACED]
    event = placed(total_quantity=2, price=100)
    produced = await react(event, typed(event), payment_db)
    assert [e.event_type for e in produced] == [PAYMENT_FAILED]
    assert produced[0].causation_id == str(event.event_id)
    assert await payment_store.totals(payment_db) == {"declined": 1}


async def test_payment_refunds_at_most_once(payment_db: aiosqlite.Connection) -> None:
    """Two reservation failures for one charged order give one refund."""
    handlers = payment.handlers(payment.PaymentSettings())
    event = placed()
    succeeded = (await handlers[ORDER_PLACED](event, typed(event), payment_db))[0]
    failed = caused_by(succeeded, INVENTORY_RESERVATION_FAILED, {"orderId": "o-1", "reason": "out_of_stock"})
    first = await handlers[INVENTORY_RESERVATION_FAILED](failed, typed(failed), payment_db)
    second = await handlers[INVENTORY_RESERVATION_FAILED](failed, typed(failed), payment_db)
    assert len(first) == 1
    assert first[0].payload["amountCents"] == 200
    assert second == []


async def test_inventory_reserves_all_or_nothing(tmp_path: Path) -> None:
    """An order over the stock of one of its SKUs reserves nothing, and says out_of_stock."""
    store = await _db(tmp_path, inventory_store.SCHEMA)
    db = store.db
    await inventory_store.seed(db, sku_count=2, units=10)
    items = [
        {"sku": "sku-1", "quantity": 5, "unitPriceCents": 1},
        {"sku": "sku-2", "quantity": 11, "unitPriceCents": 1},
    ]
    event = new_event(
        ORDER_PLACED, "o-2", {"orderId": "o-2", "customerId": "c", "items": items, "totalCents": 16}
    )
    await inventory.on_order_placed(event, typed(event), db)
    paid = caused_by(event, PAYMENT_SUCCEEDED, {"orderId": "o-2", "paymentId": "p", "amountCents": 16})
    produced = await inventory.on_payment_succeeded(paid, typed(paid), db)
    assert produced[0].payload == {"orderId": "o-2", "reason": "out_of_stock"}
    assert [level["available"] for level in await inventory_store.stock_levels(db)] == [10, 10]
    await store.close()


async def test_order_cancels_once(tmp_path: Path) -> None:
    """payment.failed cancels the order once; a later payment.refunded adds no second cancel."""
    store = await _db(tmp_path, order_store.SCHEMA)
    handlers = order.handlers(None)
    failed = caused_by(placed(), PAYMENT_FAILED, {"orderId": "o-1", "reason": "declined"})
    first = await handlers[PAYMENT_FAILED](failed, typed(failed), store.db)
    second = await handlers[PAYMENT_FAILED](failed, typed(failed), store.db)
    assert [e.payload["reason"] for e in first] == ["payment_declined"]
    assert second == []
    await store.close()


def test_status_never_moves_backwards() -> None:
    """A late payment.succeeded after inventory.reserved leaves the order pending_shipping."""
    assert advance(PENDING_SHIPPING, PAYMENT_SUCCEEDED) == PENDING_SHIPPING
    assert advance(CANCELLED, ORDER_PLACED) == CANCELLED
    assert advance(None, PAYMENT_SUCCEEDED) == "pending_inventory"


async def test_view_out_of_order_arrival(tmp_path: Path) -> None:
    """Events applied in reverse still end in the final status, with every event listed."""
    store = await _db(tmp_path, view_store.SCHEMA)
    event = placed()
    paid = caused_by(event, PAYMENT_SUCCEEDED, {"orderId": "o-1", "paymentId": "p", "amountCents": 200})
    for e in (paid, event):
        await view.on_event(e, typed(e), store.db)
    order_view = await view_store.get_order(store.db, "o-1")
    assert order_view is not None
    assert order_view["status"] == "pending_inventory"
    assert sorted(order_view["events"]) == [ORDER_PLACED, PAYMENT_SUCCEEDED]
    await store.close()
