"""Wiring of the order-status service (the query view)."""

import asyncio
from contextlib import suppress

from fastapi import FastAPI
from prometheus_client import Gauge

from common.service import ServiceContext, ServiceDefinition
from services.contract import payload_registry
from services.order_status import api, handlers, page, store
from services.order_status.events import SPEC
from services.order_status.status import STATUSES

GAUGE_PERIOD_SECONDS = 5.0


async def start(ctx: ServiceContext) -> None:
    """Keep `choreo_orders_by_status` current from the view, off the hot path."""
    gauge = Gauge(
        "choreo_orders_by_status", "Orders in the view by status", ["status"], registry=ctx.registry
    )

    async def refresh() -> None:
        while True:
            with suppress(Exception):
                async with ctx.store.lock:
                    counts = await store.counts_by_status(ctx.store.db)
                for status in STATUSES:
                    gauge.labels(status).set(counts.get(status, 0))
            await asyncio.sleep(GAUGE_PERIOD_SECONDS)

    ctx.extras["gauge_task"] = asyncio.create_task(refresh())


def mount(app: FastAPI, ctx: ServiceContext) -> None:
    """The query API, then the trace page (kept out of the OpenAPI document)."""
    api.mount(app, ctx)
    page.mount(app, ctx)


definition = ServiceDefinition(
    spec=SPEC,
    payloads=payload_registry(SPEC.consumes),
    handlers=handlers.handlers,
    schema=store.SCHEMA,
    api=mount,
    on_start=start,
    title="Choreo order-status API",
    snapshot=store.snapshot,
)
