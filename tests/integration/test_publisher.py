"""Publishing to a real JetStream: de-duplication by eventId, contract headers, pipelined batches."""

from __future__ import annotations

from nats.js import JetStreamContext
from prometheus_client import CollectorRegistry

from common import Metrics, ProvisionSettings, Publisher, caused_by, provision
from common.publisher import OutgoingMessage, event_headers
from tests.integration.toy import SERVICE, SPEC, order_placed, subject_count


async def _publisher(js: JetStreamContext, partitions: int = 1) -> tuple[Publisher, CollectorRegistry]:
    await provision(js, [SPEC], ProvisionSettings(partitions=partitions))
    registry = CollectorRegistry()
    metrics = Metrics(registry, service=SERVICE)
    return Publisher(js, service=SERVICE, produces={"order.placed"}, metrics=metrics), registry


async def test_same_event_published_three_times_is_stored_once(js: JetStreamContext) -> None:
    """JetStream de-duplicates by Nats-Msg-Id = eventId: acks 2 and 3 say duplicate, one message stored."""
    publisher, registry = await _publisher(js)
    event = order_placed()
    message = publisher.to_messages([event])[0]
    acks = [(await publisher.publish_messages([message]))[0] for _ in range(3)]
    assert [bool(ack.duplicate) for ack in acks] == [False, True, True]
    assert len({ack.seq for ack in acks}) == 1
    assert (await js.stream_info("EVENTS")).state.messages == 1
    published = registry.get_sample_value(
        "choreo_events_published_total", {"service": SERVICE, "event_type": "order.placed"}
    )
    assert published == 1.0


async def test_published_message_carries_contract_headers(js: JetStreamContext) -> None:
    """Nats-Msg-Id, Event-Type, Schema-Version, Correlation-Id (and Causation-Id when caused)."""
    await provision(js, [SPEC], ProvisionSettings())
    publisher = Publisher(js, service=SERVICE, produces={"order.placed", "payment.succeeded"})
    root = order_placed()
    reaction = caused_by(root, "payment.succeeded", {"orderId": root.aggregate_id})
    await publisher.publish([root, reaction])
    first = await js.get_msg("EVENTS", 1)
    second = await js.get_msg("EVENTS", 2)
    assert first.headers is not None
    assert second.headers is not None
    assert first.headers["Nats-Msg-Id"] == str(root.event_id)
    assert first.headers["Event-Type"] == "order.placed"
    assert first.headers["Schema-Version"] == "1.0.0"
    assert first.headers["Correlation-Id"] == root.correlation_id
    assert "Causation-Id" not in first.headers
    assert second.headers["Nats-Msg-Id"] == str(reaction.event_id)
    assert second.headers["Causation-Id"] == str(root.event_id)
    assert second.headers["Correlation-Id"] == root.correlation_id
    assert first.data == root.to_json()
    expected = event_headers(reaction)
    assert expected == {k: v for k, v in second.headers.items() if k in expected}


async def test_pipelined_batch_stores_every_event(js: JetStreamContext) -> None:
    """A batch of N events published pipelined is stored in full, one PubAck each, in order."""
    publisher, registry = await _publisher(js)
    events = [order_placed(f"order-{i}") for i in range(300)]
    acks = await publisher.publish_messages(publisher.to_messages(events))
    assert len(acks) == 300
    assert not any(ack.duplicate for ack in acks)
    assert [ack.seq for ack in acks] == sorted(ack.seq for ack in acks)
    assert (await js.stream_info("EVENTS")).state.messages == 300
    published = registry.get_sample_value(
        "choreo_events_published_total", {"service": SERVICE, "event_type": "order.placed"}
    )
    assert published == 300.0


async def test_dead_letters_are_not_counted_as_published(js: JetStreamContext) -> None:
    """publish_messages(count=False) stores without moving choreo_events_published_total."""
    publisher, registry = await _publisher(js)
    message = OutgoingMessage("dlq.toy-0.order.placed", b"x", {"Nats-Msg-Id": "toy-0:1"}, "order.placed")
    await publisher.publish_messages([message], count=False)
    assert (await js.stream_info("DLQ")).state.messages == 1
    assert (
        registry.get_sample_value(
            "choreo_events_published_total", {"service": SERVICE, "event_type": "order.placed"}
        )
        is None
    )


async def test_subjects_are_stored_with_partition_token(js: JetStreamContext) -> None:
    """Producers publish events.<type>.<aggregateId>; the stream stores it with a partition token."""
    publisher, _ = await _publisher(js, partitions=4)
    events = [order_placed(f"order-{i}") for i in range(20)]
    await publisher.publish(events)
    info = await js.stream_info("EVENTS", subjects_filter="events.>")
    stored = set((info.state.subjects or {}).keys())
    assert len(stored) == 20
    for event in events:
        matches = [s for s in stored if s.rsplit(".", 1)[0] == f"events.order.placed.{event.aggregate_id}"]
        assert len(matches) == 1, event.aggregate_id
        assert matches[0].rsplit(".", 1)[1] in {"0", "1", "2", "3"}
    assert len({s.rsplit(".", 1)[1] for s in stored}) > 1
    assert await subject_count(js, "EVENTS", "events.order.placed.*.*") == 20
