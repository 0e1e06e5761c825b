"""Wiring of the inventory service: seeds its share of the stock, serves stock levels."""

from fastapi import FastAPI, HTTPException

from common.service import ServiceContext, ServiceDefinition
from services.contract import payload_registry
from services.inventory import handlers, store
from services.inventory.events import SPEC


async def seed(ctx: ServiceContext) -> None:
    settings = ctx.settings
    assert isinstance(settings, handlers.InventorySettings)
    units = store.share(settings.inventory_initial_stock, settings.partition, settings.partitions)
    async with ctx.store.transaction() as db:
        await store.seed(db, sku_count=settings.inventory_sku_count, units=units)


def api(app: FastAPI, ctx: ServiceContext) -> None:
    @app.get("/stock", tags=["inventory"], summary="Stock levels of this partition")
    async def stock() -> dict[str, object]:
        async with ctx.store.lock:
            levels = await store.stock_levels(ctx.store.db)
            reserved = await store.reserved_units(ctx.store.db)
        return {"partition": ctx.settings.partition, "stock": levels, "reserved": reserved}

    @app.get("/stock/{sku}", tags=["inventory"], summary="Stock level of one SKU")
    async def stock_of(sku: str) -> dict[str, object]:
        async with ctx.store.lock:
            levels = await store.stock_levels(ctx.store.db, sku)
        if not levels:
            raise HTTPException(404, detail={"error": "unknown_sku", "sku": sku})
        return levels[0]


definition = ServiceDefinition(
    spec=SPEC,
    payloads=payload_registry(SPEC.consumes),
    handlers=handlers.handlers,
    schema=store.SCHEMA,
    settings_cls=handlers.InventorySettings,
    on_start=seed,
    api=api,
)
