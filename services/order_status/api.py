"""order-status's HTTP API: orders, traces, and the trace page."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from common.service import ServiceContext
from services.order_status import store
from services.order_status.status import STATUSES


class OrderView(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    order_id: str = Field(alias="orderId")
    correlation_id: str = Field(alias="correlationId")
    status: str
    reason: str | None = None
    events: list[str] = []
    updated_at: str = Field(alias="updatedAt")


class OrderSummary(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    order_id: str = Field(alias="orderId")
    correlation_id: str = Field(alias="correlationId")
    status: str
    reason: str | None = None
    updated_at: str = Field(alias="updatedAt")


class TraceEvent(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    event_id: str = Field(alias="eventId")
    causation_id: str | None = Field(alias="causationId")
    event_type: str = Field(alias="eventType")
    service: str
    occurred_at: str = Field(alias="occurredAt")
    order_id: str = Field(alias="orderId")


class Trace(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    correlation_id: str = Field(alias="correlationId")
    events: list[TraceEvent]


class ErrorBody(BaseModel):
    error: str
    detail: Any = None


def mount(app: FastAPI, ctx: ServiceContext) -> None:
    @app.get(
        "/orders/{order_id}",
        response_model=OrderView,
        response_model_by_alias=True,
        response_model_exclude_none=True,
        responses={404: {"model": ErrorBody}},
        tags=["orders"],
        summary="One order's status and the events seen for it",
    )
    async def get_order(order_id: str) -> Any:
        async with ctx.store.lock:
            order = await store.get_order(ctx.store.db, order_id)
        if order is None:
            return _not_found({"orderId": order_id})
        return order

    @app.get(
        "/orders",
        response_model=list[OrderSummary],
        response_model_by_alias=True,
        response_model_exclude_none=True,
        tags=["orders"],
        summary="Recent orders, optionally by status",
    )
    async def list_orders(
        status: str | None = Query(default=None, pattern="^(" + "|".join(STATUSES) + ")$"),
        limit: int = Query(default=50, ge=1, le=1000),
    ) -> list[dict[str, Any]]:
        async with ctx.store.lock:
            return await store.list_orders(ctx.store.db, status=status, limit=limit)

    @app.get(
        "/traces/{correlation_id}",
        response_model=Trace,
        response_model_by_alias=True,
        responses={404: {"model": ErrorBody}},
        tags=["traces"],
        summary="Every event of one flow, in time order",
    )
    async def get_trace(correlation_id: str) -> Any:
        async with ctx.store.lock:
            events = await store.trace(ctx.store.db, correlation_id)
        if not events:
            return _not_found({"correlationId": correlation_id})
        return {"correlationId": correlation_id, "events": events}


def _not_found(detail: dict[str, str]) -> JSONResponse:
    """404 in the documented ErrorBody shape (HTTPException would nest it under "detail")."""
    return JSONResponse({"error": "not_found", "detail": detail}, status_code=404)
