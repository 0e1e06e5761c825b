"""Dead letters end to end: the test app (tests/e2e/dlqapp.py) runs under `choreo up` as real
processes (shop, audit, dlq) on a real nats-server, with ack_wait=1s and max_deliver=3.

Poison is published straight to `events.order.placed.<id>` as a broken producer would.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import nats
import orjson
import pytest
from nats.js import JetStreamContext

from common.dlqtool import Filters, read_entries
from tests.e2e.dlqharness import (
    MAX_EVENT_BYTES,
    System,
    advisories_done,
    advisory_seqs,
    entries_for,
    new_order_id,
    order_body,
    publish,
    running_system,
    settled,
)
from tests.support import wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    with running_system(tmp_path_factory.mktemp("dlq")) as running:
        yield running


@pytest.fixture
async def js(system: System) -> AsyncIterator[JetStreamContext]:
    nc = await nats.connect(system.nats_url, connect_timeout=2, max_reconnect_attempts=3)
    yield nc.jetstream()
    await nc.close()


async def _quiet(js: JetStreamContext) -> None:
    """Wait until shop and audit have settled everything and the dlq service every advisory."""

    async def done() -> bool:
        return await settled(js, "shop-0") and await settled(js, "audit-0") and await advisories_done(js)

    await wait_until(done, timeout=30, what="consumers settled and advisories copied")


POISON_CLASSES = [
    "invalid_json",
    "invalid_envelope",
    "invalid_envelope/missing-field",
    "invalid_payload",
    "unsupported_schema_version",
    "subject_mismatch",
    "payload_too_large",
    "permanent_error",
]


def _poison(label: str, order_id: str) -> tuple[bytes, str]:
    """(body, subject aggregate id) of one poison class."""
    body = order_body(order_id)
    subject_id = order_id
    if label == "invalid_json":
        return b'{"eventId": "not closed', subject_id
    if label == "invalid_envelope":
        return b'["a", "list", "not", "an", "object"]', subject_id
    if label == "invalid_envelope/missing-field":
        del body["correlationId"]
    elif label == "invalid_payload":
        del body["payload"]["items"]
    elif label == "unsupported_schema_version":
        body["schemaVersion"] = "2.0.0"
    elif label == "subject_mismatch":
        subject_id = f"{order_id}-elsewhere"
    elif label == "payload_too_large":
        body["payload"]["note"] = "x" * (MAX_EVENT_BYTES + 100)
    elif label == "permanent_error":
        body["payload"]["customerId"] = "permanent"
    return orjson.dumps(body), subject_id


async def test_each_poison_class_is_dead_lettered_once_with_its_reason_and_unchanged_body(
    system: System, js: JetStreamContext
) -> None:
    """Every poison class lands in the DLQ exactly once, right Dlq-Reason, byte-identical body;
    the valid events published between them are processed once each."""
    published: dict[str, tuple[int, bytes]] = {}
    valid: list[str] = []
    for label in POISON_CLASSES:
        good = new_order_id()
        valid.append(good)
        await publish(js, good, order_body(good))
        data, subject_id = _poison(label, new_order_id())
        published[label] = (await publish(js, subject_id, data), data)
    last = new_order_id()
    valid.append(last)
    await publish(js, last, order_body(last))
    await _quiet(js)

    terminated = await advisory_seqs(js, "MSG_TERMINATED")
    for label, (seq, data) in published.items():
        entries = await entries_for(js, seq)
        assert len(entries) == 1, f"{label}: {len(entries)} entries for seq {seq}"
        entry = entries[0]
        assert entry.reason == label.split("/")[0], label
        assert entry.body == data, label
        assert entry.header("Dlq-Error"), label
        assert entry.header("Dlq-Deliveries") == "1", label
        assert entry.header("Dlq-Stream") == "EVENTS"
        assert entry.header("Nats-Msg-Id") == f"shop-0:{seq}"
        assert seq in terminated, f"{label}: no MSG_TERMINATED advisory, so no +TERM"
    for order_id in valid:
        assert len(system.charges(order_id)) == 1, order_id
        assert len(system.audited(order_id)) == 1, order_id


async def test_msg_terminated_advisory_for_runner_written_entry_adds_no_second_entry(
    system: System, js: JetStreamContext
) -> None:
    """The runner writes the entry and terminates; the dlq service copies the MSG_TERMINATED
    advisory with the same Nats-Msg-Id, and the DLQ stream keeps one entry (the runner's)."""
    order_id = new_order_id()
    seq = await publish(js, order_id, order_body(order_id, "permanent"))
    await wait_until(lambda: _has_advisory(js, "MSG_TERMINATED", seq), what="terminated advisory")
    await _quiet(js)
    entries = await entries_for(js, seq)
    assert len(entries) == 1
    # The runner's entry carries the handler's error; the dlq service's copy would say "terminated".
    assert "card reported stolen" in entries[0].header("Dlq-Error")
    assert '"dead letter already written"' in system.log("dlq-0")


async def _has_advisory(js: JetStreamContext, kind: str, seq: int) -> bool:
    return seq in await advisory_seqs(js, kind)


async def test_handler_failing_twice_then_succeeding_never_reaches_the_dlq(
    system: System, js: JetStreamContext
) -> None:
    """Two retryable failures, then success on the third delivery: processed once, no entry."""
    order_id = new_order_id()
    seq = await publish(js, order_id, order_body(order_id, "fail-twice"))
    await wait_until(lambda: _charged(system, order_id), what="charged after retries")
    await _quiet(js)
    assert len(system.charges(order_id)) == 1
    assert len(system.audited(order_id)) == 1
    assert await entries_for(js, seq) == []
    assert seq not in await advisory_seqs(js, "MAX_DELIVERIES")


async def _charged(system: System, order_id: str) -> bool:
    return bool(system.charges(order_id))


async def test_always_retryable_failure_is_dead_lettered_after_max_deliver(
    system: System, js: JetStreamContext
) -> None:
    """A handler that always raises a retryable error: one max_deliveries entry with
    Dlq-Deliveries=3 (max_deliver) and the last error; nothing charged."""
    order_id = new_order_id()
    seq = await publish(js, order_id, order_body(order_id, "always-retry"))
    await wait_until(lambda: _entry_count(js, seq), timeout=30, what="max_deliveries entry")
    await _quiet(js)
    entries = await entries_for(js, seq)
    assert len(entries) == 1
    assert entries[0].reason == "max_deliveries"
    assert entries[0].header("Dlq-Deliveries") == "3"
    assert "payment gateway unavailable (run 3)" in entries[0].header("Dlq-Error")
    assert system.charges(order_id) == []


async def _entry_count(js: JetStreamContext, seq: int) -> bool:
    return bool(await entries_for(js, seq))


async def test_replay_after_fix_processes_once_and_second_replay_does_nothing(
    system: System, js: JetStreamContext
) -> None:
    """With the bug flag on the event dead-letters; after the fix `choreo dlq replay` makes it
    processed exactly once (one charge, one downstream event, one audit row); replaying the
    same entry again does nothing, and even a forced replay is absorbed by the inboxes."""
    flag = system.state_dir / "broken"
    flag.write_text("on")
    order_id = new_order_id()
    seq = await publish(js, order_id, order_body(order_id, "flagged"))
    await wait_until(lambda: _entry_count(js, seq), timeout=30, what="entry while broken")
    await _quiet(js)
    (entry,) = await entries_for(js, seq)
    assert system.charges(order_id) == []

    flag.unlink()  # the fix is deployed
    first = system.cli("dlq", "replay", str(entry.seq))
    assert first.returncode == 0, first.stderr
    assert "1 replayed" in first.stdout
    await wait_until(lambda: _audited(system, order_id), what="replayed event processed downstream")
    await _quiet(js)

    second = system.cli("dlq", "replay", str(entry.seq))
    assert second.returncode == 0, second.stderr
    assert "1 already-replayed" in second.stdout
    forced = system.cli("dlq", "replay", "--force", str(entry.seq))
    assert "1 replayed" in forced.stdout, forced.stdout + forced.stderr
    await _quiet(js)

    assert len(system.charges(order_id)) == 1
    assert len(system.audited(order_id)) == 1
    assert await _stored(js, f"events.payment.succeeded.{order_id}.*") == 1
    assert await _stored(js, f"events.order.placed.{order_id}.*") == 3  # original + 2 replays
    assert len(await entries_for(js, seq)) == 1  # no new dead letter
    listing = system.cli("dlq", "ls", "--consumer", "shop-0", "--reason", "max_deliveries", "--limit", "0")
    row = next(line for line in listing.stdout.splitlines() if line.startswith(f"{entry.seq} "))
    assert " yes " in row
    assert "_replays" not in listing.stdout


async def _audited(system: System, order_id: str) -> bool:
    return bool(system.audited(order_id))


async def _stored(js: JetStreamContext, subject: str) -> int:
    info = await js.stream_info("EVENTS", subjects_filter=subject)
    return sum((info.state.subjects or {}).values())


async def test_thousand_events_with_five_percent_poison_are_each_processed_or_dead_lettered(
    system: System, js: JetStreamContext
) -> None:
    """1,000 events, 50 of them poison (five classes, incl. retry exhaustion): every input is
    either charged or in the DLQ, none in both, none in neither, none twice."""
    kinds = ["bad-json", "bad-payload", "permanent", "always-retry", "wrong-major"]
    seqs: dict[int, str] = {}
    futures = []
    for i in range(1000):
        order_id = f"acct-{i:04d}-{new_order_id()}"
        data = orjson.dumps(order_body(order_id))
        if i % 20 == 7:
            kind = kinds[(i // 20) % len(kinds)]
            poison: dict[str, bytes] = {
                "bad-json": b"{" + order_id.encode(),
                "bad-payload": orjson.dumps(order_body(order_id, payload={"orderId": order_id})),
                "permanent": orjson.dumps(order_body(order_id, "permanent")),
                "always-retry": orjson.dumps(order_body(order_id, "always-retry")),
                "wrong-major": orjson.dumps(order_body(order_id, schemaVersion="3.1.0")),
            }
            data = poison[kind]
        headers = {"Nats-Msg-Id": f"acct-{order_id}"}
        futures.append(
            (order_id, await js.publish_async(f"events.order.placed.{order_id}", data, headers=headers))
        )
    for order_id, future in futures:
        seqs[int((await asyncio.wait_for(future, 10)).seq)] = order_id
    await wait_until(lambda: _accounted(system, js, seqs), timeout=60, interval=0.5, what="all accounted")
    await _quiet(js)

    charged = [order for _, order in system.charges() if order.startswith("acct-")]
    dead = [
        e
        for e in (await read_entries(js, Filters(consumer="shop-0"))).entries
        if int(e.header("Dlq-Stream-Seq")) in seqs
    ]
    dead_orders = [seqs[int(e.header("Dlq-Stream-Seq"))] for e in dead]
    assert len(charged) == len(set(charged)) == 950
    assert len(dead_orders) == len(set(dead_orders)) == 50
    assert set(charged).isdisjoint(dead_orders)
    assert set(charged) | set(dead_orders) == set(seqs.values())


async def _accounted(system: System, js: JetStreamContext, seqs: dict[int, str]) -> bool:
    charged = {order for _, order in system.charges() if order.startswith("acct-")}
    scan = await read_entries(js, Filters(consumer="shop-0"))
    dead = {int(e.header("Dlq-Stream-Seq")) for e in scan.entries} & set(seqs)
    return len(charged) + len(dead) >= len(seqs)


async def test_unreadable_advisory_is_skipped_and_the_dlq_service_keeps_copying(
    system: System, js: JetStreamContext
) -> None:
    """A message on an advisory subject that is not a server advisory is skipped (terminated),
    not retried forever: the dlq service stays up and copies the next real advisory."""
    subject = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.EVENTS.shop-0"
    await js.publish(subject, b"not an advisory")
    await js.publish(subject, orjson.dumps({"stream": "EVENTS", "consumer": "shop-0"}))  # no stream_seq
    order_id = new_order_id()
    seq = await publish(js, order_id, order_body(order_id, "permanent"))
    await wait_until(lambda: _has_advisory(js, "MSG_TERMINATED", seq), what="terminated advisory")
    await _quiet(js)
    assert len(await entries_for(js, seq)) == 1
    log = system.log("dlq-0")
    assert log.count('"unreadable advisory skipped"') == 2
    assert '"service crashed"' not in log
