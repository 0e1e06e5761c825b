"""The runner on a real JetStream: idempotency, crash points, retries, dead letters, logs, metrics.

The toy service (tests/integration/toy.py) consumes `order.placed`, writes a `charges` row and
produces `payment.succeeded`. Consumers are provisioned with ack_wait=1s and max_deliver=3.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import structlog
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from structlog._config import BoundLoggerLazyProxy

import common.consumer
from common import RunnerOptions, derive_event_id
from common.correlation import merge_correlation
from tests.integration.toy import (
    CONSUMER,
    DEFAULT_OPTIONS,
    DOWNSTREAM,
    SERVICE,
    Behaviour,
    Toy,
    build,
    downstream_events,
    order_placed,
    publish_raw,
    subject_count,
)
from tests.support import wait_until


async def _settled(toy: Toy) -> bool:
    info = await toy.js.consumer_info("EVENTS", CONSUMER)
    return bool(info.num_pending == 0 and info.num_ack_pending == 0)


async def _dlq_entries(js: JetStreamContext) -> list[Any]:
    info = await js.stream_info("DLQ")
    if info.state.messages == 0:
        return []
    return [await js.get_msg("DLQ", seq) for seq in range(info.state.first_seq, info.state.last_seq + 1)]


async def _advisories(js: JetStreamContext, kind: str) -> list[dict[str, Any]]:
    subjects = f"$JS.EVENT.ADVISORY.CONSUMER.{kind}.EVENTS.{CONSUMER}"
    if await subject_count(js, "ADVISORIES", subjects) == 0:
        return []
    info = await js.stream_info("ADVISORIES")
    found = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await js.get_msg("ADVISORIES", seq)
        if msg.subject == subjects:
            found.append(orjson.loads(msg.data or b"{}"))
    return found


MakeToy = Callable[..., Awaitable[Toy]]


@pytest.fixture(autouse=True)
def fresh_structlog() -> Iterator[None]:
    """Start from structlog's defaults: a test that ran `configure_logging` in-process (a CLI
    test under capsys) leaves loggers writing to its since-closed stdout, cached on the module
    level proxies (`cache_logger_on_first_use`), which would break every later log line here."""

    def reset() -> None:
        structlog.reset_defaults()
        for name, module in list(sys.modules.items()):
            if name.split(".")[0] in {"common", "services", "tests"}:
                for value in list(vars(module).values()):
                    if isinstance(value, BoundLoggerLazyProxy):
                        value.__dict__.pop("bind", None)

    reset()
    yield
    reset()


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "stores" / "toy-0.db"


@pytest.fixture
async def make_toy(nc: NATS, js: JetStreamContext, store_path: Path) -> AsyncIterator[MakeToy]:
    """Builds toy instances on one store file; teardown stops and closes every one of them."""
    built: list[Toy] = []

    async def make(**kwargs: Any) -> Toy:
        toy = await build(nc, js, store_path, provisioned=bool(built), **kwargs)
        built.append(toy)
        return toy

    yield make
    for toy in built:
        await toy.close()


async def test_same_event_id_delivered_three_times_runs_handler_once(
    js: JetStreamContext, make_toy: MakeToy
) -> None:
    """Three messages with one eventId (different Nats-Msg-Id): one handler run, one downstream event."""
    toy = await make_toy()
    event = order_placed()
    for i in range(3):
        await publish_raw(js, event, msg_id=f"redelivery-{i}")
    assert (await js.stream_info("EVENTS")).state.messages == 3
    toy.start()
    await wait_until(lambda: _settled(toy), what="all three settled")
    await wait_until(lambda: _true(toy.consumed("duplicate") == 2), what="two duplicates counted")
    assert toy.behaviour.calls == 1
    assert len(await toy.charges()) == 1
    assert toy.consumed("processed") == 1
    downstream = await downstream_events(js)
    assert len(downstream) == 1
    assert downstream[0]["eventId"] == str(derive_event_id(event.event_id, "payment.succeeded"))
    assert downstream[0]["causationId"] == str(event.event_id)
    assert await toy.store.inbox_size() == 1
    await toy.halt()


async def _true(value: bool) -> bool:
    return value


class ProcessKilled(BaseException):
    """Stands for the process dying at a precise point: nothing after it runs."""


async def _one_batch(js: JetStreamContext) -> tuple[Any, list[Any]]:
    sub = await js.pull_subscribe_bind(CONSUMER, stream="EVENTS")
    return sub, await sub.fetch(1, timeout=5)


async def test_crash_after_commit_before_publish_publishes_outbox_on_restart(
    js: JetStreamContext, make_toy: MakeToy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Committed, not published: the restart flushes the outbox; the redelivery is a duplicate, acked."""
    toy = await make_toy()

    async def killed_before_publish(messages: Any, **kwargs: Any) -> Any:
        raise ProcessKilled

    monkeypatch.setattr(toy.publisher, "publish_messages", killed_before_publish)
    event = order_placed()
    await publish_raw(js, event)
    sub, msgs = await _one_batch(js)
    with pytest.raises(ProcessKilled):
        await toy.runner.process_batch(msgs)
    await sub.unsubscribe()
    assert len(await toy.charges()) == 1  # the effect was committed
    assert len(await toy.store.pending_outbox()) == 1  # but its event was not published
    assert await subject_count(js, "EVENTS", DOWNSTREAM) == 0
    assert (await js.consumer_info("EVENTS", CONSUMER)).num_ack_pending == 1  # never acked
    await toy.halt()

    restarted = await make_toy(behaviour=toy.behaviour)
    restarted.start()
    await wait_until(lambda: _settled(restarted), what="input acked after restart")
    assert await subject_count(js, "EVENTS", DOWNSTREAM) == 1
    assert await restarted.store.pending_outbox() == []
    assert toy.behaviour.calls == 1
    assert len(await restarted.charges()) == 1
    assert restarted.consumed("duplicate") == 1
    assert restarted.consumed("processed") == 0
    downstream = await downstream_events(js)
    assert downstream[0]["eventId"] == str(derive_event_id(event.event_id, "payment.succeeded"))
    await restarted.halt()


async def test_failed_publish_is_flushed_before_the_duplicate_is_acked(
    js: JetStreamContext, make_toy: MakeToy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A publish fails after commit and the process lives on: the next batch re-reads the
    whole outbox (not just its own rows), so the redelivered duplicate is acked only once
    the first batch's event is in the stream."""
    toy = await make_toy()
    real_publish = toy.publisher.publish_messages
    failures = []

    async def nats_down_once(messages: Any, **kwargs: Any) -> Any:
        if messages and not failures:
            failures.append(len(messages))
            raise ConnectionError("nats down")
        return await real_publish(messages, **kwargs)

    monkeypatch.setattr(toy.publisher, "publish_messages", nats_down_once)
    first = order_placed()
    await publish_raw(js, first)
    toy.start()
    await wait_until(lambda: _true(bool(failures)), what="the first publish failed")
    assert toy.store.outbox_backlog  # the runner knows its outbox holds an unsent row
    second = order_placed()
    await publish_raw(js, second)
    await wait_until(lambda: _settled(toy), what="both inputs acked")
    assert await subject_count(js, "EVENTS", DOWNSTREAM) == 2
    assert await toy.store.pending_outbox() == []
    assert not toy.store.outbox_backlog
    assert toy.behaviour.calls == 2  # one charge each: the redelivery was a duplicate
    assert toy.consumed("duplicate") == 1
    await toy.halt()


async def test_next_batch_is_committed_while_the_previous_waits_for_its_pubacks(
    js: JetStreamContext, make_toy: MakeToy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pipelining: batch 2 is handled while batch 1's publish is in flight; batch 1 is
    published (and acked) before batch 2, and both end acked with one output each."""
    toy = await make_toy()
    real_publish = toy.publisher.publish_messages
    in_flight: list[str] = []  # subjects being published right now
    published: list[str] = []
    overlap: list[int] = []  # handler calls made while a publish was in flight

    async def slow_publish(messages: Any, **kwargs: Any) -> Any:
        if not messages:
            return await real_publish(messages, **kwargs)
        in_flight.extend(m.subject for m in messages)
        await asyncio.sleep(0.5)
        acks = await real_publish(messages, **kwargs)
        published.extend(m.subject for m in messages)
        del in_flight[: len(messages)]
        return acks

    real_handler = toy.runner.handlers["order.placed"]

    async def watching(event: Any, payload: Any, db: Any) -> Any:
        if in_flight:
            overlap.append(toy.behaviour.calls + 1)
        return await real_handler(event, payload, db)

    monkeypatch.setattr(toy.publisher, "publish_messages", slow_publish)
    toy.runner.handlers = {"order.placed": watching}
    first, second = order_placed(), order_placed()
    await publish_raw(js, first)
    toy.start()
    await wait_until(lambda: _true(bool(in_flight)), what="batch 1 publishing")
    await publish_raw(js, second)
    await wait_until(lambda: _settled(toy), what="both acked")
    await wait_until(lambda: _true(toy.consumed("processed") == 2), what="both counted")
    assert overlap == [2]  # the second event was handled during the first batch's publish
    assert published == [
        f"events.payment.succeeded.{first.aggregate_id}",
        f"events.payment.succeeded.{second.aggregate_id}",
    ]
    assert await subject_count(js, "EVENTS", DOWNSTREAM) == 2
    await toy.halt()


async def test_crash_after_publish_before_ack_is_recognised_as_duplicate(
    js: JetStreamContext, make_toy: MakeToy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Published but not acked: the redelivery is a duplicate, no second charge, one downstream event."""
    toy = await make_toy()

    async def killed_before_ack(results: Any) -> None:
        raise ProcessKilled

    monkeypatch.setattr(toy.runner, "_settle", killed_before_ack)
    await publish_raw(js, order_placed())
    sub, msgs = await _one_batch(js)
    with pytest.raises(ProcessKilled):
        await toy.runner.process_batch(msgs)
    await sub.unsubscribe()
    assert await subject_count(js, "EVENTS", DOWNSTREAM) == 1
    assert await toy.store.pending_outbox() == []
    assert (await js.consumer_info("EVENTS", CONSUMER)).num_ack_pending == 1
    await toy.halt()

    restarted = await make_toy(behaviour=toy.behaviour)
    restarted.start()
    await wait_until(lambda: _settled(restarted), what="redelivery acked")
    assert restarted.consumed("duplicate") == 1
    assert restarted.consumed("processed") == 0
    assert toy.behaviour.calls == 1
    assert len(await restarted.charges()) == 1
    assert await subject_count(js, "EVENTS", DOWNSTREAM) == 1
    await restarted.halt()


async def test_retryable_failure_is_retried_with_growing_delays_then_succeeds(
    js: JetStreamContext, make_toy: MakeToy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two transient failures: naks with growing delays on deliveries 1 and 2, success on 3, no DLQ."""
    naks: list[tuple[int, float]] = []
    real_nak_delay = common.consumer.nak_delay

    def recording_nak_delay(num_delivered: int, *, base: float, cap: float) -> float:
        delay = real_nak_delay(num_delivered, base=base, cap=cap)
        naks.append((num_delivered, delay))
        return delay

    monkeypatch.setattr(common.consumer, "nak_delay", recording_nak_delay)
    toy = await make_toy(behaviour=Behaviour(fail_times=2))
    await publish_raw(js, order_placed())
    toy.start()
    await wait_until(lambda: _true(toy.consumed("processed") == 1), what="processed on the third try")
    await wait_until(lambda: _settled(toy), what="acked")
    assert [n for n, _ in naks] == [1, 2]
    assert naks[1][1] > naks[0][1]
    assert toy.behaviour.calls == 3
    assert toy.consumed("retried") == 2
    assert toy.consumed("dead_lettered") == 0
    assert (await js.stream_info("DLQ")).state.messages == 0
    assert len(await toy.charges()) == 1
    assert await subject_count(js, "EVENTS", DOWNSTREAM) == 1
    await toy.halt()


async def test_permanent_error_dead_letters_original_and_terminates(
    js: JetStreamContext, make_toy: MakeToy
) -> None:
    """PermanentError: one DLQ entry (permanent_error, byte-identical body), +TERM and its advisory."""
    toy = await make_toy(behaviour=Behaviour(permanent=True))
    event = order_placed()
    body = event.to_json()
    await publish_raw(js, event, body=body)
    toy.start()
    await wait_until(lambda: _true(toy.consumed("dead_lettered") == 1), what="dead lettered")
    await wait_until(lambda: _settled(toy), what="terminated")
    await wait_until(lambda: _has_advisory(js, "MSG_TERMINATED"), what="MSG_TERMINATED advisory")
    entries = await _dlq_entries(js)
    assert len(entries) == 1
    entry = entries[0]
    assert entry.data == body
    assert entry.subject == f"dlq.{CONSUMER}.order.placed"
    assert entry.headers["Dlq-Reason"] == "permanent_error"
    assert "card reported stolen" in entry.headers["Dlq-Error"]
    assert entry.headers["Dlq-Consumer"] == CONSUMER
    assert entry.headers["Dlq-Stream"] == "EVENTS"
    assert entry.headers["Dlq-Stream-Seq"] == "1"
    assert entry.headers["Dlq-Deliveries"] == "1"
    assert entry.headers["Nats-Msg-Id"] == f"{CONSUMER}:1"
    assert entry.headers["Correlation-Id"] == event.correlation_id
    advisory = (await _advisories(js, "MSG_TERMINATED"))[0]
    assert advisory["stream_seq"] == 1
    assert advisory["reason"] == "permanent_error"
    assert toy.behaviour.calls == 1
    assert await toy.charges() == []
    assert await toy.store.inbox_size() == 0  # rolled back: a redrive may process it again
    assert await subject_count(js, "EVENTS", DOWNSTREAM) == 0
    dlq_metric = toy.registry.get_sample_value(
        "choreo_dlq_events_total",
        {"service": SERVICE, "event_type": "order.placed", "reason": "permanent_error"},
    )
    assert dlq_metric == 1.0
    await toy.halt()


async def _has_advisory(js: JetStreamContext, kind: str) -> bool:
    return bool(await _advisories(js, kind))


async def test_always_failing_handler_ends_in_dlq_with_max_deliveries(
    js: JetStreamContext, make_toy: MakeToy
) -> None:
    """A handler that always fails: retried until max_deliver, then one DLQ entry, reason max_deliveries."""
    toy = await make_toy(behaviour=Behaviour(fail_always=True))
    event = order_placed()
    await publish_raw(js, event)
    toy.start()
    await wait_until(lambda: _true(toy.consumed("dead_lettered") == 1), what="dead lettered")
    await wait_until(lambda: _has_advisory(js, "MAX_DELIVERIES"), what="MAX_DELIVERIES advisory")
    await wait_until(lambda: _settled(toy), what="nothing pending")
    entries = await _dlq_entries(js)
    assert len(entries) == 1
    assert entries[0].headers["Dlq-Reason"] == "max_deliveries"
    assert entries[0].headers["Dlq-Deliveries"] == str(DEFAULT_OPTIONS.max_deliver) == "3"
    assert "ConnectionError: payment gateway unavailable" in entries[0].headers["Dlq-Error"]
    assert entries[0].data == event.to_json()
    assert toy.behaviour.calls == 3
    assert toy.consumed("retried") == 2
    assert await toy.charges() == []
    await toy.halt()


async def test_handler_log_lines_carry_correlation_fields(js: JetStreamContext, make_toy: MakeToy) -> None:
    """Inside a handler every line has correlation_id, causation_id, event_id, event_type and service."""
    toy = await make_toy()
    event = order_placed()
    with structlog.testing.capture_logs(processors=[merge_correlation]) as logs:
        await publish_raw(js, event)
        toy.start()
        await wait_until(lambda: _true(toy.consumed("processed") == 1), what="processed")
        await toy.halt()
    lines = [line for line in logs if line["event"] in ("charging order", "event handled")]
    assert {line["event"] for line in lines} == {"charging order", "event handled"}
    for line in lines:
        assert line["correlation_id"] == event.correlation_id
        assert line["causation_id"] is None
        assert line["event_id"] == str(event.event_id)
        assert line["event_type"] == "order.placed"
        assert line["service"] == SERVICE
    outside = [line for line in logs if line["event"] == "consuming"]
    assert outside
    assert "event_id" not in outside[0]


async def test_metrics_move_with_outcomes(js: JetStreamContext, make_toy: MakeToy) -> None:
    """processed, duplicate and dead_lettered counters, published, handler duration and lag all move."""
    toy = await make_toy()
    first, second = order_placed(), order_placed()
    await publish_raw(js, first)
    await publish_raw(js, second)
    await publish_raw(js, first, msg_id="again")
    await js.publish("events.order.placed.broken", b"not json")
    toy.start()
    await wait_until(lambda: _settled(toy), what="all settled")
    await toy.halt()
    assert toy.consumed("processed") == 2
    assert toy.consumed("duplicate") == 1
    assert toy.consumed("dead_lettered") == 1
    assert toy.consumed("retried") == 0
    labels = {"service": SERVICE, "event_type": "order.placed"}
    value = toy.registry.get_sample_value
    produced = {"service": SERVICE, "event_type": "payment.succeeded"}
    assert value("choreo_events_published_total", produced) == 2
    assert value("choreo_dlq_events_total", {**labels, "reason": "invalid_json"}) == 1
    # Observation counts of the two histograms (metric names, not timing checks):
    # processed + duplicate, the poison message has no envelope to time.
    observed = {
        h: value(f"{h}_count", labels)
        for h in ("choreo_handler_duration_seconds", "choreo_event_lag_seconds")
    }
    assert set(observed.values()) == {3}
    assert value("choreo_ready", {"service": SERVICE}) == 0  # stopped


async def test_poison_message_between_valid_ones_goes_to_dlq(js: JetStreamContext, make_toy: MakeToy) -> None:
    """In one batch, a poison message is dead-lettered and the valid ones around it are processed."""
    toy = await make_toy()
    before, after = order_placed(), order_placed()
    await publish_raw(js, before)
    poison = order_placed().model_copy(update={"schema_version": "9.0.0"})
    await publish_raw(js, poison)
    await js.publish("events.order.placed.xyz", b"\xff\xfe not utf-8")
    mismatched = order_placed("order-a")
    await js.publish("events.order.placed.order-b", mismatched.to_json())
    huge = order_placed()
    await publish_raw(js, huge, body=huge.to_json()[:-1] + b', "pad": "' + b"x" * 70_000 + b'"}')
    await publish_raw(js, after)
    toy.start()
    await wait_until(lambda: _settled(toy), what="all settled")
    assert toy.consumed("processed") == 2
    charged = sorted(row[0] for row in await toy.charges())
    assert charged == sorted([str(before.event_id), str(after.event_id)])
    await toy.halt()
    entries = await _dlq_entries(js)
    reasons = {e.headers["Dlq-Original-Subject"].rsplit(".", 2)[1]: e.headers["Dlq-Reason"] for e in entries}
    assert reasons == {
        poison.aggregate_id: "unsupported_schema_version",
        "xyz": "invalid_json",
        "order-b": "subject_mismatch",
        huge.aggregate_id: "payload_too_large",
    }
    assert await subject_count(js, "EVENTS", DOWNSTREAM) == 2


async def test_inbox_rows_older_than_retention_are_pruned(js: JetStreamContext, make_toy: MakeToy) -> None:
    """Inbox rows past the retention are deleted when the runner is idle; recent ones stay."""
    options = RunnerOptions(**{**DEFAULT_OPTIONS.__dict__, "inbox_retention_seconds": 3600})
    toy = await make_toy(options=options)
    old, recent = order_placed(), order_placed()
    await publish_raw(js, old)
    await publish_raw(js, recent)
    toy.start()
    await wait_until(lambda: _settled(toy), what="both processed")
    await toy.halt()

    toy = await make_toy(options=RunnerOptions(**{**options.__dict__, "prune_every_seconds": 0.0}))
    await toy.store.db.execute(
        "UPDATE inbox SET processed_at = processed_at - 7200 WHERE event_id = ?", (str(old.event_id),)
    )
    assert await toy.store.inbox_size() == 2
    toy.start()
    await wait_until(lambda: _inbox_is(toy, 1), what="old row pruned")
    async with toy.store.db.execute("SELECT event_id FROM inbox") as cursor:
        assert [row[0] for row in await cursor.fetchall()] == [str(recent.event_id)]
    await toy.halt()


async def _inbox_is(toy: Toy, size: int) -> bool:
    return await toy.store.inbox_size() == size


async def test_store_prune_inbox_deletes_by_age(store_path: Path) -> None:
    """Store.prune_inbox removes exactly the rows older than the given age and reports the count."""
    from common import Store

    store = Store(store_path)
    await store.open()
    async with store.transaction() as db:
        for i in range(5):
            await db.execute(
                "INSERT INTO inbox (event_id, event_type, processed_at) VALUES (?, 'order.placed',"
                " strftime('%s','now') - ?)",
                (f"e{i}", i * 1000),
            )
    pruned = await store.prune_inbox(older_than_seconds=2500)
    assert pruned == 2
    assert await store.inbox_size() == 3
    pruned_again = await store.prune_inbox(older_than_seconds=2500)
    assert pruned_again == 0
    await store.close()


async def test_heartbeat_keeps_slow_handler_from_redelivery(js: JetStreamContext, make_toy: MakeToy) -> None:
    """A handler slower than ack_wait is not redelivered: +WPI heartbeats extend the deadline."""
    toy = await make_toy(behaviour=Behaviour(sleep=2.5))
    await publish_raw(js, order_placed())
    sub = await js.pull_subscribe_bind(CONSUMER, stream="EVENTS")
    rival = await js.pull_subscribe_bind(CONSUMER, stream="EVENTS")
    msgs = await sub.fetch(1, timeout=5)
    batch = asyncio.create_task(toy.runner.process_batch(msgs))
    # Another puller on the same consumer would receive the message if its ack deadline passed.
    with pytest.raises(TimeoutError):
        await rival.fetch(1, timeout=3)
    await asyncio.wait_for(batch, 10)
    info = await js.consumer_info("EVENTS", CONSUMER)
    assert info.delivered.consumer_seq == 1
    assert info.num_ack_pending == 0
    assert info.num_redelivered == 0
    assert toy.behaviour.calls == 1
    assert toy.consumed("processed") == 1
    await sub.unsubscribe()
    await rival.unsubscribe()
    await toy.store.close()


async def test_without_heartbeat_slow_handler_is_redelivered(
    js: JetStreamContext, make_toy: MakeToy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Control for the heartbeat test: with +WPI switched off, the rival puller gets the message."""
    toy = await make_toy(behaviour=Behaviour(sleep=2.5))

    async def no_heartbeat(msgs: Any) -> None:
        await asyncio.Event().wait()

    monkeypatch.setattr(toy.runner, "_heartbeat", no_heartbeat)
    await publish_raw(js, order_placed())
    sub = await js.pull_subscribe_bind(CONSUMER, stream="EVENTS")
    rival = await js.pull_subscribe_bind(CONSUMER, stream="EVENTS")
    msgs = await sub.fetch(1, timeout=5)
    batch = asyncio.create_task(toy.runner.process_batch(msgs))
    redelivered = await rival.fetch(1, timeout=3)
    assert redelivered[0].metadata.num_delivered == 2
    await asyncio.wait_for(batch, 10)
    await redelivered[0].ack()
    await sub.unsubscribe()
    await rival.unsubscribe()
    await toy.store.close()


async def test_handler_producing_undeclared_event_is_dead_lettered(
    js: JetStreamContext, make_toy: MakeToy
) -> None:
    """A reaction returning an event type the service did not declare: rolled back, DLQ, nothing published."""
    toy = await make_toy()

    async def rogue(event: Any, payload: Any, db: Any) -> list[Any]:
        await db.execute("INSERT INTO charges VALUES ('x', 'y', 1)")
        return [common.caused_by(event, "shipment.scheduled", {})]

    toy.runner.handlers = {"order.placed": rogue}
    await publish_raw(js, order_placed())
    toy.start()
    await wait_until(lambda: _settled(toy), what="terminated")
    entries = await _dlq_entries(js)
    assert [e.headers["Dlq-Reason"] for e in entries] == ["permanent_error"]
    assert "shipment.scheduled" in entries[0].headers["Dlq-Error"]
    assert await toy.charges() == []
    assert await toy.store.pending_outbox() == []
    assert await subject_count(js, "EVENTS", "events.shipment.scheduled.>") == 0
    await toy.halt()
