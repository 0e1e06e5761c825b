"""inventory's reactions: remember an order's items; reserve them once it is paid."""

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta

import aiosqlite

from common.consumer import Handler
from common.envelope import Envelope, caused_by, derive_event_id
from common.errors import RetryableError
from common.settings import RunnerSettings
from services.contract import (
    INVENTORY_RESERVATION_FAILED,
    INVENTORY_RESERVED,
    ORDER_PLACED,
    PAYMENT_SUCCEEDED,
    InventoryReservationFailed,
    InventoryReserved,
    OrderPlaced,
    PaymentSucceeded,
    ReservedItem,
)
from services.inventory import store

RESERVATION_TTL = timedelta(hours=24)


class InventorySettings(RunnerSettings):
    inventory_sku_count: int = 100
    inventory_initial_stock: int = 1_000_000


def handlers(_settings: InventorySettings) -> Mapping[str, Handler]:
    return {ORDER_PLACED: on_order_placed, PAYMENT_SUCCEEDED: on_payment_succeeded}


async def on_order_placed(
    event: Envelope, payload: OrderPlaced, db: aiosqlite.Connection
) -> Sequence[Envelope]:
    items: dict[str, int] = {}
    for item in payload.items:
        items[item.sku] = items.get(item.sku, 0) + item.quantity
    await store.remember_items(db, payload.order_id, items)
    return []


async def on_payment_succeeded(
    event: Envelope, payload: PaymentSucceeded, db: aiosqlite.Connection
) -> Sequence[Envelope]:
    items = await store.items_of(db, payload.order_id)
    if items is None:
        # order.placed for this order has not been handled here yet (it is being retried).
        raise RetryableError(f"items of order {payload.order_id} not known yet")
    reservation_id = str(derive_event_id(event.event_id_str, "reservation"))
    failure = await store.reserve(db, payload.order_id, reservation_id, items)
    if failure is not None:
        failed = InventoryReservationFailed(order_id=payload.order_id, reason=failure)
        return [caused_by(event, INVENTORY_RESERVATION_FAILED, failed)]
    reserved = InventoryReserved(
        order_id=payload.order_id,
        reservation_id=reservation_id,
        items=[ReservedItem(sku=sku, quantity=q) for sku, q in items.items()],
        expires_at=(datetime.now(UTC) + RESERVATION_TTL).isoformat().replace("+00:00", "Z"),
    )
    return [caused_by(event, INVENTORY_RESERVED, reserved)]
