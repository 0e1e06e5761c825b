"""The order status machine of the contract; events arriving out of order never move back.

pending_payment ─► pending_inventory ─► pending_shipping ─► shipped
      │                   └─► refunding ─► cancelled
      └────────────────────────────────────► cancelled
"""

from typing import Final

from services.contract import (
    INVENTORY_RESERVATION_FAILED,
    INVENTORY_RESERVED,
    ORDER_CANCELLED,
    ORDER_PLACED,
    PAYMENT_FAILED,
    PAYMENT_REFUNDED,
    PAYMENT_SUCCEEDED,
    SHIPMENT_SCHEDULED,
)

PENDING_PAYMENT: Final = "pending_payment"
PENDING_INVENTORY: Final = "pending_inventory"
PENDING_SHIPPING: Final = "pending_shipping"
SHIPPED: Final = "shipped"
REFUNDING: Final = "refunding"
CANCELLED: Final = "cancelled"

STATUSES: Final = (PENDING_PAYMENT, PENDING_INVENTORY, PENDING_SHIPPING, SHIPPED, REFUNDING, CANCELLED)
TERMINAL: Final = frozenset({SHIPPED, CANCELLED})

# Progress along the flow: a status only replaces one of lower rank.
RANK: Final = {
    PENDING_PAYMENT: 0,
    PENDING_INVENTORY: 1,
    PENDING_SHIPPING: 2,
    REFUNDING: 2,
    SHIPPED: 3,
    CANCELLED: 3,
}

STATUS_AFTER: Final = {
    ORDER_PLACED: PENDING_PAYMENT,
    PAYMENT_SUCCEEDED: PENDING_INVENTORY,
    PAYMENT_FAILED: PENDING_PAYMENT,  # the cancellation follows as order.cancelled
    INVENTORY_RESERVED: PENDING_SHIPPING,
    INVENTORY_RESERVATION_FAILED: REFUNDING,
    PAYMENT_REFUNDED: REFUNDING,
    SHIPMENT_SCHEDULED: SHIPPED,
    ORDER_CANCELLED: CANCELLED,
}


def advance(current: str | None, event_type: str) -> str:
    """The status after `event_type`, never moving backwards from `current`."""
    proposed = STATUS_AFTER[event_type]
    if current is None or RANK[proposed] > RANK[current]:
        return proposed
    return current
