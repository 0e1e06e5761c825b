"""The demo of `choreo up`: three orders (happy, declined, out of stock) placed over HTTP,
and a compact live table of their status, read from order-status, until all are terminal."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any, Final

import httpx

DEMO_ORDERS: Final = {
    "happy": {"customerId": "demo-alice", "items": [{"sku": "sku-1", "quantity": 2, "unitPriceCents": 1250}]},
    "declined": {
        "customerId": "demo-bob",
        "items": [{"sku": "sku-2", "quantity": 1, "unitPriceCents": 600_000}],
    },
    "out-of-stock": {
        "customerId": "demo-carol",
        # Two lines of 600,000 units: together more than the 1,000,000 in stock.
        "items": [
            {"sku": "sku-3", "quantity": 600_000, "unitPriceCents": 0},
            {"sku": "sku-3", "quantity": 600_000, "unitPriceCents": 0},
        ],
    },
}
TERMINAL: Final = {"shipped", "cancelled"}
DEMO_DEADLINE_SECONDS: Final = 60.0


def _table(rows: list[tuple[str, str, str, str]]) -> str:
    lines = [f"  {'demo':<13} {'order':<36}  {'status':<30} events"]
    lines += [f"  {a:<13} {b:<36}  {c:<30} {d}" for a, b, c, d in rows]
    return "\n".join(lines)


async def run_demo(order_url: str, status_url: str, stop: asyncio.Event) -> None:
    async with httpx.AsyncClient(timeout=5.0) as client:
        placed: dict[str, str] = {}
        for label, body in DEMO_ORDERS.items():
            response = await client.post(
                f"{order_url}/orders", json=body, headers={"X-Correlation-Id": f"demo-{label}"}
            )
            response.raise_for_status()
            placed[label] = response.json()["orderId"]
            print(f"placed       {label:<13} order {placed[label]} correlation demo-{label}", flush=True)
        last = ""
        deadline = time.monotonic() + DEMO_DEADLINE_SECONDS
        while not stop.is_set() and time.monotonic() < deadline:
            rows = []
            for label, order_id in placed.items():
                view: dict[str, Any] = {}
                response = await client.get(f"{status_url}/orders/{order_id}")
                if response.status_code == 200:
                    view = response.json()
                status = view.get("status", "-") + (f" ({view['reason']})" if view.get("reason") else "")
                rows.append((label, order_id, status, " > ".join(view.get("events", []))))
            table = _table(rows)
            if table != last:
                print(table, flush=True)
                sys.stdout.flush()
                last = table
            if all(r[2].split(" ")[0] in TERMINAL for r in rows):
                print("demo         every demo order reached a terminal status", flush=True)
                return
            await asyncio.sleep(0.3)
