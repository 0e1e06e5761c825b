"""End to end: the five-service chain (`choreo up`'s Supervisor, one process per service and
partition) against the raw reference chain (bench/rawchain.py), each on its own fresh nats-server.

- saturation: a burst of `order.placed` events published straight to NATS (pipelined); orders/s
  from the first publish until every order is `shipment.scheduled` and every consumer (the
  projection included) has nothing pending or unacked;
- latency: orders offered at a fixed rate; placed→shipped is `shipment.scheduled.occurredAt` −
  `order.placed.occurredAt` (both from the event bodies, same clock);
- memory: the largest resident set (psutil RSS) of each service process, sampled under load.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import psutil
from nats.aio.client import Client as NATS

from bench.support import (
    connect,
    consumers_drained,
    fresh_server,
    median,
    order_placed,
    parse_ts,
    percentile,
    provision_specs,
    wait_until,
)


@dataclass
class System:
    """A running chain: its NATS url, its processes (name -> pid) and its durable consumers."""

    kind: str
    url: str
    pids: dict[str, int]
    consumers: list[str]


@dataclass
class ChainResult:
    kind: str
    partitions: int
    saturation: list[float] = field(default_factory=list)  # orders/s per burst
    latency: dict[int, dict[str, float]] = field(default_factory=dict)  # rate -> p50/p95/p99 (ms)
    rss_mb: dict[str, float] = field(default_factory=dict)  # process -> max RSS (MB)

    @property
    def saturation_median(self) -> float:
        return median(self.saturation)


class Shipments:
    """Counts `shipment.scheduled` events (a core NATS subscription) and keeps their latencies."""

    def __init__(self) -> None:
        self.placed_at: dict[str, float] = {}
        self.latencies_ms: list[float] = []
        self.seen = 0

    async def handler(self, msg: Any) -> None:
        body = orjson.loads(msg.data)
        placed = self.placed_at.pop(body["payload"]["orderId"], None)
        if placed is not None:
            self.seen += 1
            self.latencies_ms.append((parse_ts(body["occurredAt"]) - placed) * 1000)

    def reset(self) -> None:
        self.placed_at.clear()
        self.latencies_ms = []
        self.seen = 0


class RssSampler:
    """Samples the RSS of the system's processes every `interval` seconds; keeps each maximum."""

    def __init__(self, pids: dict[str, int], *, interval: float = 0.25) -> None:
        self.procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.peak: dict[str, float] = dict.fromkeys(pids, 0.0)
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    def sample(self) -> None:
        for name, proc in self.procs.items():
            with suppress(psutil.Error):
                self.peak[name] = max(self.peak[name], proc.memory_info().rss / 2**20)

    async def _run(self) -> None:
        for _ in range(100_000):
            self.sample()
            await asyncio.sleep(self.interval)

    def __enter__(self) -> RssSampler:
        self._task = asyncio.create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
        self.sample()


async def _offer(nc: NATS, shipments: Shipments, count: int, rate: float | None) -> float:
    """Publish `count` orders, paced at `rate`/s (None: as fast as pipelining allows); start time."""
    js = nc.jetstream()
    started = time.monotonic()
    futures = []
    for i in range(count):
        if rate is not None:
            delay = started + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        subject, body, headers = order_placed()
        order = orjson.loads(body)
        shipments.placed_at[order["payload"]["orderId"]] = parse_ts(order["occurredAt"])
        futures.append(await js.publish_async(subject, body, headers=headers))
        if len(futures) >= 512:
            await asyncio.wait_for(asyncio.gather(*futures), 30)
            futures = []
    await asyncio.wait_for(asyncio.gather(*futures), 30)
    return started


async def _drain(nc: NATS, system: System, shipments: Shipments, count: int, timeout: float) -> float:
    async def done() -> bool:
        for name, pid in system.pids.items():
            if not psutil.pid_exists(pid):
                raise RuntimeError(f"{system.kind}: process {name} died")
        return shipments.seen >= count and await consumers_drained(nc, system.consumers)

    return await wait_until(
        done, timeout=timeout, interval=0.02, what=f"{system.kind}: {count} orders shipped"
    )


async def measure(
    system: System, partitions: int, *, burst: int, bursts: int, rates: list[int], rate_seconds: float,
    timeout: float, say: Any = print,
) -> ChainResult:  # fmt: skip
    result = ChainResult(system.kind, partitions)
    nc = await connect(system.url)
    shipments = Shipments()
    sub = await nc.subscribe("events.shipment.scheduled.*", cb=shipments.handler)
    try:
        with RssSampler(system.pids) as rss:
            for b in range(bursts):
                shipments.reset()
                started = await _offer(nc, shipments, burst, None)
                finished = await _drain(nc, system, shipments, burst, timeout)
                result.saturation.append(burst / (finished - started))
                say(
                    f"  e2e {system.kind:6s} P={partitions} burst {b + 1}/{bursts}: {result.saturation[-1]:7.0f} orders/s"
                )
            for rate in rates:
                shipments.reset()
                count = max(1, int(rate * rate_seconds))
                await _offer(nc, shipments, count, float(rate))
                await _drain(nc, system, shipments, count, timeout)
                lat = shipments.latencies_ms
                result.latency[rate] = {
                    "p50": percentile(lat, 50),
                    "p95": percentile(lat, 95),
                    "p99": percentile(lat, 99),
                }
                say(
                    f"  e2e {system.kind:6s} P={partitions} {rate}/s: p50 {result.latency[rate]['p50']:.1f} ms"
                    f" p95 {result.latency[rate]['p95']:.1f} ms p99 {result.latency[rate]['p99']:.1f} ms"
                )
        result.rss_mb = dict(rss.peak)
    finally:
        await sub.unsubscribe()
        await nc.close()
    return result


@asynccontextmanager
async def choreo_system(root: Path, partitions: int, env: dict[str, str]) -> AsyncIterator[System]:
    """The real system as `choreo up --no-demo` runs it, on free ports under `root`."""
    from common.natsserver import free_port
    from common.provision import consumer_configs
    from common.settings import ProvisionSettings
    from common.up import Supervisor, UpOptions
    from services.catalog import specs

    options = UpOptions(
        data_dir=root, nats_port=free_port(), order_port=free_port(), status_port=free_port(),
        partitions=partitions, demo=False, extra_env=env,
    )  # fmt: skip
    supervisor = Supervisor(options, say=lambda _line: None)
    try:
        supervisor.start_nats()
        await supervisor.provision()
        await supervisor.start_services()
        await supervisor.wait_ready(timeout=90)
        pids = {p.name: p.process.pid for p in supervisor.processes if p.process is not None}
        configs = consumer_configs(specs(), ProvisionSettings(partitions=partitions))
        consumers = [c.durable_name for c in configs if c.durable_name and c.durable_name != "dlq"]
        yield System("choreo", supervisor.nats_url, pids, consumers)
    finally:
        await supervisor.stop()


@asynccontextmanager
async def raw_system(root: Path, partitions: int) -> AsyncIterator[System]:
    """The raw reference chain: one process per (role, partition), the projection once."""
    from services.catalog import specs

    with fresh_server(root) as server:
        await provision_specs(server.url, specs(), partitions=partitions)
        plan = [(role, k) for role in ("payment", "inventory", "shipping") for k in range(partitions)]
        plan.append(("projection", 0))
        procs: dict[str, subprocess.Popen[bytes]] = {}
        consumers = []
        try:
            for role, k in plan:
                consumer = f"order-status-{k}" if role == "projection" else f"{role}-{k}"
                consumers.append(consumer)
                with (root / f"{role}-{k}.err").open("wb") as err:
                    procs[f"{role}-{k}"] = subprocess.Popen(
                        [sys.executable, "-m", "bench.rawchain", role, "--url", server.url,
                         "--consumer", consumer, "--db", str(root / f"{role}-{k}.db")],
                        stdout=subprocess.PIPE, stderr=err, start_new_session=True,
                    )  # fmt: skip
            for name, proc in procs.items():
                assert proc.stdout is not None
                line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 60)
                if line.strip() != b"READY":
                    raise RuntimeError(f"raw {name} failed; see {root / (name + '.err')}")
            yield System("raw", server.url, {n: p.pid for n, p in procs.items()}, consumers)
        finally:
            for proc in procs.values():
                proc.terminate()
            for proc in procs.values():
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)
                if proc.stdout is not None:
                    proc.stdout.close()


async def run_chain(
    kind: str, partitions: int, root: Path, *, env: dict[str, str] | None = None, **kwargs: Any
) -> ChainResult:
    if kind == "choreo":
        async with choreo_system(root, partitions, env or {}) as system:
            return await measure(system, partitions, **kwargs)
    async with raw_system(root, partitions) as system:
        return await measure(system, partitions, **kwargs)


if __name__ == "__main__":
    import tempfile

    kind = sys.argv[1] if len(sys.argv) > 1 else "choreo"
    parts = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    with tempfile.TemporaryDirectory(prefix="bench-chain-") as tmp:
        res = asyncio.run(
            run_chain(
                kind,
                parts,
                Path(tmp),
                env={"CHOREO_LOG_SAMPLE": os.environ.get("CHOREO_LOG_SAMPLE", "1.0")},
                burst=int(os.environ.get("BURST", "2000")),
                bursts=1,
                rates=[100, 300],
                rate_seconds=3.0,
                timeout=120,
            )
        )
        print(res)
