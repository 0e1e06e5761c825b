"""order-status's reaction: every event advances the order's status and joins its trace."""

from collections.abc import Mapping, Sequence
from typing import Any

import aiosqlite

from common.consumer import Handler
from common.envelope import Envelope
from services.contract import ALL_EVENT_TYPES, ORDER_CANCELLED, producing_service
from services.order_status import status, store


async def on_event(event: Envelope, payload: Any, db: aiosqlite.Connection) -> Sequence[Envelope]:
    occurred_at = event.occurred_at.isoformat().replace("+00:00", "Z")
    order_id = payload.order_id
    await store.add_event(
        db,
        (
            event.event_id_str, order_id, event.correlation_id, event.causation_id,
            event.event_type, producing_service(event.event_type), occurred_at,
        ),
    )  # fmt: skip
    current = await store.current_status(db, order_id)
    reason = payload.reason if event.event_type == ORDER_CANCELLED else None
    await store.upsert_order(
        db, order_id=order_id, correlation_id=event.correlation_id,
        status=status.advance(current, event.event_type), reason=reason, updated_at=occurred_at,
    )  # fmt: skip
    return []


def handlers(_settings: Any) -> Mapping[str, Handler]:
    return dict.fromkeys(ALL_EVENT_TYPES, on_event)
