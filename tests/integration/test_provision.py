"""Provisioning streams and consumers on a real server: contents, idempotence, partition changes."""

from __future__ import annotations

from nats.js import JetStreamContext
from nats.js.api import AckPolicy, RetentionPolicy, StorageType

from common import ProvisionSettings, ServiceSpec, provision
from common.provision import ADVISORY_SUBJECTS, DLQ_CONSUMER
from tests.integration.toy import order_placed

PAYMENT = ServiceSpec.of("payment", consumes=["order.placed", "inventory.reservation_failed"])
STATUS = ServiceSpec.of("order-status", consumes=["order.placed", "payment.succeeded"], partitioned=False)
DLQ_SERVICE = ServiceSpec.of("dlq", consumes_advisories=True)
SPECS = [PAYMENT, STATUS, DLQ_SERVICE]


async def _consumer_names(js: JetStreamContext, stream: str) -> set[str]:
    return {info.name for info in await js.consumers_info(stream)}


async def test_provision_creates_streams_and_consumers(js: JetStreamContext) -> None:
    """ADVISORIES, EVENTS and DLQ exist as the contract says; consumers carry their filters and limits."""
    settings = ProvisionSettings(partitions=2, ack_wait_seconds=2, max_deliver=4, max_ack_pending=77)
    report = await provision(js, SPECS, settings)
    assert report.streams == ["ADVISORIES", "EVENTS", "DLQ"]
    assert sorted(report.consumers) == ["dlq", "order-status-0", "payment-0", "payment-1"]
    assert report.deleted == []

    advisories = (await js.stream_info("ADVISORIES")).config
    assert sorted(advisories.subjects or []) == sorted(ADVISORY_SUBJECTS)
    events = (await js.stream_info("EVENTS")).config
    assert events.subjects == ["events.>"]
    assert events.retention == RetentionPolicy.LIMITS
    assert events.storage == StorageType.FILE
    assert events.duplicate_window == 120
    assert events.max_age == 7 * 86400
    assert events.subject_transform is not None
    assert "partition(2,3)" in events.subject_transform.dest
    dlq = (await js.stream_info("DLQ")).config
    assert dlq.subjects == ["dlq.>"]
    assert dlq.retention == RetentionPolicy.LIMITS
    assert dlq.max_age == 30 * 86400

    for partition in (0, 1):
        config = (await js.consumer_info("EVENTS", f"payment-{partition}")).config
        assert sorted(config.filter_subjects or []) == [
            f"events.inventory.reservation_failed.*.{partition}",
            f"events.order.placed.*.{partition}",
        ]
        assert config.ack_policy == AckPolicy.EXPLICIT
        assert config.ack_wait == 2
        assert config.max_deliver == 4
        assert config.backoff == [2, 4, 8]
        assert config.max_ack_pending == 77
    view = (await js.consumer_info("EVENTS", "order-status-0")).config
    assert sorted(view.filter_subjects or []) == ["events.order.placed.*.*", "events.payment.succeeded.*.*"]
    advisory_consumer = (await js.consumer_info("ADVISORIES", DLQ_CONSUMER)).config
    assert advisory_consumer.max_deliver == -1
    assert await _consumer_names(js, "EVENTS") == {"payment-0", "payment-1", "order-status-0"}


async def test_provision_twice_is_idempotent(js: JetStreamContext) -> None:
    """Running provision again keeps the same streams, consumers, configs and stored messages."""
    settings = ProvisionSettings(partitions=2)
    await provision(js, SPECS, settings)
    await js.publish(order_placed("order-1").subject, order_placed("order-1").to_json())
    before = {name: (await js.consumer_info("EVENTS", name)).config for name in ("payment-0", "payment-1")}
    streams_before = {name: (await js.stream_info(name)).config for name in ("ADVISORIES", "EVENTS", "DLQ")}
    report = await provision(js, SPECS, settings)
    assert report.deleted == []
    after = {name: (await js.consumer_info("EVENTS", name)).config for name in ("payment-0", "payment-1")}
    streams_after = {name: (await js.stream_info(name)).config for name in ("ADVISORIES", "EVENTS", "DLQ")}
    assert before == after
    assert streams_before == streams_after
    assert await _consumer_names(js, "EVENTS") == {"payment-0", "payment-1", "order-status-0"}
    assert (await js.stream_info("EVENTS")).state.messages == 1


async def test_fewer_partitions_delete_stale_consumers(js: JetStreamContext) -> None:
    """Going from 3 partitions to 1 deletes payment-1 and payment-2, keeps others' consumers."""
    await provision(js, SPECS, ProvisionSettings(partitions=3))
    await js.add_consumer("EVENTS", durable_name="someone-else-0", filter_subject="events.>")
    assert {"payment-0", "payment-1", "payment-2"} <= await _consumer_names(js, "EVENTS")
    report = await provision(js, SPECS, ProvisionSettings(partitions=1))
    assert sorted(report.deleted) == ["payment-1", "payment-2"]
    assert await _consumer_names(js, "EVENTS") == {"payment-0", "order-status-0", "someone-else-0"}
    config = (await js.consumer_info("EVENTS", "payment-0")).config
    assert "events.order.placed.*.0" in (config.filter_subjects or [])
    transform = (await js.stream_info("EVENTS")).config.subject_transform
    assert transform is not None
    assert "partition(1,3)" in transform.dest


async def test_partition_transform_keeps_an_aggregate_in_one_partition(js: JetStreamContext) -> None:
    """All events of one aggregate get one partition token; each partition's consumer sees only its own."""
    await provision(js, [PAYMENT], ProvisionSettings(partitions=4))
    aggregates = [f"order-{i}" for i in range(24)]
    for aggregate in aggregates:
        for event_type in ("order.placed", "inventory.reservation_failed"):
            await js.publish(f"events.{event_type}.{aggregate}", b"{}")
    subjects = (await js.stream_info("EVENTS", subjects_filter="events.>")).state.subjects or {}
    assert sum(subjects.values()) == 48
    partition_of: dict[str, set[str]] = {}
    for subject in subjects:
        _, _, _, aggregate, token = subject.split(".")
        partition_of.setdefault(aggregate, set()).add(token)
    assert set(partition_of) == set(aggregates)
    assert all(len(tokens) == 1 for tokens in partition_of.values())
    used = {next(iter(tokens)) for tokens in partition_of.values()}
    assert used <= {"0", "1", "2", "3"}
    assert len(used) > 1
    pending = 0
    for partition in range(4):
        info = await js.consumer_info("EVENTS", f"payment-{partition}")
        expected = 2 * sum(1 for tokens in partition_of.values() if tokens == {str(partition)})
        assert info.num_pending == expected
        pending += info.num_pending
    assert pending == 48
