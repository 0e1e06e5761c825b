"""Shared pieces of the benchmarks: a fresh nats-server, provisioning, events, bounded waits.

Every benchmark runs against its own nats-server (free loopback port, temporary store) with
the streams and durable consumers `choreo provision` creates, so every contender sees the
same stream settings.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats
import orjson
from nats.aio.client import Client as NATS

from common.declarations import EVENTS_STREAM, ServiceSpec
from common.natsserver import NatsServer
from common.provision import provision
from common.settings import ProvisionSettings

ITEMS_PER_ORDER = 3


@contextmanager
def fresh_server(root: Path, name: str = "bench-nats") -> Iterator[NatsServer]:
    """A nats-server on a free port with a store under `root`; stopped on exit."""
    server = NatsServer(store_dir=root / "jetstream", name=name, log_file=root / "nats.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def connect(url: str) -> NATS:
    return await nats.connect(url, connect_timeout=2, max_reconnect_attempts=3, pending_size=64 * 1024 * 1024)


async def provision_specs(url: str, specs: Iterable[ServiceSpec], *, partitions: int = 1) -> None:
    nc = await connect(url)
    try:
        await provision(nc.jetstream(), list(specs), ProvisionSettings(nats_url=url, partitions=partitions))
    finally:
        await nc.close()


def iso(ts: datetime) -> str:
    return ts.isoformat().replace("+00:00", "Z")


def order_placed(
    order_id: str | None = None, *, at: datetime | None = None
) -> tuple[str, bytes, dict[str, str]]:
    """(subject, body, headers) of a valid `order.placed` root event (3 line items)."""
    event_id = str(uuid.uuid4())
    order_id = order_id or str(uuid.uuid4())
    items = [
        {
            "sku": f"sku-{1 + (i * 7 + len(order_id)) % 100}",
            "quantity": 1 + i,
            "unitPriceCents": 250 + 100 * i,
        }
        for i in range(ITEMS_PER_ORDER)
    ]
    body = {
        "eventId": event_id,
        "eventType": "order.placed",
        "schemaVersion": "1.0.0",
        "occurredAt": iso(at or datetime.now(UTC)),
        "aggregateId": order_id,
        "correlationId": event_id,
        "causationId": None,
        "payload": {
            "orderId": order_id,
            "customerId": "bench-customer",
            "items": items,
            "totalCents": sum(i["quantity"] * i["unitPriceCents"] for i in items),
        },
    }
    headers = {
        "Nats-Msg-Id": event_id,
        "Event-Type": "order.placed",
        "Schema-Version": "1.0.0",
        "Correlation-Id": event_id,
    }
    return f"events.order.placed.{order_id}", orjson.dumps(body), headers


async def publish_orders(nc: NATS, count: int, *, chunk: int = 512, timeout: float = 60.0) -> None:
    """Publish `count` order.placed events pipelined (publish_async, acks per chunk)."""
    js = nc.jetstream()
    deadline = time.monotonic() + timeout
    for start in range(0, count, chunk):
        futures = []
        for _ in range(min(chunk, count - start)):
            subject, body, headers = order_placed()
            futures.append(await js.publish_async(subject, body, headers=headers))
        await asyncio.wait_for(asyncio.gather(*futures), max(1.0, deadline - time.monotonic()))


async def wait_until(
    check: Callable[[], Awaitable[bool]], *, timeout: float, interval: float = 0.01, what: str = "condition"
) -> float:
    """Poll `check` until true (bounded by `timeout` and an iteration count); the monotonic time it held."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / interval) + 10):
        if await check():
            return time.monotonic()
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(interval)
    raise TimeoutError(f"{what} not reached within {timeout}s")


async def consumers_drained(nc: NATS, names: Iterable[str], *, stream: str = EVENTS_STREAM) -> bool:
    js = nc.jetstream()
    for name in names:
        info = await js.consumer_info(stream, name)
        if info.num_pending or info.num_ack_pending:
            return False
    return True


async def stream_messages(nc: NATS, stream: str = EVENTS_STREAM) -> int:
    info = await nc.jetstream().stream_info(stream)
    return int(info.state.messages)


def median(values: Iterable[float]) -> float:
    vals = list(values)
    return float(statistics.median(vals)) if vals else float("nan")


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def parse_ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def jsonable(obj: Any) -> Any:
    return orjson.loads(orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS))
