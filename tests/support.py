"""Helpers shared by the test suites: small payload models for test apps, bounded waits,
and stopping a subprocess."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import Field

from common import Payload, PayloadRegistry


class Item(Payload):
    sku: str
    quantity: int = Field(ge=1)
    unit_price_cents: int = Field(ge=0)


class OrderPlaced(Payload):
    order_id: str
    customer_id: str
    items: list[Item] = Field(min_length=1, max_length=100)
    total_cents: int = Field(ge=0)


class PaymentSucceeded(Payload):
    order_id: str
    payment_id: str
    amount_cents: int


def payload_registry() -> PayloadRegistry:
    """v1 models of `order.placed` and `payment.succeeded`, for the test apps."""
    registry = PayloadRegistry()
    registry.register("order.placed", 1, OrderPlaced)
    registry.register("payment.succeeded", 1, PaymentSucceeded)
    return registry


async def wait_until(
    predicate: Callable[[], Awaitable[bool]], *, timeout: float = 20.0, interval: float = 0.05, what: str = ""
) -> None:
    """Poll `predicate` until true; bounded in attempts and in time."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / interval) + 1):
        if await predicate():
            return
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s: {what}")


def stop_process(process: subprocess.Popen[Any], *, grace: float = 40.0) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
