"""The service shell as a real OS process: health endpoints, SIGTERM drains the batch, bad config."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from nats.js import JetStreamContext

from common import ProvisionSettings, Publisher, provision
from common.natsserver import NatsServer, free_port
from tests.integration.toy import CONSUMER, SPEC, downstream_events, order_placed
from tests.support import wait_until

ROOT = Path(__file__).resolve().parents[2]
MODULE = "tests.integration.toy_service"


def _env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHOREO_")}
    env.update(overrides)
    return env


@dataclass
class Service:
    process: asyncio.subprocess.Process
    port: int
    lines: list[dict[str, Any]] = field(default_factory=list)
    reader: asyncio.Task[None] | None = None

    async def read(self) -> None:
        assert self.process.stdout is not None
        for _ in range(100_000):
            raw = await self.process.stdout.readline()
            if not raw:
                return
            with contextlib.suppress(orjson.JSONDecodeError):
                line = orjson.loads(raw)
                if isinstance(line, dict):
                    self.lines.append(line)

    def logged(self, event: str) -> list[dict[str, Any]]:
        return [line for line in self.lines if line.get("event") == event]


@pytest.fixture
async def service(nats_server: NatsServer, js: JetStreamContext, tmp_path: Path) -> AsyncIterator[Service]:
    """The toy service process, provisioned, consuming, with a free HTTP port."""
    await provision(js, [SPEC], ProvisionSettings(ack_wait_seconds=5, max_deliver=3))
    port = free_port()
    env = _env(
        CHOREO_NATS_URL=nats_server.url,
        CHOREO_DATA_DIR=str(tmp_path / "stores"),
        CHOREO_HTTP_PORT=str(port),
        CHOREO_ACK_WAIT_SECONDS="5",
        CHOREO_MAX_DELIVER="3",
        CHOREO_DRAIN_TIMEOUT_SECONDS="20",
        TOY_HANDLER_SLEEP="1.0",
    )
    stderr = (tmp_path / "service.stderr").open("wb")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", MODULE, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=stderr
    )
    svc = Service(process, port)
    svc.reader = asyncio.create_task(svc.read())
    try:
        yield svc
    finally:
        if process.returncode is None:
            process.kill()
            await asyncio.wait_for(process.wait(), 10)
        await asyncio.wait_for(svc.reader, 10)
        stderr.close()


async def _status(client: httpx.AsyncClient, path: str) -> int:
    try:
        return (await client.get(path)).status_code
    except httpx.TransportError:
        return 0


async def test_health_ready_and_metrics_endpoints_while_consuming(service: Service) -> None:
    """/healthz is 200, /readyz is 200 once consuming, /metrics serves choreo_ metrics."""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{service.port}", timeout=2) as client:

        async def ready() -> bool:
            return await _status(client, "/readyz") == 200

        await wait_until(ready, timeout=20, interval=0.1, what="/readyz 200")
        health = await client.get("/healthz")
        assert health.status_code == 200
        assert health.json() == {"status": "ok"}
        readyz = await client.get("/readyz")
        assert readyz.json() == {"ready": True, "nats": True}
        metrics = await client.get("/metrics")
        assert metrics.status_code == 200
        assert 'choreo_ready{service="toy"} 1.0' in metrics.text
        histogram = "choreo_handler_duration_seconds"  # a metric name, not a timing check
        assert f"# TYPE {histogram} histogram" in metrics.text
    service.process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(service.process.wait(), 30) == 0


async def test_sigterm_during_batch_finishes_and_acks_in_flight_events(
    service: Service, js: JetStreamContext
) -> None:
    """SIGTERM while a handler runs: the batch completes, its events are published and acked, exit 0."""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{service.port}", timeout=2) as client:

        async def ready() -> bool:
            return await _status(client, "/readyz") == 200

        await wait_until(ready, timeout=20, interval=0.1, what="/readyz 200")
    events = [order_placed() for _ in range(3)]
    # One pipelined burst, so that the runner's next fetch takes them as one batch.
    await Publisher(js, service="order", produces={"order.placed"}).publish(events)

    async def started() -> bool:
        return bool(service.logged("handler started"))

    await wait_until(started, timeout=15, what="a handler started")
    service.process.send_signal(signal.SIGTERM)
    code = await asyncio.wait_for(service.process.wait(), 30)
    assert service.reader is not None
    await asyncio.wait_for(service.reader, 10)
    assert code == 0
    stopped = service.logged("service stopped")
    assert stopped
    assert stopped[0]["exit_code"] == 0
    assert service.logged("draining")

    begun = {line["event_id"] for line in service.logged("handler started")}
    finished = {line["event_id"] for line in service.logged("handler finished")}
    assert begun
    assert begun == finished
    order = [line["event"] for line in service.lines]
    last_finished = len(order) - 1 - order[::-1].index("handler finished")
    assert order.index("draining") < last_finished  # SIGTERM arrived while the batch ran
    assert begun <= {str(e.event_id) for e in events}
    for line in service.logged("handler started"):
        assert line["service"] == "toy"
        assert line["correlation_id"] == line["event_id"]
    causes = [body["causationId"] for body in await downstream_events(js)]
    assert sorted(causes) == sorted(begun)
    info = await js.consumer_info("EVENTS", CONSUMER)
    assert info.num_ack_pending == 0
    assert info.num_pending == len(events) - len(begun)
    assert info.num_redelivered == 0


def test_partition_not_below_partitions_exits_with_usage_code(tmp_path: Path) -> None:
    """CHOREO_PARTITION=5 with CHOREO_PARTITIONS=1 is a configuration error: exit code 2."""
    env = _env(
        CHOREO_PARTITION="5",
        CHOREO_PARTITIONS="1",
        CHOREO_NATS_URL="nats://127.0.0.1:1",
        CHOREO_DATA_DIR=str(tmp_path / "stores"),
    )
    result = subprocess.run(
        [sys.executable, "-m", MODULE], cwd=ROOT, env=env, capture_output=True, timeout=60, check=False
    )
    assert result.returncode == 2
    lines = [orjson.loads(line) for line in result.stdout.splitlines() if line.startswith(b"{")]
    errors = [line for line in lines if line.get("event") == "invalid configuration"]
    assert errors
    assert "CHOREO_PARTITION=5" in errors[0]["error"]
    assert not (tmp_path / "stores").exists()
