"""shipping's reaction: a reserved order gets one shipment."""

from collections.abc import Mapping, Sequence

import aiosqlite

from common.consumer import Handler
from common.correlation import get_logger
from common.envelope import Envelope, caused_by, derive_event_id
from common.settings import RunnerSettings
from services.contract import INVENTORY_RESERVED, SHIPMENT_SCHEDULED, InventoryReserved, ShipmentScheduled
from services.shipping import store

log = get_logger("choreo.shipping")


class ShippingSettings(RunnerSettings):
    shipping_carrier: str = "choreo-post"


def handlers(settings: ShippingSettings) -> Mapping[str, Handler]:
    async def on_reserved(
        event: Envelope, payload: InventoryReserved, db: aiosqlite.Connection
    ) -> Sequence[Envelope]:
        shipment_id = str(derive_event_id(event.event_id_str, "shipment"))
        if not await store.schedule(db, payload.order_id, shipment_id, settings.shipping_carrier):
            log.warning("order already has a shipment", order_id=payload.order_id)
            return []
        scheduled = ShipmentScheduled(
            order_id=payload.order_id, shipment_id=shipment_id, carrier=settings.shipping_carrier
        )
        return [caused_by(event, SHIPMENT_SCHEDULED, scheduled)]

    return {INVENTORY_RESERVED: on_reserved}
