"""order-status's trace page: `/` serves static/index.html, `/static/*` its script and style.

The page only reads the API (GET /orders, GET /traces/{cid}, GET /traces/{cid}/dead-letters);
everything it needs is served from this package (no CDN). The page routes stay out of the
OpenAPI document, which describes the API.

GET /traces/{cid}/dead-letters reads the DLQ stream with the service's own NATS connection
(common.tracing.read_dead_letters). Where the service's NATS user may not read the DLQ
(`choreo up --auth`, least-privilege users), it answers 503 and the page says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

from fastapi import FastAPI, HTTPException
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field

from common.correlation import get_logger
from common.service import ServiceContext
from common.tracing import DeadLetter, read_dead_letters

STATIC: Final = Path(__file__).with_name("static")
DLQ_TIMEOUT_SECONDS: Final = 5.0

log = get_logger("choreo.order_status.page")


class DeadLetterView(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    consumer: str
    reason: str
    error: str
    event_type: str = Field(alias="eventType")
    event_id: str | None = Field(alias="eventId")
    causation_id: str | None = Field(alias="causationId")
    failed_at: str | None = Field(alias="failedAt")


class DeadLetters(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    correlation_id: str = Field(alias="correlationId")
    dead_letters: list[DeadLetterView] = Field(alias="deadLetters")


def _view(letter: DeadLetter) -> dict[str, Any]:
    failed_at = letter.failed_at.isoformat().replace("+00:00", "Z") if letter.failed_at else None
    return {
        "consumer": letter.consumer,
        "reason": letter.reason,
        "error": letter.error,
        "eventType": letter.event_type,
        "eventId": letter.event_id,
        "causationId": letter.causation_id,
        "failedAt": failed_at,
    }


def mount(app: FastAPI, ctx: ServiceContext) -> None:
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get(
        "/traces/{correlation_id}/dead-letters",
        response_model=DeadLetters,
        response_model_by_alias=True,
        responses={503: {"description": "The DLQ stream cannot be read by this service"}},
        tags=["traces"],
        summary="The flow's entries in the DLQ stream (Correlation-Id header)",
    )
    async def dead_letters(correlation_id: str) -> dict[str, Any]:
        try:
            found = await read_dead_letters(ctx.nc, correlation_id, timeout=DLQ_TIMEOUT_SECONDS)
        except Exception as exc:  # permissions, timeouts: the page falls back to the trace alone
            log.warning("dlq not readable", error=str(exc), correlation_id=correlation_id)
            raise HTTPException(503, detail={"error": "dlq_unavailable"}) from None
        return {"correlationId": correlation_id, "deadLetters": [_view(d) for d in found]}
