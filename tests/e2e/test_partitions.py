"""Scale-out: 500 orders through 2 partitions of every service (12 processes).

Every order ends terminal with the status its kind calls for; stock is conserved exactly over
the inventory partitions; each order was handled by exactly one partition of each service.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import start_system, stop_system
from tests.e2e.system import ROOT, System, item

pytestmark = pytest.mark.e2e

ORDERS = 500
CONCURRENCY = 32
PARTITIONS = 2
INITIAL_STOCK = 1_000_000
SKUS = [f"sku-{n}" for n in range(30, 50)]
DEADLINE_SECONDS = 120.0


@pytest.fixture(scope="module")
def partitioned(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    running = start_system(tmp_path_factory, "partitioned", partitions=PARTITIONS)
    yield running
    stop_system(running)


def order_of(n: int) -> tuple[str, list[dict[str, Any]]]:
    """The n-th order: mostly shippable, every 10th declined, every 25th out of stock."""
    sku, other = SKUS[n % len(SKUS)], SKUS[(n * 7 + 3) % len(SKUS)]
    if n % 25 == 0:  # more than a partition's share (500,000) of one SKU
        return "out_of_stock", [item(sku, 300_000, 0), item(sku, 300_000, 0)]
    if n % 10 == 0:
        return "declined", [item(sku, 1, 600_000)]
    return "shipped", [item(sku, 1 + n % 5, 199), item(other, 2, 50)]


async def place_all(system: System) -> dict[str, tuple[str, list[dict[str, Any]]]]:
    """Post every order concurrently (bounded); order id -> (expected outcome, items)."""
    placed: dict[str, tuple[str, list[dict[str, Any]]]] = {}
    gate = asyncio.Semaphore(CONCURRENCY)
    limits = httpx.Limits(max_connections=CONCURRENCY)
    async with httpx.AsyncClient(timeout=30.0, limits=limits) as client:

        async def place(n: int) -> None:
            kind, items = order_of(n)
            async with gate:
                response = await client.post(
                    f"{system.order_url}/orders", json={"customerId": f"bulk-{n}", "items": items}
                )
            assert response.status_code == 202, response.text
            placed[response.json()["orderId"]] = (kind, items)

        await asyncio.gather(*(place(n) for n in range(ORDERS)))
    return placed


def wait_all_terminal(system: System, order_ids: set[str]) -> dict[str, dict[str, Any]]:
    """Poll the view's terminal lists until every order is in one; order id -> summary."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    seen: dict[str, dict[str, Any]] = {}
    with httpx.Client(timeout=10.0) as client:
        while time.monotonic() < deadline:
            seen = {}
            for status in ("shipped", "cancelled"):
                rows = client.get(
                    f"{system.status_url}/orders", params={"status": status, "limit": 1000}
                ).json()
                seen.update({row["orderId"]: row for row in rows if row["orderId"] in order_ids})
            if len(seen) == len(order_ids):
                return seen
            time.sleep(0.5)
    raise AssertionError(f"{len(order_ids) - len(seen)} of {len(order_ids)} orders not terminal in time")


def owners(system: System, service: str, sql: str) -> dict[str, list[int]]:
    """order id -> the partitions whose store has a row for it."""
    found: dict[str, list[int]] = {}
    for index in range(PARTITIONS):
        for (order_id,) in system.query(service, index, sql):
            found.setdefault(order_id, []).append(index)
    return found


def test_500_orders_over_2_partitions_conserve_stock_and_stay_in_one_partition(
    partitioned: System, tmp_path: Path
) -> None:
    """500 orders: all terminal as expected, stock conserved exactly, each order's payment,
    reservation and shipment in exactly one partition; the rebuilt view equals the live one."""
    system = partitioned
    placed = asyncio.run(place_all(system))
    assert len(placed) == ORDERS
    views = wait_all_terminal(system, set(placed))

    expected = {order_id: kind for order_id, (kind, _) in placed.items()}
    got = {
        order_id: view["status"] if view["status"] == "shipped" else view.get("reason")
        for order_id, view in views.items()
    }
    assert got == {
        order_id: {"shipped": "shipped", "declined": "payment_declined", "out_of_stock": "out_of_stock"}[kind]
        for order_id, kind in expected.items()
    }

    # Stock conservation, exactly: available + reserved == initial for every SKU, and the
    # reserved units are exactly those of the shipped orders.
    stock = system.stock()
    assert len(stock) == 100
    for sku, levels in stock.items():
        assert levels["initial"] == INITIAL_STOCK, sku
        assert levels["available"] + levels["reserved"] == INITIAL_STOCK, (sku, levels)
    shipped_units: Counter[str] = Counter()
    for kind, items in placed.values():
        if kind == "shipped":
            for line in items:
                shipped_units[line["sku"]] += line["quantity"]
    assert {sku: levels["reserved"] for sku, levels in stock.items() if levels["reserved"]} == shipped_units

    # Exactly one partition per order in each partitioned service's store.
    kinds = Counter(expected.values())
    payments = owners(system, "payment", "SELECT order_id FROM payments")
    reservations = owners(system, "inventory", "SELECT order_id FROM reservations")
    shipments = owners(system, "shipping", "SELECT order_id FROM shipments")
    for rows, expected_orders in (
        (payments, set(placed)),
        (reservations, {o for o, k in expected.items() if k == "shipped"}),
        (shipments, {o for o, k in expected.items() if k == "shipped"}),
    ):
        assert set(rows) == expected_orders
        assert all(len(partitions) == 1 for partitions in rows.values())
    # The partitions of one order agree across services (all its events map to one partition).
    assert all(payments[o] == shipments[o] == reservations[o] for o in shipments)
    assert len({p[0] for p in payments.values()}) == PARTITIONS  # both partitions did work
    assert system.ledger() == {
        "charged": kinds["shipped"],
        "declined": kinds["declined"],
        "refunded": kinds["out_of_stock"],
    }

    # The view rebuilt from EVENTS (both partitions' events, interleaved) equals the live one.
    rebuilt = subprocess.run(
        [sys.executable, "-m", "common.cli", "projection", "rebuild", "--nats-url", system.nats_url,
         "--db", str(tmp_path / "rebuilt.db"), "--compare", str(system.store_path("order-status")),
         "--timeout", "60"],
        cwd=ROOT, capture_output=True, text=True, timeout=90, check=False,
    )  # fmt: skip
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    assert f"equal ({ORDERS} rows)" in rebuilt.stdout
