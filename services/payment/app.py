"""Wiring of the payment service."""

from fastapi import FastAPI

from common.service import ServiceContext, ServiceDefinition
from services.contract import payload_registry
from services.payment import handlers, store
from services.payment.events import SPEC


def api(app: FastAPI, ctx: ServiceContext) -> None:
    @app.get("/ledger", tags=["operations"], summary="Ledger rows per status")
    async def ledger() -> dict[str, int]:
        async with ctx.store.lock:
            return await store.totals(ctx.store.db)


definition = ServiceDefinition(
    spec=SPEC,
    payloads=payload_registry(SPEC.consumes),
    handlers=handlers.handlers,
    schema=store.SCHEMA,
    settings_cls=handlers.PaymentSettings,
    api=api,
)
