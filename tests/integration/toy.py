"""A small service for the runner tests: consumes `order.placed`, charges, produces `payment.succeeded`.

The handler's behaviour is steered by a `Behaviour` object (fail n times, fail forever, fail
permanently, sleep), and every effect is a row in its own `charges` table, which has no unique
constraint on purpose: a handler that ran twice leaves two rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiosqlite
import orjson
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from prometheus_client import CollectorRegistry

from common import (
    Envelope,
    Metrics,
    PermanentError,
    ProvisionSettings,
    Publisher,
    Runner,
    RunnerOptions,
    ServiceSpec,
    Store,
    caused_by,
    consumer_name,
    get_logger,
    new_event,
    provision,
)
from common.publisher import event_headers
from tests.support import Item, OrderPlaced, PaymentSucceeded, payload_registry

SERVICE = "toy"
CONSUMER = consumer_name(SERVICE, 0)
SPEC = ServiceSpec.of(SERVICE, consumes=["order.placed"], produces=["payment.succeeded"])
SCHEMA = """
CREATE TABLE IF NOT EXISTS charges (
    event_id   TEXT NOT NULL,
    order_id   TEXT NOT NULL,
    amount     INTEGER NOT NULL
);
"""
DOWNSTREAM = "events.payment.succeeded.>"
log = get_logger("toy")


@dataclass
class Behaviour:
    """How the handler behaves; `calls` counts every run of the handler body."""

    fail_times: int = 0  # raise a retryable error on the first n calls
    fail_always: bool = False
    permanent: bool = False
    sleep: float = 0.0
    calls: int = 0


def make_handler(
    behaviour: Behaviour,
) -> Callable[[Envelope, Any, aiosqlite.Connection], Awaitable[Sequence[Envelope]]]:
    async def charge(event: Envelope, payload: OrderPlaced, db: aiosqlite.Connection) -> list[Envelope]:
        behaviour.calls += 1
        log.info("charging order", order_id=payload.order_id, amount=payload.total_cents)
        if behaviour.sleep:
            await asyncio.sleep(behaviour.sleep)
        if behaviour.permanent:
            raise PermanentError("card reported stolen")
        if behaviour.fail_always or behaviour.calls <= behaviour.fail_times:
            raise ConnectionError("payment gateway unavailable")
        await db.execute(
            "INSERT INTO charges (event_id, order_id, amount) VALUES (?, ?, ?)",
            (str(event.event_id), payload.order_id, payload.total_cents),
        )
        produced = PaymentSucceeded(
            order_id=payload.order_id, payment_id=f"pay-{payload.order_id}", amount_cents=payload.total_cents
        )
        return [caused_by(event, "payment.succeeded", produced)]

    return charge


def order_placed(order_id: str | None = None, *, total: int = 500) -> Envelope:
    order_id = order_id or f"o-{uuid.uuid4().hex[:12]}"
    payload = OrderPlaced(
        order_id=order_id,
        customer_id="c-1",
        items=[Item(sku="sku-1", quantity=1, unit_price_cents=total)],
        total_cents=total,
    )
    return new_event("order.placed", order_id, payload)


async def publish_raw(
    js: JetStreamContext, event: Envelope, *, msg_id: str | None = None, body: bytes | None = None
) -> None:
    """Publish an event as a foreign producer would (optionally another Nats-Msg-Id or body)."""
    headers = event_headers(event)
    if msg_id is not None:
        headers["Nats-Msg-Id"] = msg_id
    await js.publish(event.subject, body if body is not None else event.to_json(), headers=headers)


DEFAULT_OPTIONS = RunnerOptions(
    batch_size=64,
    ack_wait=1.0,
    max_deliver=3,
    backoff_base=0.05,
    backoff_max=1.0,
    fetch_timeout=0.2,
    handler_timeout=10.0,
)
PROVISION = ProvisionSettings(ack_wait_seconds=1, max_deliver=3)


@dataclass
class Toy:
    """One toy service instance (one partition), not yet running."""

    nc: NATS
    js: JetStreamContext
    path: Path
    behaviour: Behaviour
    store: Store
    registry: CollectorRegistry
    metrics: Metrics
    publisher: Publisher
    runner: Runner
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(self.runner.run(self.stop))

    async def halt(self) -> None:
        """Stop the runner (it finishes its batch) and close the store."""
        self.stop.set()
        task, self.task = self.task, None
        try:
            if task is not None:
                await asyncio.wait_for(task, 15)
        finally:
            await self.store.close()

    async def close(self) -> None:
        """Teardown: stop whatever still runs, never raise, always close the store (its thread
        would otherwise keep the interpreter from exiting)."""
        self.stop.set()
        task, self.task = self.task, None
        if task is not None and not task.done():
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(task, 5)
        await self.store.close()

    def consumed(self, outcome: str, event_type: str = "order.placed") -> float:
        value = self.registry.get_sample_value(
            "choreo_events_consumed_total",
            {"service": SERVICE, "event_type": event_type, "outcome": outcome},
        )
        return value or 0.0

    async def charges(self) -> list[tuple[str, str, int]]:
        async with self.store.db.execute("SELECT event_id, order_id, amount FROM charges") as cursor:
            return [(row[0], row[1], row[2]) for row in await cursor.fetchall()]


async def build(
    nc: NATS,
    js: JetStreamContext,
    path: Path,
    *,
    behaviour: Behaviour | None = None,
    options: RunnerOptions = DEFAULT_OPTIONS,
    settings: ProvisionSettings = PROVISION,
    provisioned: bool = False,
) -> Toy:
    """Provision (unless done), open the store and wire a Runner for partition 0."""
    if not provisioned:
        await provision(js, [SPEC], settings)
    behaviour = behaviour or Behaviour()
    store = Store(path, schema=SCHEMA)
    await store.open()
    registry = CollectorRegistry()
    metrics = Metrics(registry, service=SERVICE)
    publisher = Publisher(js, service=SERVICE, produces=SPEC.produces, metrics=metrics)
    runner = Runner(
        spec=SPEC,
        consumer=CONSUMER,
        handlers={"order.placed": make_handler(behaviour)},
        registry=payload_registry(),
        store=store,
        publisher=publisher,
        metrics=metrics,
        nc=nc,
        options=options,
    )
    return Toy(nc, js, path, behaviour, store, registry, metrics, publisher, runner)


async def subject_count(js: JetStreamContext, stream: str, subject_filter: str) -> int:
    """How many messages of `stream` match `subject_filter`."""
    info = await js.stream_info(stream, subjects_filter=subject_filter)
    return sum((info.state.subjects or {}).values())


async def downstream_events(js: JetStreamContext) -> list[dict[str, Any]]:
    """Bodies of every `payment.succeeded` stored in EVENTS."""
    info = await js.stream_info("EVENTS")
    bodies = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await js.get_msg("EVENTS", seq)
        if msg.subject and msg.subject.startswith("events.payment.succeeded."):
            bodies.append(orjson.loads(msg.data or b""))
    return bodies
