"""A whole Choreo system for end-to-end tests: `choreo up` in a subprocess (an embedded
nats-server and one OS process per service partition), on free loopback ports.

Service URLs other than order and order-status are read from each service's own log
(`service started ... port=N`), the way an operator would find them.
"""

from __future__ import annotations

import signal
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

from tests.support import UpProcess

READY_TIMEOUT = 90.0
STOP_TIMEOUT = 45.0
TERMINAL = frozenset({"shipped", "cancelled"})
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class System(UpProcess):
    """`choreo up` plus the readers the flow tests need."""

    @property
    def order_url(self) -> str:
        return self.urls["order"]

    @property
    def status_url(self) -> str:
        return self.urls["order-status"]

    @property
    def nats_url(self) -> str:
        return self.urls["nats"]

    def start(self) -> System:
        super().start()
        return self

    def stop(self, *, sig: int = signal.SIGINT, grace: float = STOP_TIMEOUT) -> int:
        """Stop `choreo up` as Ctrl-C would; its exit code."""
        return super().stop(sig=sig, grace=grace)

    # --- where things are -------------------------------------------------------------

    def log_path(self, service: str, index: int = 0) -> Path:
        return self.data_dir / "logs" / f"{service}-{index}.log"

    def store_path(self, service: str, index: int = 0) -> Path:
        return self.data_dir / "stores" / f"{service}-{index}.db"

    def service_url(self, service: str, index: int = 0) -> str:
        port = None
        for line in self.log_path(service, index).read_text().splitlines():
            if '"service started"' in line:
                port = orjson.loads(line)["port"]
        assert port is not None, f"{service}-{index} never started"
        return f"http://127.0.0.1:{port}"

    def output_tail(self, n: int = 40) -> str:
        return "\n".join(self.lines[-n:])

    def logs_tail(self, n: int = 15) -> str:
        parts = [f"--- choreo up output\n{self.output_tail()}"]
        for path in sorted((self.data_dir / "logs").glob("*.log")):
            lines = path.read_text(errors="replace").splitlines()[-n:]
            parts.append(f"--- {path.name}\n" + "\n".join(lines))
        return "\n".join(parts)

    # --- reading the services ---------------------------------------------------------

    def stock(self) -> dict[str, dict[str, int]]:
        """Every SKU summed over the inventory partitions: available, reserved, initial."""
        totals: dict[str, dict[str, int]] = {}
        for index in range(self.partitions):
            body = httpx.get(f"{self.service_url('inventory', index)}/stock", timeout=10).json()
            for row in body["stock"]:
                sku = totals.setdefault(row["sku"], {"available": 0, "reserved": 0, "initial": 0})
                sku["available"] += row["available"]
                sku["initial"] += row["initial"]
            for sku_name, units in body["reserved"].items():
                totals[sku_name]["reserved"] += units
        return totals

    def ledger(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for index in range(self.partitions):
            body = httpx.get(f"{self.service_url('payment', index)}/ledger", timeout=10).json()
            for status, count in body.items():
                totals[status] = totals.get(status, 0) + count
        return totals

    def query(self, service: str, index: int, sql: str, args: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        """Read a service's SQLite store (read-only; the service keeps writing in WAL mode)."""
        db = sqlite3.connect(f"file:{self.store_path(service, index)}?mode=ro", uri=True, timeout=10)
        try:
            return list(db.execute(sql, tuple(args)))
        finally:
            db.close()


def place_order(
    client: httpx.Client, system: System, items: list[dict[str, Any]], *, correlation_id: str | None = None
) -> tuple[str, str]:
    headers = {"X-Correlation-Id": correlation_id} if correlation_id else {}
    response = client.post(
        f"{system.order_url}/orders", json={"customerId": "e2e", "items": items}, headers=headers
    )
    assert response.status_code == 202, response.text
    body = response.json()
    return body["orderId"], body["correlationId"]


def wait_terminal(
    client: httpx.Client, system: System, order_id: str, *, timeout: float = 45.0
) -> dict[str, Any]:
    """Poll order-status until the order is shipped or cancelled; its view."""
    deadline = time.monotonic() + timeout
    view: dict[str, Any] = {}
    while time.monotonic() < deadline:
        response = client.get(f"{system.status_url}/orders/{order_id}")
        if response.status_code == 200:
            view = response.json()
            if view["status"] in TERMINAL:
                return view
        time.sleep(0.1)
    raise AssertionError(f"order {order_id} not terminal after {timeout}s; last view {view}")


def item(sku: str, quantity: int = 1, price: int = 100) -> dict[str, Any]:
    return {"sku": sku, "quantity": quantity, "unitPriceCents": price}
