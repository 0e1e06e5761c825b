"""Wiring of the shipping service."""

from fastapi import FastAPI

from common.service import ServiceContext, ServiceDefinition
from services.contract import payload_registry
from services.shipping import handlers, store
from services.shipping.events import SPEC


def api(app: FastAPI, ctx: ServiceContext) -> None:
    @app.get("/shipments/count", tags=["operations"], summary="Shipments scheduled here")
    async def shipments() -> dict[str, int]:
        async with ctx.store.lock:
            return {"shipments": await store.count(ctx.store.db)}


definition = ServiceDefinition(
    spec=SPEC,
    payloads=payload_registry(SPEC.consumes),
    handlers=handlers.handlers,
    schema=store.SCHEMA,
    settings_cls=handlers.ShippingSettings,
    api=api,
)
