"""order: takes orders over HTTP; cancels them when payment fails or is refunded."""

from common.declarations import ServiceSpec
from services.contract import ORDER_CANCELLED, ORDER_PLACED, PAYMENT_FAILED, PAYMENT_REFUNDED

SPEC = ServiceSpec.of(
    "order",
    consumes=[PAYMENT_FAILED, PAYMENT_REFUNDED],
    produces=[ORDER_PLACED, ORDER_CANCELLED],
    http_port=8080,
)
