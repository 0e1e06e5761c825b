"""A small application for the dead-letter tests, run as real processes with
`CHOREO_APP=tests.e2e.dlqapp choreo up --no-demo`.

    order.placed ─► shop (charges; produces payment.succeeded) ─► audit (records it)
    advisories   ─► dlq (the reference dlq service)

The shop's handler is steered by the order's `customerId`:

    fail-twice    a retryable error on its first two runs (counted in a file), then success
    always-retry  a retryable error every time
    permanent     PermanentError
    crash         SIGKILLs its own process (a crash loop: no ack, ever)
    flagged       a retryable error while the file `$DLQAPP_DIR/broken` exists (the "bug")
    anything else success

Every effect is a row without a unique constraint (`charges` in shop-<k>.db, `seen` in
audit-<k>.db): a handler that ran twice leaves two rows.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import aiosqlite

from common import Envelope, Handler, PermanentError, ServiceSpec, caused_by
from common.service import ServiceDefinition
from tests.support import OrderPlaced, PaymentSucceeded, payload_registry

SHOP: Final = ServiceSpec.of("shop", consumes=["order.placed"], produces=["payment.succeeded"])
AUDIT: Final = ServiceSpec.of("audit", consumes=["payment.succeeded"])
SERVICES: Final = {"shop": SHOP, "audit": AUDIT, "dlq": None}
FLAG_FILE: Final = "broken"


def _state_dir() -> Path:
    return Path(os.environ["DLQAPP_DIR"])


def _runs(event: Envelope) -> int:
    """Count this run of the handler for `event` in a file (survives rollbacks)."""
    path = _state_dir() / "runs" / str(event.event_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write("x")
    return len(path.read_text())


async def charge(event: Envelope, payload: OrderPlaced, db: aiosqlite.Connection) -> Sequence[Envelope]:
    mode = payload.customer_id
    runs = _runs(event)
    if mode == "crash":
        os.kill(os.getpid(), signal.SIGKILL)
    if mode == "permanent":
        raise PermanentError("card reported stolen")
    if mode == "always-retry" or (mode == "fail-twice" and runs <= 2):
        raise ConnectionError(f"payment gateway unavailable (run {runs})")
    if mode == "flagged" and (_state_dir() / FLAG_FILE).exists():
        raise ConnectionError("bug #42: the gateway client rejects this order")
    await db.execute(
        "INSERT INTO charges (event_id, order_id) VALUES (?, ?)", (str(event.event_id), payload.order_id)
    )
    paid = PaymentSucceeded(
        order_id=payload.order_id, payment_id=f"pay-{payload.order_id}", amount_cents=payload.total_cents
    )
    return [caused_by(event, "payment.succeeded", paid)]


async def record(event: Envelope, payload: PaymentSucceeded, db: aiosqlite.Connection) -> Sequence[Envelope]:
    await db.execute(
        "INSERT INTO seen (event_id, order_id) VALUES (?, ?)", (str(event.event_id), payload.order_id)
    )
    return []


def _shop_handlers(_settings: Any) -> Mapping[str, Handler]:
    return {"order.placed": charge}


def _audit_handlers(_settings: Any) -> Mapping[str, Handler]:
    return {"payment.succeeded": record}


def spec(name: str) -> ServiceSpec:
    if name == "dlq":
        from services.dlq.events import SPEC

        return SPEC
    found = SERVICES[name]
    assert found is not None
    return found


def specs() -> list[ServiceSpec]:
    return [spec(name) for name in SERVICES]


def definition(name: str) -> ServiceDefinition:
    if name == "dlq":
        from services.dlq.app import definition as dlq

        return dlq
    if name == "shop":
        schema = "CREATE TABLE IF NOT EXISTS charges (event_id TEXT NOT NULL, order_id TEXT NOT NULL);"
        return ServiceDefinition(
            spec=SHOP, payloads=payload_registry(), handlers=_shop_handlers, schema=schema
        )
    schema = "CREATE TABLE IF NOT EXISTS seen (event_id TEXT NOT NULL, order_id TEXT NOT NULL);"
    return ServiceDefinition(spec=AUDIT, payloads=payload_registry(), handlers=_audit_handlers, schema=schema)
