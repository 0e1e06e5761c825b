"""inventory: reserves all items of a paid order, or none."""

from common.declarations import ServiceSpec
from services.contract import (
    INVENTORY_RESERVATION_FAILED,
    INVENTORY_RESERVED,
    ORDER_PLACED,
    PAYMENT_SUCCEEDED,
)

# order.placed is consumed only to remember the items: payment.succeeded does not carry them.
SPEC = ServiceSpec.of(
    "inventory",
    consumes=[ORDER_PLACED, PAYMENT_SUCCEEDED],
    produces=[INVENTORY_RESERVED, INVENTORY_RESERVATION_FAILED],
    http_port=8083,
)
