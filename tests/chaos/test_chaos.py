"""Chaos: orders at a steady rate on a 3-node R3 cluster with per-service users and 2
partitions, while service processes are SIGKILLed, NATS nodes are SIGKILLed and restarted one
at a time, a service is paused (SIGSTOP) past ack_wait, and already-processed events are
re-published under a new Nats-Msg-Id (a redelivery after commit). Then every invariant is
checked on every order (tests/chaos/invariants.py) and a summary table is printed.

CI size by default; `make chaos` runs CHOREO_CHAOS_ORDERS=10000. The control run disables the
inbox (CHOREO_UNSAFE_DISABLE_INBOX=1) and must be caught by the same checker.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from nats.aio.client import Client as NATS

from common.consumer import UNSAFE_DISABLE_INBOX_ENV
from tests.chaos.invariants import Report, check, table, wait_for
from tests.cluster import (
    RunningSystem,
    consumer_infos,
    describe_consumers,
    diagnostics,
    metric_sum,
    running_system,
)

pytestmark = [pytest.mark.chaos, pytest.mark.e2e]

ORDERS = int(os.environ.get("CHOREO_CHAOS_ORDERS", "500"))
RATE = float(os.environ.get("CHOREO_CHAOS_RATE", "40" if ORDERS <= 1000 else "80"))
SEED = int(os.environ.get("CHOREO_CHAOS_SEED", str(random.randrange(1_000_000))))
ACK_WAIT = 2.0
SKUS = 100
INITIAL_STOCK = 1_000_000
PARTITIONS = 2
ENV = {
    "CHOREO_ACK_WAIT_SECONDS": str(ACK_WAIT),
    "CHOREO_MAX_DELIVER": "20",  # chaos must not dead-letter valid messages
    "CHOREO_BATCH_SIZE": "64",
    "CHOREO_LOG_LEVEL": "INFO",
}
VICTIMS = ("order", "payment", "inventory", "shipping", "order-status", "dlq")
PAUSABLE = ("payment", "inventory", "shipping", "order-status")
QUIESCENCE_SECONDS = 120.0 + ORDERS / 50


@dataclass
class Chaos:
    rng: random.Random
    kills: int = 0
    node_restarts: int = 0
    pauses: int = 0
    republished: int = 0
    post_retries: int = 0
    intended: dict[str, str] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)


def order_body(kind: str, rng: random.Random) -> dict[str, Any]:
    if kind == "declined":  # total above the 500000 cents limit
        items = [{"sku": f"sku-{rng.randint(1, SKUS)}", "quantity": 1, "unitPriceCents": 600_000}]
    elif kind == "out_of_stock":  # more than a partition's share of the SKU, free: charged 0, refunded
        items = [{"sku": f"sku-{rng.randint(1, SKUS)}", "quantity": INITIAL_STOCK, "unitPriceCents": 0}]
    else:
        items = [
            {
                "sku": f"sku-{rng.randint(1, SKUS)}",
                "quantity": rng.randint(1, 3),
                "unitPriceCents": rng.randint(1, 5000),
            }
            for _ in range(rng.randint(1, 3))
        ]
    return {"customerId": f"chaos-{rng.randint(1, 50)}", "items": items}


async def place_orders(system: RunningSystem, chaos: Chaos, count: int) -> None:
    """`count` orders at RATE/s (70% happy, 15% declined, 15% out of stock), retrying a POST
    whose order process is down (bounded)."""
    urls = [p.url for p in system.processes("order")]
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=3.0) as http:
        for n in range(count):
            await asyncio.sleep(max(0.0, started + n / RATE - time.monotonic()))
            kind = chaos.rng.choices(["happy", "declined", "out_of_stock"], [70, 15, 15])[0]
            body = order_body(kind, chaos.rng)
            for attempt in range(60):
                try:
                    response = await http.post(f"{urls[(n + attempt) % len(urls)]}/orders", json=body)
                except httpx.HTTPError:
                    response = None
                if response is not None and response.status_code == 202:
                    chaos.intended[response.json()["orderId"]] = kind
                    break
                chaos.post_retries += 1
                await asyncio.sleep(0.25)
            else:
                raise AssertionError(f"order {n} not accepted after 60 attempts")


async def kill_services(system: RunningSystem, chaos: Chaos, stop: asyncio.Event) -> None:
    """SIGKILL a random service process every 1-3 s; the supervisor restarts it (same partition,
    same store) after its backoff."""
    while not stop.is_set():
        await asyncio.sleep(chaos.rng.uniform(1.0, 3.0))
        candidates = [
            p
            for p in system.processes()
            if p.service in VICTIMS and p.process and p.process.returncode is None
        ]
        if not candidates or stop.is_set():
            continue
        victim = chaos.rng.choice(candidates)
        assert victim.process is not None
        victim.process.send_signal(signal.SIGKILL)
        chaos.kills += 1
        chaos.log.append(f"{time.monotonic():.1f} SIGKILL {victim.name}")


async def restart_nodes(system: RunningSystem, chaos: Chaos, stop: asyncio.Event) -> None:
    """SIGKILL one NATS node, keep it down 1-3 s, start it again on its port and store; repeat."""
    nodes = system.supervisor.nodes
    await asyncio.sleep(2.0)
    while not stop.is_set():
        index = chaos.rng.randrange(len(nodes))
        nodes[index].kill()
        chaos.log.append(f"{time.monotonic():.1f} SIGKILL nats-{index}")
        await asyncio.sleep(chaos.rng.uniform(1.0, 3.0))
        await asyncio.to_thread(nodes[index].start)
        chaos.node_restarts += 1
        await asyncio.sleep(chaos.rng.uniform(4.0, 8.0))  # let it catch up: one node down at a time


async def pause_services(system: RunningSystem, chaos: Chaos, stop: asyncio.Event) -> None:
    """SIGSTOP a consuming service for 2.5 x ack_wait, then SIGCONT; repeat."""
    await asyncio.sleep(1.0)
    while not stop.is_set():
        candidates = [
            p
            for p in system.processes()
            if p.service in PAUSABLE and p.process and p.process.returncode is None
        ]
        victim = chaos.rng.choice(candidates)
        assert victim.process is not None
        process = victim.process
        process.send_signal(signal.SIGSTOP)
        chaos.log.append(f"{time.monotonic():.1f} SIGSTOP {victim.name}")
        try:
            await asyncio.sleep(ACK_WAIT * 2.5)
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGCONT)
        chaos.pauses += 1
        await asyncio.sleep(chaos.rng.uniform(3.0, 8.0))


async def republish(system: RunningSystem, chaos: Chaos, stop: asyncio.Event, admin: NATS) -> None:
    """Re-publish a stored payment.succeeded under a new Nats-Msg-Id: the same eventId arrives
    twice, as after a redelivery of an already committed message. The inbox must drop it."""
    js = admin.jetstream()
    while not stop.is_set():
        await asyncio.sleep(chaos.rng.uniform(0.3, 1.0))
        try:
            info = await js.stream_info("EVENTS", subjects_filter="events.payment.succeeded.>")
            subjects = list((info.state.subjects or {}).keys())
            if not subjects:
                continue
            original = await js.get_last_msg("EVENTS", chaos.rng.choice(subjects))
            headers = dict(original.headers or {})
            headers["Nats-Msg-Id"] = f"chaos-copy-{uuid.uuid4()}"
            contract_subject = ".".join((original.subject or "").split(".")[:4])
            await js.publish(contract_subject, original.data or b"", headers=headers, timeout=5)
            chaos.republished += 1
        except Exception as exc:  # a node is down: try again later
            chaos.log.append(f"republish skipped: {exc!r}")


def _count(paths: list[Path], query: str) -> int:
    total = 0
    for path in paths:
        try:
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2) as db:
                total += int(db.execute(query).fetchone()[0])
        except sqlite3.Error:
            return -1
    return total


async def quiescent(system: RunningSystem, admin: NATS) -> bool:
    """Every consumer drained and acked, and every order row terminal in every view replica."""
    try:
        infos = await asyncio.wait_for(consumer_infos(admin), 10)
    except Exception:
        return False
    if any(i.num_pending or i.num_ack_pending for i in infos):
        return False
    stores = system.data_dir / "stores"
    orders = _count(sorted(stores.glob("order-[0-9]*.db")), "SELECT count(*) FROM orders")
    views = sorted(stores.glob("order-status-[0-9]*.db"))
    terminal = _count(views, "SELECT count(*) FROM orders_view WHERE status IN ('shipped', 'cancelled')")
    return orders >= 0 and terminal == orders * len(views)


async def run_chaos(system: RunningSystem, chaos: Chaos, orders: int) -> None:
    admin = await system.admin()
    stop = asyncio.Event()
    faults = [
        asyncio.create_task(kill_services(system, chaos, stop)),
        asyncio.create_task(restart_nodes(system, chaos, stop)),
        asyncio.create_task(pause_services(system, chaos, stop)),
        asyncio.create_task(republish(system, chaos, stop, admin)),
    ]
    try:
        await place_orders(system, chaos, orders)
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*faults, return_exceptions=True), 60)
        await admin.close()
    for task in faults:
        if task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
    # Every node and process back up before quiescence is judged.
    for node in system.supervisor.nodes:
        if node.process is None or node.process.poll() is not None:
            await asyncio.to_thread(node.start)
    await system.supervisor.wait_ready(timeout=90)


async def settle_and_check(
    system: RunningSystem, chaos: Chaos, *, quiescence: float
) -> tuple[Report, dict[str, Any]]:
    admin = await system.admin()
    try:
        drained = await wait_for(lambda: quiescent(system, admin), timeout=quiescence, every=2.0)
        report = await check(
            admin, system.data_dir, intended=chaos.intended, initial_stock=INITIAL_STOCK, sku_count=SKUS
        )
        if not drained:
            report.violations.append(f"not quiescent within {quiescence:.0f}s")
        extra = await metrics_and_logs(system)
        infos = describe_consumers(await consumer_infos(admin))
        extra["consumers"] = infos
    finally:
        await admin.close()
    return report, extra


async def metrics_and_logs(system: RunningSystem) -> dict[str, Any]:
    """Duplicates from the services' logs (complete across restarts) and live metrics."""
    dup_logs = sum(system.count_in_logs(s, "duplicate event skipped") for s in VICTIMS)
    dup_metrics = retried = 0.0
    async with httpx.AsyncClient(timeout=5) as http:
        for proc in system.processes():
            if proc.service == "dlq":  # its "duplicate" is an advisory whose entry exists
                continue
            try:
                text = (await http.get(f"{proc.url}/metrics")).text
            except httpx.HTTPError:
                continue
            dup_metrics += metric_sum(text, "choreo_events_consumed_total", outcome="duplicate")
            retried += metric_sum(text, "choreo_events_consumed_total", outcome="retried")
    restarts = sum(p.restarts for p in system.processes())
    crashes = sum(system.count_in_logs(s, '"service crashed"') for s in VICTIMS)
    return {
        "service crashes (logs)": crashes,
        "duplicates (logs)": dup_logs,
        "duplicates (live metrics)": int(dup_metrics),
        "retries (live metrics)": int(retried),
        "process restarts": restarts,
    }


def summarize(chaos: Chaos, report: Report, extra: dict[str, Any], seconds: float) -> tuple[str, list[str]]:
    problems = list(report.violations)
    if extra["process restarts"] < chaos.kills:
        problems.append(f"restarts {extra['process restarts']} < kills {chaos.kills}")
    if extra["duplicates (live metrics)"] > extra["duplicates (logs)"]:
        problems.append("live duplicate metrics exceed the logged duplicates")
    # Each re-published payment.succeeded reaches inventory and order-status: both must drop it.
    if extra["duplicates (logs)"] < 2 * chaos.republished:
        problems.append(
            f"duplicates suppressed {extra['duplicates (logs)']} < 2 x re-published {chaos.republished}"
        )
    rows = [
        ("seed", SEED), ("orders accepted (202)", len(chaos.intended)), *report.counts.items(),
        ("SIGKILLed service processes", chaos.kills), ("process restarts", extra["process restarts"]),
        ("service crashes (logs)", extra["service crashes (logs)"]),
        ("NATS node restarts", chaos.node_restarts), ("SIGSTOP pauses > ack_wait", chaos.pauses),
        ("re-published event copies", chaos.republished), ("POST retries", chaos.post_retries),
        ("duplicates suppressed (logs)", extra["duplicates (logs)"]),
        ("duplicates (live metrics)", extra["duplicates (live metrics)"]),
        ("retries (live metrics)", extra["retries (live metrics)"]),
        ("invariant violations", len(problems)), ("seconds", f"{seconds:.0f}"),
    ]  # fmt: skip
    return table(rows), problems


# The load alone takes ORDERS / RATE seconds; settling and checking add up to a few minutes.
@pytest.mark.timeout(int(240 + 2 * ORDERS / RATE))
async def test_chaos_keeps_every_invariant(tmp_path: Path) -> None:
    """Under kills, node restarts, pauses past ack_wait and duplicate events, every order ends
    exactly once: terminal, one charge, exact stock, one shipment, view = rebuild, nothing left."""
    chaos = Chaos(random.Random(SEED))
    started = time.monotonic()
    async with running_system(tmp_path, partitions=PARTITIONS, env=ENV) as system:
        try:
            await run_chaos(system, chaos, ORDERS)
            report, extra = await settle_and_check(system, chaos, quiescence=QUIESCENCE_SECONDS)
        except BaseException:
            print("\n".join(chaos.log[-40:]))
            raise
        summary, problems = summarize(chaos, report, extra, time.monotonic() - started)
        print(f"\nchaos summary\n{summary}")
        if problems or chaos.kills == 0 or chaos.node_restarts == 0 or chaos.pauses == 0:
            print("\n".join(chaos.log[-60:]))
            print(extra["consumers"])
            print(await diagnostics(system))
        assert chaos.kills > 0, "no process was killed during the load"
        assert chaos.node_restarts > 0, "no NATS node was restarted during the load"
        assert chaos.pauses > 0, "no service was paused during the load"
        assert chaos.republished > 0, "no duplicate was injected"
        assert not problems, "\n".join(problems)


@pytest.mark.timeout(200)
async def test_control_run_without_inbox_is_caught(tmp_path: Path) -> None:
    """With the inbox disabled (CHOREO_UNSAFE_DISABLE_INBOX=1), duplicate events are handled
    again and the same checker reports violations: the checks can fail."""
    chaos = Chaos(random.Random(SEED))
    env = {**ENV, UNSAFE_DISABLE_INBOX_ENV: "1", "CHOREO_MAX_DELIVER": "3"}
    async with running_system(tmp_path, partitions=PARTITIONS, env=env) as system:
        admin = await system.admin()
        stop = asyncio.Event()
        injector = asyncio.create_task(republish(system, chaos, stop, admin))
        try:
            await place_orders(system, chaos, 60)
            await wait_for(lambda: _republished(chaos, 10), timeout=30, every=0.5)
        finally:
            stop.set()
            await asyncio.wait_for(asyncio.gather(injector, return_exceptions=True), 30)
            await admin.close()
        report, extra = await settle_and_check(system, chaos, quiescence=20)
        summary, problems = summarize(chaos, report, extra, 0)
        print(f"\ncontrol run (inbox disabled)\n{summary}\n" + "\n".join(problems))
        assert chaos.republished >= 10
        assert any("duplicates suppressed" in p for p in problems), problems
        assert report.violations, "the checker found nothing wrong with the inbox disabled"


async def _republished(chaos: Chaos, n: int) -> bool:
    return chaos.republished >= n
