"""One hop: consume `order.placed` → validate → store → derive → publish `payment.succeeded` → ack.

Three contenders drain the same pre-loaded input through the same durable consumer
(`payment-0`, as `choreo provision` creates it) on a fresh nats-server each:

- `choreo`: the real service wiring (`common.service.start_context` with the payment service:
  Runner, Store with inbox/outbox, Publisher, Metrics, structlog JSON at the configured level).
- `raw`: a competent nats-py program: pull fetch 256, orjson, sqlite3 (WAL, synchronous=FULL,
  one transaction per batch), `publish_async` with `Nats-Msg-Id`, acks after the PubAcks.
- `faststream`: FastStream's JetStream pull subscriber (batch 256) and `broker.publish`,
  a pydantic model for the body, one sqlite transaction per message (its unit of work).

Each contender runs as its own process (uvloop for all); the parent starts the clock when it
says GO and stops it when the consumer has nothing pending or unacked and every output is in
the stream. Rounds interleave the contenders (rotating order); the median of the rounds counts.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bench.support import (
    connect,
    consumers_drained,
    fresh_server,
    median,
    provision_specs,
    publish_orders,
    stream_messages,
    wait_until,
)

CONSUMER = "payment-0"
IMPLS = ("choreo", "raw", "faststream")
NAMESPACE = uuid.UUID("6f1c2a52-8d0e-5b7a-9c1e-3c1d0a7e4b21")
RAW_SCHEMA = """
CREATE TABLE IF NOT EXISTS payments (
    order_id TEXT PRIMARY KEY, payment_id TEXT NOT NULL, amount_cents INTEGER NOT NULL, status TEXT NOT NULL
);
"""


@dataclass
class HopResult:
    impl: str
    label: str
    events: int
    rates: list[float] = field(default_factory=list)

    @property
    def median_rate(self) -> float:
        return median(self.rates)


# ---------------------------------------------------------------- the parent (timing) side


async def _one_trial(impl: str, events: int, root: Path, env: dict[str, str], timeout: float) -> float:
    from services.payment.events import SPEC

    with fresh_server(root) as server:
        await provision_specs(server.url, [SPEC])
        nc = await connect(server.url)
        try:
            await publish_orders(nc, events)
            with (root / f"{impl}.err").open("wb") as err:
                worker = subprocess.Popen(
                    [sys.executable, "-m", "bench.hop", "worker", impl, "--url", server.url, "--dir", str(root)],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                    env={**os.environ, **env}, start_new_session=True,
                )  # fmt: skip
            try:
                assert worker.stdout is not None
                assert worker.stdin is not None
                line = await asyncio.wait_for(asyncio.to_thread(worker.stdout.readline), 60)
                if line.strip() != b"READY":
                    raise RuntimeError(f"{impl} worker failed: {line!r}; see {root / (impl + '.err')}")
                started = time.monotonic()
                worker.stdin.write(b"GO\n")
                worker.stdin.flush()

                async def done() -> bool:
                    if worker.poll() is not None:
                        raise RuntimeError(f"{impl} worker exited with {worker.returncode}")
                    return await consumers_drained(nc, [CONSUMER]) and await stream_messages(nc) >= 2 * events

                finished = await wait_until(done, timeout=timeout, what=f"{impl} drained {events} events")
                if os.environ.get("BENCH_VERBOSE"):
                    import psutil

                    cpu = psutil.Process(worker.pid).cpu_times()
                    print(f"  {impl}: worker cpu user {cpu.user:.2f}s sys {cpu.system:.2f}s")
            finally:
                worker.send_signal(signal.SIGTERM)
                try:
                    worker.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    worker.kill()
                    worker.wait(timeout=5)
                for pipe in (worker.stdin, worker.stdout):
                    if pipe is not None:
                        pipe.close()
            outputs = await stream_messages(nc) - events
            if outputs != events:
                raise RuntimeError(f"{impl}: {outputs} outputs for {events} inputs")
        finally:
            await nc.close()
    return events / (finished - started)


CONTENDERS: dict[str, tuple[str, dict[str, str]]] = {
    # label, extra environment
    "choreo": ("Choreo (INFO, every event logged)", {"CHOREO_LOG_LEVEL": "INFO", "CHOREO_LOG_SAMPLE": "1.0"}),
    "choreo-sampled": ("Choreo (INFO, 1% of 'event handled' lines)", {"CHOREO_LOG_LEVEL": "INFO", "CHOREO_LOG_SAMPLE": "0.01"}),
    "raw": ("raw nats-py", {}),
    "faststream": ("FastStream", {}),
}  # fmt: skip


async def run_hop(
    *, events: int, rounds: int, contenders: list[str] | None = None, timeout: float = 300.0, say: Any = print
) -> list[HopResult]:
    """Interleaved rounds (the order rotates each round); a fresh server and store per trial."""
    names = contenders or list(CONTENDERS)
    results = {n: HopResult(n, CONTENDERS[n][0], events) for n in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            impl = name.split("-", 1)[0]
            with tempfile.TemporaryDirectory(prefix=f"bench-hop-{name}-") as tmp:
                rate = await _one_trial(impl, events, Path(tmp), CONTENDERS[name][1], timeout)
            results[name].rates.append(rate)
            say(f"  hop round {r + 1}/{rounds} {name:15s} {rate:8.0f} events/s")
    return [results[n] for n in names]


# ---------------------------------------------------------------- the worker side


async def _wait_go() -> None:
    line = await asyncio.to_thread(sys.stdin.readline)
    if line.strip() != "GO":
        raise SystemExit(0)


def _ready() -> None:
    sys.__stdout__.write("READY\n")  # type: ignore[union-attr]
    sys.__stdout__.flush()  # type: ignore[union-attr]


def _stop_event() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def choreo_worker(url: str, root: Path) -> None:
    """The payment service exactly as `choreo serve payment` wires it, minus the HTTP server."""
    os.environ.update(CHOREO_NATS_URL=url, CHOREO_DATA_DIR=str(root / "stores"))
    from common.correlation import configure_logging
    from common.service import load_settings, start_context, tune_gc
    from services.payment.app import definition

    settings = load_settings(definition)
    configure_logging("payment", level=settings.log_level)
    stop = _stop_event()
    ctx = await start_context(definition, settings)
    tune_gc()  # as `serve` does
    assert ctx.loop is not None
    _ready()
    await _wait_go()
    try:
        await ctx.loop.run(stop)
    finally:
        await ctx.nc.drain()
        await ctx.store.close()


def _raw_validate(event: dict[str, Any]) -> tuple[str, int]:
    """The checks a careful hand-written consumer makes; (orderId, totalCents) or ValueError."""
    if event.get("eventType") != "order.placed" or not str(event.get("schemaVersion", "")).startswith("1."):
        raise ValueError("not order.placed v1")
    for key in ("eventId", "occurredAt", "aggregateId", "correlationId"):
        if not isinstance(event.get(key), str):
            raise ValueError(f"{key} missing")
    payload = event["payload"]
    items = payload["items"]
    if not isinstance(items, list) or not 1 <= len(items) <= 100:
        raise ValueError("items")
    total = 0
    for item in items:
        quantity, price = item["quantity"], item["unitPriceCents"]
        if not (
            isinstance(item["sku"], str)
            and isinstance(quantity, int)
            and quantity >= 1
            and isinstance(price, int)
        ):
            raise ValueError("item")
        total += quantity * price
    if payload["totalCents"] != total or not isinstance(payload["orderId"], str):
        raise ValueError("total")
    return payload["orderId"], total


def raw_sqlite(path: Path, schema: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")  # the same durability as Choreo's stores
    db.executescript(schema)
    return db


def derived(
    cause: dict[str, Any], event_type: str, payload: dict[str, Any], now: str
) -> tuple[str, bytes, dict[str, str]]:
    event_id = str(uuid.uuid5(NAMESPACE, f"{cause['eventId']}:{event_type}"))
    body = orjson.dumps({
        "eventId": event_id, "eventType": event_type, "schemaVersion": "1.0.0", "occurredAt": now,
        "aggregateId": cause["aggregateId"], "correlationId": cause["correlationId"],
        "causationId": cause["eventId"], "payload": payload,
    })  # fmt: skip
    headers = {
        "Nats-Msg-Id": event_id, "Event-Type": event_type, "Schema-Version": "1.0.0",
        "Correlation-Id": cause["correlationId"], "Causation-Id": cause["eventId"],
    }  # fmt: skip
    return f"events.{event_type}.{cause['aggregateId']}", body, headers


async def raw_worker(url: str, root: Path) -> None:
    from datetime import UTC, datetime

    stop = _stop_event()
    nc = await connect(url)
    js = nc.jetstream()
    db = raw_sqlite(root / "raw.db", RAW_SCHEMA)
    sub = await js.pull_subscribe_bind(CONSUMER, stream="EVENTS")
    _ready()
    await _wait_go()
    while not stop.is_set():
        try:
            msgs = await sub.fetch(256, timeout=1.0)
        except Exception:
            continue
        rows, out, good, bad = [], [], [], []
        now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        for msg in msgs:
            try:
                event = orjson.loads(msg.data)
                order_id, total = _raw_validate(event)
            except (ValueError, KeyError, TypeError):
                bad.append(msg)
                continue
            payment_id = str(uuid.uuid5(NAMESPACE, f"{event['eventId']}:payment"))
            rows.append((order_id, payment_id, total, "charged"))
            out.append(
                derived(
                    event,
                    "payment.succeeded",
                    {"orderId": order_id, "paymentId": payment_id, "amountCents": total},
                    now,
                )
            )
            good.append(msg)
        db.execute("BEGIN IMMEDIATE")
        db.executemany("INSERT INTO payments VALUES (?, ?, ?, ?) ON CONFLICT (order_id) DO NOTHING", rows)
        db.execute("COMMIT")
        futures = [await js.publish_async(s, b, headers=h) for s, b, h in out]
        await asyncio.wait_for(asyncio.gather(*futures), 10)
        for msg in good:
            await msg.ack()
        for msg in bad:
            await msg.term()
    await nc.drain()


async def faststream_worker(url: str, root: Path) -> None:
    from datetime import UTC, datetime

    from faststream.nats import JStream, NatsBroker, PullSub
    from pydantic import BaseModel, Field

    class Item(BaseModel):
        sku: str
        quantity: int = Field(ge=1)
        unitPriceCents: int = Field(ge=0)

    class Placed(BaseModel):
        orderId: str
        customerId: str
        items: list[Item] = Field(min_length=1, max_length=100)
        totalCents: int

    class Event(BaseModel):
        eventId: uuid.UUID
        eventType: str
        schemaVersion: str
        occurredAt: datetime
        aggregateId: str
        correlationId: str
        causationId: str | None
        payload: Placed

    stop = _stop_event()
    db = raw_sqlite(root / "faststream.db", RAW_SCHEMA)
    broker = NatsBroker(url, max_reconnect_attempts=3)

    @broker.subscriber(
        "events.order.placed.*.0", stream=JStream("EVENTS", declare=False), durable=CONSUMER,
        pull_sub=PullSub(batch_size=256, timeout=1.0),
    )  # fmt: skip
    async def on_placed(event: Event) -> None:
        total = sum(i.quantity * i.unitPriceCents for i in event.payload.items)
        if total != event.payload.totalCents:
            raise ValueError("total")
        payment_id = str(uuid.uuid5(NAMESPACE, f"{event.eventId}:payment"))
        db.execute("BEGIN IMMEDIATE")
        db.execute(
            "INSERT INTO payments VALUES (?, ?, ?, ?) ON CONFLICT (order_id) DO NOTHING",
            (event.payload.orderId, payment_id, total, "charged"),
        )
        db.execute("COMMIT")
        cause = {
            "eventId": str(event.eventId),
            "aggregateId": event.aggregateId,
            "correlationId": event.correlationId,
        }
        now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        subject, _, headers = derived(cause, "payment.succeeded", {}, now)
        body = {
            "eventId": headers["Nats-Msg-Id"], "eventType": "payment.succeeded", "schemaVersion": "1.0.0",
            "occurredAt": now, "aggregateId": event.aggregateId, "correlationId": event.correlationId,
            "causationId": str(event.eventId),
            "payload": {"orderId": event.payload.orderId, "paymentId": payment_id, "amountCents": total},
        }  # fmt: skip
        await broker.publish(body, subject, headers=headers, stream="EVENTS")

    await broker.connect()
    _ready()
    await _wait_go()
    await broker.start()
    await stop.wait()
    await broker.stop()


def _worker_main(impl: str, url: str, root: Path) -> None:
    import uvloop

    # Logs go to a file (as a service's stdout does under `choreo up`); stdout is the control channel.
    sys.stdout = (root / f"{impl}.log").open("w", buffering=1 << 16)
    worker = {"choreo": choreo_worker, "raw": raw_worker, "faststream": faststream_worker}[impl]
    profile = os.environ.get("BENCH_PROFILE")  # write a pyinstrument profile of the worker here
    if not profile:
        import resource

        uvloop.run(worker(url, root))
        usage = resource.getrusage(resource.RUSAGE_SELF)
        sys.stderr.write(f"cpu user={usage.ru_utime:.2f} sys={usage.ru_stime:.2f}\n")
        return
    if profile.endswith(".pstats"):
        import cProfile

        cProfile.runctx("uvloop.run(worker(url, root))", globals(), locals(), profile)
        return
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.0005, async_mode="disabled")
    profiler.start()
    try:
        uvloop.run(worker(url, root))
    finally:
        profiler.stop()
        Path(profile).write_text(profiler.output_text(unicode=True, show_all=False))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.hop")
    sub = parser.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("worker")
    w.add_argument("impl", choices=IMPLS)
    w.add_argument("--url", required=True)
    w.add_argument("--dir", type=Path, required=True)
    r = sub.add_parser("run")
    r.add_argument("--events", type=int, default=2000)
    r.add_argument("--rounds", type=int, default=1)
    r.add_argument("--only", nargs="*")
    args = parser.parse_args()
    if args.cmd == "worker":
        _worker_main(args.impl, args.url, args.dir)
    else:
        for res in asyncio.run(run_hop(events=args.events, rounds=args.rounds, contenders=args.only)):
            print(f"{res.label:45s} median {res.median_rate:8.0f} events/s  {[round(x) for x in res.rates]}")
