"""order's HTTP API: POST /orders -> order.placed (through the outbox)."""

from __future__ import annotations

import re
import time
import uuid
from typing import Final

from fastapi import FastAPI, Header, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from common.correlation import get_logger
from common.envelope import derive_event_id, new_event
from common.inbox import flush_outbox
from common.service import ServiceContext
from services.contract import MAX_ITEMS, ORDER_PLACED, LineItem, OrderPlaced
from services.order import store

MAX_BODY_BYTES: Final = 64 * 1024
CORRELATION_ID_RE: Final = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
KEY_PATTERN: Final = r"^[A-Za-z0-9_.:-]{1,128}$"
IDEMPOTENCY_NAMESPACE: Final = uuid.UUID("0b1a6c52-3c1e-5d0e-8f4a-2f9e7d6c5b41")
log = get_logger("choreo.order.api")


class PlaceOrder(BaseModel):
    """A new order. Prices come with the items: the order service has no catalogue."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    customer_id: str = Field(alias="customerId", min_length=1, max_length=128)
    items: list[LineItem] = Field(min_length=1, max_length=MAX_ITEMS)


class OrderAccepted(BaseModel):
    order_id: str = Field(serialization_alias="orderId")
    correlation_id: str = Field(serialization_alias="correlationId")


class ErrorBody(BaseModel):
    error: str
    detail: object | None = None


def mount(app: FastAPI, ctx: ServiceContext) -> None:
    app.add_middleware(BodyLimit)
    app.add_exception_handler(RequestValidationError, _invalid_request)

    @app.post(
        "/orders",
        status_code=202,
        response_model=OrderAccepted,
        response_model_by_alias=True,
        responses={413: {"model": ErrorBody}, 422: {"model": ErrorBody}},
        tags=["orders"],
        summary="Place an order; it flows through payment, inventory and shipping",
    )
    async def place_order(
        order: PlaceOrder,
        x_correlation_id: str | None = Header(default=None, max_length=256),
        idempotency_key: str | None = Header(default=None, max_length=128, pattern=KEY_PATTERN),
    ) -> OrderAccepted:
        # With an Idempotency-Key, a retried POST (its response lost) names the same order and
        # the same order.placed eventId, whichever order process takes it: JetStream drops the
        # re-publish inside the duplicate window and every inbox recognises the event.
        order_id = (
            str(uuid.uuid5(IDEMPOTENCY_NAMESPACE, f"{order.customer_id}:{idempotency_key}"))
            if idempotency_key
            else str(uuid.uuid4())
        )
        correlation_id = (
            x_correlation_id
            if x_correlation_id and CORRELATION_ID_RE.match(x_correlation_id)
            else str(uuid.uuid4())
        )
        payload = OrderPlaced(
            order_id=order_id,
            customer_id=order.customer_id,
            items=order.items,
            total_cents=sum(i.quantity * i.unit_price_cents for i in order.items),
        )
        event = new_event(
            ORDER_PLACED, order_id, payload, correlation_id=correlation_id,
            event_id=derive_event_id(order_id, ORDER_PLACED) if idempotency_key else None,
        )  # fmt: skip
        async with ctx.store.transaction() as db:
            known = await store.correlation_of(db, order_id) if idempotency_key else None
            if known is not None:  # the same key again, on this process: the first answer holds
                return OrderAccepted(order_id=order_id, correlation_id=known)
            await store.insert_order(
                db, order_id=order_id, correlation_id=correlation_id,
                customer_id=order.customer_id, total_cents=payload.total_cents,
                created_at=time.time(),
            )  # fmt: skip
            ctx.store.add_outbox(ctx.publisher.to_messages([event]))
        try:
            await flush_outbox(ctx.store, ctx.publisher)
        except Exception as exc:  # stored: the outbox relay publishes it later
            log.warning("order.placed not yet published", error=str(exc), order_id=order_id)
        log.info("order placed", order_id=order_id, correlation_id=correlation_id)
        return OrderAccepted(order_id=order_id, correlation_id=correlation_id)


class BodyLimit:
    """ASGI middleware: 413 with a JSON body for requests over `limit` bytes, whether the
    client announced the length or streamed the body."""

    def __init__(self, app: ASGIApp, *, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.limit:
            await self._reject(scope, send)
            return
        # Read a streamed body here, up to the limit, and replay it to the app: an error
        # raised inside the app's `receive` would become FastAPI's 400 "error parsing the body".
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            body += message.get("body", b"")
            if len(body) > self.limit:
                await self._reject(scope, send)
                return
            more = message.get("more_body", False)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)

    async def _reject(self, scope: Scope, send: Send) -> None:
        response = JSONResponse(
            {"error": "payload_too_large", "detail": f"request body over {self.limit} bytes"},
            status_code=413,
        )
        await response(scope, _disconnected, send)


async def _disconnected() -> Message:
    return {"type": "http.disconnect"}


async def _invalid_request(_request: Request, exc: Exception) -> JSONResponse:
    errors = exc.errors() if isinstance(exc, RequestValidationError) else str(exc)
    return JSONResponse({"error": "invalid_request", "detail": jsonable_encoder(errors)}, 422)
