"""One local `choreo up` run shared by the live observability tests (trace, logs, page, Prometheus).

The run gets free ports and a temporary data directory, and fast failure settings
(CHOREO_MAX_DELIVER=2) so that a retried-then-dead-lettered event happens within a second.
Before the tests, it has processed:
- one order of each business outcome (shipped, payment declined, out of stock);
- a `poisoned` flow: an order shipped, then an invalid `shipment.scheduled` caused by its
  `inventory.reserved` (order-status dead-letters it: invalid_payload) and a valid one whose
  cause is unknown (a missing link);
- a `stuck` flow: a `payment.succeeded` for an order nobody placed (inventory retries it, then
  dead-letters it: max_deliveries).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import nats
import orjson
import pytest

from common.envelope import Envelope
from common.publisher import event_headers
from tests.support import UpProcess

READY_TIMEOUT = 90.0
FLOW_TIMEOUT = 30.0
ORDERS = {
    "happy": [{"sku": "sku-1", "quantity": 2, "unitPriceCents": 1250}],
    "declined": [{"sku": "sku-2", "quantity": 1, "unitPriceCents": 600_000}],
    "out-of-stock": [{"sku": "sku-3", "quantity": 600_000, "unitPriceCents": 0}] * 2,
}
TERMINAL = {"shipped", "cancelled"}


@dataclass
class LocalRun:
    order_url: str
    status_url: str
    nats_url: str
    data_dir: Path
    up: UpProcess
    flows: dict[str, tuple[str, str]] = field(default_factory=dict)  # label -> (orderId, cid)

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "logs"

    def place(self, label: str, items: list[dict[str, Any]], *, wait: bool = True) -> tuple[str, str]:
        """POST /orders with a fresh correlation id; wait for a terminal status."""
        cid = f"obs-{label}-{uuid.uuid4().hex[:8]}"
        response = httpx.post(
            f"{self.order_url}/orders",
            json={"customerId": f"obs-{label}", "items": items},
            headers={"X-Correlation-Id": cid},
            timeout=5,
        )
        assert response.status_code == 202, response.text
        order_id = response.json()["orderId"]
        if wait:
            self.wait_status(order_id, TERMINAL)
        return order_id, cid

    def wait_status(self, order_id: str, wanted: set[str]) -> dict[str, Any]:
        deadline = time.monotonic() + FLOW_TIMEOUT
        view: dict[str, Any] = {}
        while time.monotonic() < deadline:
            response = httpx.get(f"{self.status_url}/orders/{order_id}", timeout=5)
            if response.status_code == 200:
                view = response.json()
                if view["status"] in wanted:
                    return view
            time.sleep(0.1)
        raise AssertionError(f"order {order_id} not in {wanted} after {FLOW_TIMEOUT}s: {view}")

    def trace(self, cid: str) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.status_url}/traces/{cid}", timeout=5)
        return list(response.json()["events"]) if response.status_code == 200 else []

    def wait_dead_letters(self, cid: str, count: int) -> list[dict[str, Any]]:
        deadline = time.monotonic() + FLOW_TIMEOUT
        found: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            response = httpx.get(f"{self.status_url}/traces/{cid}/dead-letters", timeout=10)
            found = response.json()["deadLetters"] if response.status_code == 200 else []
            if len(found) >= count:
                return found
            time.sleep(0.2)
        raise AssertionError(f"{cid}: {len(found)} dead letters after {FLOW_TIMEOUT}s, wanted {count}")

    def service_urls(self) -> dict[str, str]:
        """{process name: base URL} from each service log's "service started" line."""
        urls: dict[str, str] = {}
        for path in sorted(self.log_dir.glob("*.log")):
            for raw in path.read_bytes().splitlines():
                if b"service started" not in raw:
                    continue
                record = orjson.loads(raw)
                urls[path.stem] = f"http://127.0.0.1:{record['port']}"
        return urls


def _envelope(event_type: str, order_id: str, cid: str, cause: str, payload: dict[str, Any]) -> Envelope:
    return Envelope(
        event_id=uuid.uuid4(), event_type=event_type, schema_version="1.0.0",
        occurred_at=datetime.now(UTC), aggregate_id=order_id, correlation_id=cid,
        causation_id=cause, payload=payload,
    )  # fmt: skip


async def _publish(nats_url: str, events: list[Envelope]) -> None:
    nc = await nats.connect(nats_url, connect_timeout=2, max_reconnect_attempts=1)
    try:
        js = nc.jetstream()
        for env in events:
            await js.publish(env.subject, env.to_json(), headers=event_headers(env), timeout=5)
    finally:
        await nc.close()


def _poison_flows(run: LocalRun) -> None:
    order_id, cid = run.place("poisoned", ORDERS["happy"])
    reserved = next(e for e in run.trace(cid) if e["eventType"] == "inventory.reserved")
    stuck_order, stuck_cid = str(uuid.uuid4()), f"obs-stuck-{uuid.uuid4().hex[:8]}"
    events = [
        # Invalid payload (no shipmentId, no carrier): order-status dead-letters it.
        _envelope("shipment.scheduled", order_id, cid, reserved["eventId"], {"orderId": order_id}),
        # Valid, but caused by an event nobody saw: a missing link in the trace.
        _envelope(
            "shipment.scheduled",
            order_id,
            cid,
            str(uuid.uuid4()),
            {"orderId": order_id, "shipmentId": "obs-late", "carrier": "obs-post"},
        ),
        # Inventory never saw this order placed: retried, then dead-lettered (max_deliveries).
        _envelope(
            "payment.succeeded",
            stuck_order,
            stuck_cid,
            str(uuid.uuid4()),
            {"orderId": stuck_order, "paymentId": "obs-pay", "amountCents": 100},
        ),
    ]
    asyncio.run(_publish(run.nats_url, events))
    run.flows["poisoned"] = (order_id, cid)
    run.flows["stuck"] = (stuck_order, stuck_cid)
    run.wait_dead_letters(cid, 1)
    run.wait_dead_letters(stuck_cid, 1)


def _start(data_dir: Path) -> LocalRun:
    env = {"CHOREO_MAX_DELIVER": "2", "CHOREO_ACK_WAIT_SECONDS": "2"}
    up = UpProcess(data_dir, env=env, ready_timeout=READY_TIMEOUT).start()
    return LocalRun(up.urls["order"], up.urls["order-status"], up.urls["nats"], data_dir, up)


@pytest.fixture(scope="package")  # stopped once tests/observability is done
def local_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRun]:
    """A running `choreo up --no-demo` that has processed the flows of the module docstring."""
    run = _start(tmp_path_factory.mktemp("choreo-up"))
    try:
        for label, items in ORDERS.items():
            run.flows[label] = run.place(label, items)
        _poison_flows(run)
        yield run
    finally:
        run.up.stop()
