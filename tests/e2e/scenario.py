"""The end-to-end scenario, written once and run against any deployment of Choreo.

A `Target` is a running Choreo: the local multi-process deployment (`choreo up`, see
`local_target.py`) or a kind cluster with the Helm chart (`kind_target.py`). The steps below
only talk to a target through the protocol, so both deployments pass the same checks:

1. an order reaches `shipped`;
2. a declined order and an out-of-stock order are `cancelled` with their reasons;
3. a payment process/pod dies mid-load: every order still ends terminal (no loss) and the
   payment ledgers hold exactly one charge per non-declined order (no double charge);
4. one order's correlation id is in the logs of every service of its chain.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

import httpx

TERMINAL: Final = frozenset({"shipped", "cancelled"})
# The services an order that ships passes through (CONTRACT.md's flow), by their log `service`.
SHIPPED_CHAIN: Final = ("order", "payment", "inventory", "shipping", "order-status")
LEDGER_STATUSES: Final = ("charged", "declined", "refunded")
POLL_SECONDS: Final = 0.25

HAPPY: Final = {"customerId": "e2e-alice", "items": [{"sku": "sku-1", "quantity": 2, "unitPriceCents": 1250}]}
# Above the payment limit (500,000 cents by default): payment.failed, then order.cancelled.
DECLINED: Final = {
    "customerId": "e2e-bob",
    "items": [{"sku": "sku-2", "quantity": 1, "unitPriceCents": 600_000}],
}
# 1,200,000 units of one SKU: more than its whole stock (1,000,000 over all partitions).
OUT_OF_STOCK: Final = {
    "customerId": "e2e-carol",
    "items": [
        {"sku": "sku-3", "quantity": 600_000, "unitPriceCents": 0},
        {"sku": "sku-3", "quantity": 600_000, "unitPriceCents": 0},
    ],
}


class Target(Protocol):
    """A running Choreo deployment the scenario drives.

    `order_url` and `status_url` reach the order and order-status APIs from this machine.
    `place_order` POSTs /orders (202); `wait_status` polls order-status until every order is
    shipped or cancelled, bounded by `timeout` seconds, and returns the views.
    `kill_one_payment` abruptly ends one payment process (or deletes one pod) and returns its
    name; the platform (the `choreo up` supervisor, the StatefulSet) must bring it back.
    `logs_for` returns, per service (the `service` field of the JSON log lines), every log line
    that contains the correlation id. `payment_ledgers` returns each payment partition's
    ledger row counts per status (`GET /ledger`), and must retry while a partition restarts.
    `timeout` is the target's time budget for one order to settle (a cluster is slower).
    """

    name: str
    order_url: str
    status_url: str
    timeout: float

    def place_order(self, body: Mapping[str, Any], *, correlation_id: str | None = None) -> Placed: ...

    def wait_status(self, order_ids: Iterable[str], *, timeout: float) -> dict[str, dict[str, Any]]: ...

    def kill_one_payment(self) -> str: ...

    def logs_for(self, correlation_id: str) -> dict[str, list[str]]: ...

    def payment_ledgers(self) -> dict[str, dict[str, int]]: ...


@dataclass(frozen=True)
class Placed:
    order_id: str
    correlation_id: str


class HttpApis:
    """`place_order` and `wait_status` over the two public APIs, shared by every target.
    Subclasses set `name`, `order_url`, `status_url` and `timeout` before use."""

    name: str
    order_url: str
    status_url: str
    timeout: float

    def __init__(self) -> None:
        self.http = httpx.Client(timeout=10.0)

    def close_http(self) -> None:
        self.http.close()

    def place_order(self, body: Mapping[str, Any], *, correlation_id: str | None = None) -> Placed:
        headers = {"X-Correlation-Id": correlation_id} if correlation_id else {}
        response = self.http.post(f"{self.order_url}/orders", json=dict(body), headers=headers)
        assert response.status_code == 202, response.text
        data = response.json()
        if correlation_id:
            assert data["correlationId"] == correlation_id
        return Placed(data["orderId"], data["correlationId"])

    def order_view(self, order_id: str) -> dict[str, Any] | None:
        """The order-status view of an order, or None while the projection has not seen it."""
        response = self.http.get(f"{self.status_url}/orders/{order_id}")
        if response.status_code == 404:
            return None
        assert response.status_code == 200, response.text
        view: dict[str, Any] = response.json()
        return view

    def wait_status(self, order_ids: Iterable[str], *, timeout: float) -> dict[str, dict[str, Any]]:
        pending = list(order_ids)
        done: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + timeout
        for _ in range(int(timeout / POLL_SECONDS) + 1):
            still = []
            for order_id in pending:
                view = self.order_view(order_id)
                if view is not None and view["status"] in TERMINAL:
                    done[order_id] = view
                else:
                    still.append(order_id)
            pending = still
            if not pending or time.monotonic() > deadline:
                break
            time.sleep(POLL_SECONDS)
        last = {o: (self.order_view(o) or {}).get("status", "unknown") for o in pending[:5]}
        assert not pending, f"{self.name}: {len(pending)} order(s) not terminal after {timeout:.0f}s: {last}"
        return done


def ledger_totals(target: Target) -> Counter[str]:
    """Ledger rows per status, summed over the payment partitions."""
    total: Counter[str] = Counter(dict.fromkeys(LEDGER_STATUSES, 0))
    for rows in target.payment_ledgers().values():
        total.update(rows)
    return total


# --- the steps -----------------------------------------------------------------------------


def order_reaches_shipped(target: Target) -> dict[str, Any]:
    """A valid order goes order.placed -> payment -> inventory -> shipping: `shipped`."""
    placed = target.place_order(HAPPY)
    view = target.wait_status([placed.order_id], timeout=target.timeout)[placed.order_id]
    assert view["status"] == "shipped", view
    assert view["correlationId"] == placed.correlation_id
    assert set(view["events"]) >= {
        "order.placed", "payment.succeeded", "inventory.reserved", "shipment.scheduled",
    }  # fmt: skip
    return view


def declined_and_out_of_stock_orders_are_cancelled(target: Target) -> None:
    """Too expensive: cancelled for payment_declined. Too many units: refunded, then cancelled
    for out_of_stock. Each is charged at most once and the refund is in the ledger."""
    before = ledger_totals(target)
    declined = target.place_order(DECLINED)
    out_of_stock = target.place_order(OUT_OF_STOCK)
    views = target.wait_status([declined.order_id, out_of_stock.order_id], timeout=target.timeout)
    assert views[declined.order_id]["status"] == "cancelled"
    assert views[declined.order_id]["reason"] == "payment_declined"
    assert "payment.failed" in views[declined.order_id]["events"]
    oos = views[out_of_stock.order_id]
    assert (oos["status"], oos["reason"]) == ("cancelled", "out_of_stock")
    assert {"inventory.reservation_failed", "payment.refunded"} <= set(oos["events"])
    delta = ledger_totals(target) - before
    assert dict(delta) == {"declined": 1, "refunded": 1}, dict(delta)


def payment_death_mid_load_loses_and_double_charges_nothing(target: Target, *, orders: int = 200) -> str:
    """Half the orders placed, one payment process/pod killed, the other half placed: every
    order ends `shipped`, and the ledgers gained exactly one charge per order."""
    before = ledger_totals(target)
    placed: list[Placed] = []
    killed = ""
    for i in range(orders):
        if i == orders // 2:
            killed = target.kill_one_payment()
        item = {"sku": f"sku-{10 + i % 50}", "quantity": 1, "unitPriceCents": 100 + i}
        body = {"customerId": f"e2e-load-{i}", "items": [item]}
        placed.append(target.place_order(body))
    views = target.wait_status([p.order_id for p in placed], timeout=3 * target.timeout)
    statuses = Counter(v["status"] for v in views.values())
    assert statuses == {"shipped": orders}, f"after killing {killed}: {dict(statuses)}"
    delta = ledger_totals(target) - before
    # One ledger row per order over all partitions: a double charge would show up as a second
    # row on another partition, a lost one as a missing row.
    assert dict(delta) == {"charged": orders}, f"after killing {killed}: {dict(delta)}"
    return killed


def correlation_id_is_logged_by_every_service(target: Target) -> str:
    """An order placed with its own X-Correlation-Id ships, and that id is in the log lines
    of order, payment, inventory, shipping and order-status."""
    correlation_id = f"e2e-trace-{uuid.uuid4()}"
    placed = target.place_order(HAPPY, correlation_id=correlation_id)
    view = target.wait_status([placed.order_id], timeout=target.timeout)[placed.order_id]
    assert view["status"] == "shipped", view
    deadline = time.monotonic() + target.timeout
    logs: dict[str, list[str]] = {}
    for _ in range(int(target.timeout / POLL_SECONDS) + 1):
        # Log files are written asynchronously to the events: poll until all are there.
        logs = target.logs_for(correlation_id)
        if set(SHIPPED_CHAIN) <= set(logs) or time.monotonic() > deadline:
            break
        time.sleep(POLL_SECONDS)
    missing = [service for service in SHIPPED_CHAIN if not logs.get(service)]
    assert not missing, f"{target.name}: {correlation_id} not logged by {missing}; found {sorted(logs)}"
    return correlation_id
