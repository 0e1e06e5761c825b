"""shipping: schedules a shipment for every reserved order."""

from common.declarations import ServiceSpec
from services.contract import INVENTORY_RESERVED, SHIPMENT_SCHEDULED

SPEC = ServiceSpec.of(
    "shipping", consumes=[INVENTORY_RESERVED], produces=[SHIPMENT_SCHEDULED], http_port=8084
)
