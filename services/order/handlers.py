"""order's reactions: a failed or refunded payment cancels the order."""

import time
from collections.abc import Mapping, Sequence
from typing import Any

import aiosqlite

from common.consumer import Handler
from common.envelope import Envelope, caused_by
from services.contract import (
    ORDER_CANCELLED,
    PAYMENT_FAILED,
    PAYMENT_REFUNDED,
    OrderCancelled,
    PaymentFailed,
    PaymentRefunded,
)
from services.order import store


async def on_payment_failed(
    event: Envelope, payload: PaymentFailed, db: aiosqlite.Connection
) -> Sequence[Envelope]:
    return await _cancel(event, payload.order_id, "payment_declined", db)


async def on_payment_refunded(
    event: Envelope, payload: PaymentRefunded, db: aiosqlite.Connection
) -> Sequence[Envelope]:
    # A refund always follows a failed reservation; an unknown SKU is "not in stock" too.
    return await _cancel(event, payload.order_id, "out_of_stock", db)


async def _cancel(
    event: Envelope, order_id: str, reason: str, db: aiosqlite.Connection
) -> Sequence[Envelope]:
    if not await store.cancel_order(
        db, order_id, reason, correlation_id=event.correlation_id, at=time.time()
    ):
        return []  # already cancelled by an earlier event: one order.cancelled per order
    return [caused_by(event, ORDER_CANCELLED, OrderCancelled(order_id=order_id, reason=reason))]


def handlers(_settings: Any) -> Mapping[str, Handler]:
    return {PAYMENT_FAILED: on_payment_failed, PAYMENT_REFUNDED: on_payment_refunded}
