"""payment's reactions, by the contract's rule: decline above a limit, else charge once."""

from collections.abc import Mapping, Sequence

import aiosqlite

from common.consumer import Handler
from common.correlation import get_logger
from common.envelope import Envelope, caused_by, derive_event_id
from common.settings import RunnerSettings
from services.contract import (
    INVENTORY_RESERVATION_FAILED,
    ORDER_PLACED,
    PAYMENT_FAILED,
    PAYMENT_REFUNDED,
    PAYMENT_SUCCEEDED,
    InventoryReservationFailed,
    OrderPlaced,
    PaymentFailed,
    PaymentRefunded,
    PaymentSucceeded,
)
from services.payment import store

log = get_logger("choreo.payment")


class PaymentSettings(RunnerSettings):
    payment_decline_above_cents: int = 500_000


def handlers(settings: PaymentSettings) -> Mapping[str, Handler]:
    async def on_order_placed(
        event: Envelope, payload: OrderPlaced, db: aiosqlite.Connection
    ) -> Sequence[Envelope]:
        payment_id = str(derive_event_id(event.event_id_str, "payment"))
        if payload.total_cents > settings.payment_decline_above_cents:
            if not await store.record(db, payload.order_id, payment_id, payload.total_cents, "declined"):
                log.warning("order already has a payment: not declining twice", order_id=payload.order_id)
                return []
            reason = f"amount {payload.total_cents} above limit {settings.payment_decline_above_cents}"
            return [caused_by(event, PAYMENT_FAILED, PaymentFailed(order_id=payload.order_id, reason=reason))]
        if not await store.record(db, payload.order_id, payment_id, payload.total_cents, "charged"):
            log.warning("order already has a payment: not charging twice", order_id=payload.order_id)
            return []
        succeeded = PaymentSucceeded(
            order_id=payload.order_id, payment_id=payment_id, amount_cents=payload.total_cents
        )
        return [caused_by(event, PAYMENT_SUCCEEDED, succeeded)]

    async def on_reservation_failed(
        event: Envelope, payload: InventoryReservationFailed, db: aiosqlite.Connection
    ) -> Sequence[Envelope]:
        refunded = await store.refund(db, payload.order_id, event.event_id_str)
        if refunded is None:
            log.warning("nothing to refund", order_id=payload.order_id)
            return []
        return [
            caused_by(
                event,
                PAYMENT_REFUNDED,
                PaymentRefunded(
                    order_id=payload.order_id,
                    payment_id=refunded.payment_id,
                    amount_cents=refunded.amount_cents,
                    reason=payload.reason,
                ),
            )
        ]

    return {ORDER_PLACED: on_order_placed, INVENTORY_RESERVATION_FAILED: on_reservation_failed}
