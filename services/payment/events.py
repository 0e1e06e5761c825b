"""payment: charges placed orders exactly once; refunds them when inventory fails."""

from common.declarations import ServiceSpec
from services.contract import (
    INVENTORY_RESERVATION_FAILED,
    ORDER_PLACED,
    PAYMENT_FAILED,
    PAYMENT_REFUNDED,
    PAYMENT_SUCCEEDED,
)

SPEC = ServiceSpec.of(
    "payment",
    consumes=[ORDER_PLACED, INVENTORY_RESERVATION_FAILED],
    produces=[PAYMENT_SUCCEEDED, PAYMENT_FAILED, PAYMENT_REFUNDED],
    http_port=8082,
)
