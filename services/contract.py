"""The wire contract of the order choreography: event types and payload models (v1.x).

This module is the shared schema (like a protobuf package), not a service: every service
may import it, and no service imports another.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

from pydantic import Field, model_validator

from common.envelope import Payload, PayloadRegistry

ORDER_PLACED: Final = "order.placed"
PAYMENT_SUCCEEDED: Final = "payment.succeeded"
PAYMENT_FAILED: Final = "payment.failed"
PAYMENT_REFUNDED: Final = "payment.refunded"
INVENTORY_RESERVED: Final = "inventory.reserved"
INVENTORY_RESERVATION_FAILED: Final = "inventory.reservation_failed"
SHIPMENT_SCHEDULED: Final = "shipment.scheduled"
ORDER_CANCELLED: Final = "order.cancelled"

ALL_EVENT_TYPES: Final = (
    ORDER_PLACED, PAYMENT_SUCCEEDED, PAYMENT_FAILED, PAYMENT_REFUNDED,
    INVENTORY_RESERVED, INVENTORY_RESERVATION_FAILED, SHIPMENT_SCHEDULED, ORDER_CANCELLED,
)  # fmt: skip

# Which service publishes each event type's aggregate (for traces).
PRODUCER_OF_AGGREGATE: Final = {
    "order": "order",
    "payment": "payment",
    "inventory": "inventory",
    "shipment": "shipping",
}

OrderId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,128}$")]
Sku = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
MAX_ITEMS: Final = 100


class LineItem(Payload):
    sku: Sku
    quantity: int = Field(ge=1, le=1_000_000)
    unit_price_cents: int = Field(ge=0, le=100_000_000)


class OrderPlaced(Payload):
    order_id: OrderId
    customer_id: str = Field(min_length=1, max_length=128)
    items: list[LineItem] = Field(min_length=1, max_length=MAX_ITEMS)
    total_cents: int = Field(ge=0)

    @model_validator(mode="after")
    def _total(self) -> OrderPlaced:
        expected = sum(i.quantity * i.unit_price_cents for i in self.items)
        if self.total_cents != expected:
            raise ValueError(f"totalCents {self.total_cents} != sum of items {expected}")
        return self


class PaymentSucceeded(Payload):
    order_id: OrderId
    payment_id: str
    amount_cents: int = Field(ge=0)


class PaymentFailed(Payload):
    order_id: OrderId
    reason: str


class ReservedItem(Payload):
    sku: Sku
    quantity: int = Field(ge=1)


class InventoryReserved(Payload):
    order_id: OrderId
    reservation_id: str
    items: list[ReservedItem]
    expires_at: str


class InventoryReservationFailed(Payload):
    order_id: OrderId
    reason: Literal["out_of_stock", "unknown_sku"]


class PaymentRefunded(Payload):
    order_id: OrderId
    payment_id: str
    amount_cents: int = Field(ge=0)
    reason: str


class ShipmentScheduled(Payload):
    order_id: OrderId
    shipment_id: str
    carrier: str


class OrderCancelled(Payload):
    order_id: OrderId
    reason: Literal["payment_declined", "out_of_stock"]


MODELS: Final[dict[str, type[Payload]]] = {
    ORDER_PLACED: OrderPlaced,
    PAYMENT_SUCCEEDED: PaymentSucceeded,
    PAYMENT_FAILED: PaymentFailed,
    PAYMENT_REFUNDED: PaymentRefunded,
    INVENTORY_RESERVED: InventoryReserved,
    INVENTORY_RESERVATION_FAILED: InventoryReservationFailed,
    SHIPMENT_SCHEDULED: ShipmentScheduled,
    ORDER_CANCELLED: OrderCancelled,
}


def payload_registry(event_types: tuple[str, ...] | frozenset[str] = ALL_EVENT_TYPES) -> PayloadRegistry:
    """The v1 payload models of the given event types."""
    registry = PayloadRegistry()
    for event_type in event_types:
        registry.register(event_type, 1, MODELS[event_type])
    return registry


def producing_service(event_type: str) -> str:
    return PRODUCER_OF_AGGREGATE.get(event_type.split(".", 1)[0], "unknown")
