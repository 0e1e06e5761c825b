"""Runs the dead-letter test application (tests/e2e/dlqapp.py) with `choreo up`, and the
helpers the dead-letter tests share: publishing raw messages, reading the stores, waiting."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from nats.js import JetStreamContext

from common.dlqtool import Filters, read_entries
from common.provision import DLQ_CONSUMER
from tests.support import UpProcess

REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT = 60.0
MAX_EVENT_BYTES = 2048


@dataclass
class System:
    """A running `choreo up` of the test app."""

    up: UpProcess
    state_dir: Path

    @property
    def data_dir(self) -> Path:
        return self.up.data_dir

    @property
    def nats_url(self) -> str:
        return self.up.urls["nats"]

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, **self.up.env, "CHOREO_NATS_URL": self.nats_url}

    def cli(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run `choreo <args>` as an operator would, against this system's NATS."""
        return subprocess.run(
            [sys.executable, "-m", "common.cli", *args],
            env=self.env, cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip

    def rows(self, store: str, table: str, order_id: str | None = None) -> list[tuple[str, str]]:
        """(event_id, order_id) rows of a service's effect table, read from its SQLite file."""
        path = self.data_dir / "stores" / f"{store}.db"
        if not path.exists():
            return []
        with sqlite3.connect(path, timeout=5) as db:
            query = f"SELECT event_id, order_id FROM {table}"  # table: a test constant
            found = db.execute(query).fetchall()
        return [(r[0], r[1]) for r in found if order_id is None or r[1] == order_id]

    def charges(self, order_id: str | None = None) -> list[tuple[str, str]]:
        return self.rows("shop-0", "charges", order_id)

    def audited(self, order_id: str | None = None) -> list[tuple[str, str]]:
        return self.rows("audit-0", "seen", order_id)

    def log(self, name: str) -> str:
        path = self.data_dir / "logs" / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""


@contextmanager
def running_system(tmp: Path, *, extra_env: dict[str, str] | None = None) -> Iterator[System]:
    """`choreo up --no-demo` of the test app with fast failure settings; stopped afterwards."""
    state_dir = tmp / "state"
    state_dir.mkdir(parents=True)
    env = {
        "CHOREO_APP": "tests.e2e.dlqapp",
        "DLQAPP_DIR": str(state_dir),
        "CHOREO_ACK_WAIT_SECONDS": "1",
        "CHOREO_MAX_DELIVER": "3",
        "CHOREO_MAX_EVENT_BYTES": str(MAX_EVENT_BYTES),
        "PYTHONPATH": str(REPO),
        **(extra_env or {}),
    }
    up = UpProcess(tmp / "data", env=env, ready_timeout=READY_TIMEOUT).start()
    try:
        yield System(up, state_dir)
    finally:
        up.stop()


def order_body(order_id: str, customer: str = "c-1", **overrides: Any) -> dict[str, Any]:
    """A valid `order.placed` envelope as a dict (mutate it to make poison)."""
    event_id = str(uuid.uuid4())
    body: dict[str, Any] = {
        "eventId": event_id,
        "eventType": "order.placed",
        "schemaVersion": "1.0.0",
        "occurredAt": "2026-01-01T00:00:00Z",
        "aggregateId": order_id,
        "correlationId": event_id,
        "causationId": None,
        "payload": {
            "orderId": order_id,
            "customerId": customer,
            "items": [{"sku": "sku-1", "quantity": 1, "unitPriceCents": 100}],
            "totalCents": 100,
        },
    }
    body.update(overrides)
    return body


def new_order_id() -> str:
    return f"o-{uuid.uuid4().hex[:12]}"


async def publish(
    js: JetStreamContext, order_id: str, body: dict[str, Any] | bytes, *, subject_id: str | None = None
) -> int:
    """Publish as a (possibly broken) producer would; returns the EVENTS stream sequence."""
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    headers = {"Nats-Msg-Id": str(uuid.uuid4()), "Event-Type": "order.placed", "Schema-Version": "1.0.0"}
    ack = await js.publish(f"events.order.placed.{subject_id or order_id}", data, headers=headers)
    return int(ack.seq)


async def settled(js: JetStreamContext, consumer: str) -> bool:
    """Nothing pending or unacked on a consumer of EVENTS."""
    info = await js.consumer_info("EVENTS", consumer)
    return bool(info.num_pending == 0 and info.num_ack_pending == 0)


async def advisories_done(js: JetStreamContext) -> bool:
    """The dlq service has acked every advisory captured so far."""
    info = await js.consumer_info("ADVISORIES", DLQ_CONSUMER)
    return bool(info.num_pending == 0 and info.num_ack_pending == 0)


async def advisory_seqs(js: JetStreamContext, kind: str) -> list[int]:
    """Stream sequences named by the advisories of `kind` (MAX_DELIVERIES, MSG_TERMINATED)."""
    info = await js.stream_info("ADVISORIES")
    seqs = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1) if info.state.messages else ():
        msg = await js.get_msg("ADVISORIES", seq)
        if f".{kind}." not in (msg.subject or ""):
            continue
        try:
            seqs.append(int(orjson.loads(msg.data or b"{}")["stream_seq"]))
        except (orjson.JSONDecodeError, KeyError, TypeError):
            continue  # not a server advisory (a test publishes some)
    return seqs


async def entries_for(js: JetStreamContext, stream_seq: int, consumer: str = "shop-0") -> list[Any]:
    """DLQ entries of one failed (consumer, EVENTS seq)."""
    scan = await read_entries(js, Filters(consumer=consumer))
    return [e for e in scan.entries if e.header("Dlq-Stream-Seq") == str(stream_seq)]
