"""Provisioning: the `EVENTS`, `DLQ` and `ADVISORIES` streams and every durable consumer,
created or updated idempotently from the service declarations only.

`ADVISORIES` is created first: the server drops advisories nobody captures, so it must exist
before any consumer can fail. `EVENTS` tags each stored subject with a partition token
(`events.<a>.<v>.<id>` -> `events.<a>.<v>.<id>.<p>`, server side), so producers keep
publishing to the contract's subjects and each (service, partition) consumer filters on its
token. Consumers for partitions that no longer exist are deleted.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
    SubjectTransform,
)
from nats.js.errors import NotFoundError

from common.declarations import (
    ADVISORIES_STREAM,
    DLQ_STREAM,
    EVENTS_STREAM,
    ServiceSpec,
    consumer_name,
    filter_subjects,
)
from common.settings import ProvisionSettings

__all__ = [
    "ADVISORY_SUBJECTS",
    "DLQ_CONSUMER",
    "ProvisionReport",
    "consumer_configs",
    "provision",
    "retry_backoff",
    "stream_configs",
]

DAY: Final = 86400.0
ADVISORY_SUBJECTS: Final = (
    f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{EVENTS_STREAM}.>",
    f"$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.{EVENTS_STREAM}.>",
)
DLQ_CONSUMER: Final = "dlq"  # the dlq service's durable consumer on ADVISORIES
# The DLQ stream de-duplicates `<consumer>:<seq>` for a day, so the runner's entry and the
# dlq service's copy of the same failure (seconds apart, or hours if it was down) stay one.
DLQ_DUPLICATE_WINDOW: Final = DAY


@dataclass
class ProvisionReport:
    streams: list[str]
    consumers: list[str]
    deleted: list[str]


def retry_backoff(ack_wait: float, max_deliver: int) -> list[float]:
    """Redelivery delays after ack timeouts: ack_wait, then doubling (one per redelivery)."""
    return [ack_wait * 2**i for i in range(max(1, max_deliver - 1))]


def stream_configs(settings: ProvisionSettings) -> list[StreamConfig]:
    """ADVISORIES first, then EVENTS and DLQ."""
    replicas = settings.stream_replicas
    return [
        StreamConfig(
            name=ADVISORIES_STREAM,
            subjects=list(ADVISORY_SUBJECTS),
            retention=RetentionPolicy.LIMITS,
            max_age=settings.dlq_max_age_days * DAY,
            storage=StorageType.FILE,
            num_replicas=replicas,
        ),
        StreamConfig(
            name=EVENTS_STREAM,
            subjects=["events.>"],
            retention=RetentionPolicy.LIMITS,
            discard=DiscardPolicy.OLD,
            max_age=settings.events_max_age_days * DAY,
            duplicate_window=settings.duplicate_window_seconds,
            subject_transform=SubjectTransform(
                src="events.*.*.*",
                dest=(
                    "events.{{wildcard(1)}}.{{wildcard(2)}}.{{wildcard(3)}}"
                    f".{{{{partition({settings.partitions},3)}}}}"
                ),
            ),
            storage=StorageType.FILE,
            num_replicas=replicas,
        ),
        StreamConfig(
            name=DLQ_STREAM,
            subjects=["dlq.>"],
            retention=RetentionPolicy.LIMITS,
            max_age=settings.dlq_max_age_days * DAY,
            duplicate_window=min(DLQ_DUPLICATE_WINDOW, settings.dlq_max_age_days * DAY),
            storage=StorageType.FILE,
            num_replicas=replicas,
        ),
    ]


def consumer_configs(specs: Iterable[ServiceSpec], settings: ProvisionSettings) -> list[ConsumerConfig]:
    """One durable pull consumer per (service, partition), or per view replica."""
    configs = []
    for spec in specs:
        if spec.consumes_advisories:
            configs.append(
                ConsumerConfig(
                    durable_name=DLQ_CONSUMER,
                    ack_policy=AckPolicy.EXPLICIT,
                    deliver_policy=DeliverPolicy.ALL,
                    ack_wait=settings.ack_wait_seconds,
                    max_deliver=-1,  # advisories are never dropped: retried until copied
                    max_ack_pending=settings.max_ack_pending,
                )
            )
            continue
        if not spec.consumes:
            continue
        count = settings.partitions if spec.partitioned else settings.view_replicas
        for index in range(count):
            backoff = retry_backoff(settings.ack_wait_seconds, settings.max_deliver)
            configs.append(
                ConsumerConfig(
                    durable_name=consumer_name(spec.name, index),
                    description=f"{spec.name}: {', '.join(sorted(spec.consumes))}",
                    ack_policy=AckPolicy.EXPLICIT,
                    deliver_policy=DeliverPolicy.ALL,
                    filter_subjects=filter_subjects(spec, index),
                    ack_wait=backoff[0],
                    backoff=backoff,
                    max_deliver=settings.max_deliver,
                    max_ack_pending=settings.max_ack_pending,
                )
            )
    return configs


async def _ensure_stream(js: JetStreamContext, config: StreamConfig) -> None:
    try:
        await js.stream_info(config.name or "")
    except NotFoundError:
        await js.add_stream(config)
        return
    await js.update_stream(config)


async def provision(
    js: JetStreamContext, specs: Iterable[ServiceSpec], settings: ProvisionSettings
) -> ProvisionReport:
    """Create or update streams and consumers; running it twice changes nothing."""
    specs = list(specs)
    report = ProvisionReport([], [], [])
    for stream_config in stream_configs(settings):
        await _ensure_stream(js, stream_config)
        report.streams.append(stream_config.name or "")
    wanted: dict[str, list[ConsumerConfig]] = {EVENTS_STREAM: [], ADVISORIES_STREAM: []}
    for config in consumer_configs(specs, settings):
        stream = ADVISORIES_STREAM if config.durable_name == DLQ_CONSUMER else EVENTS_STREAM
        wanted[stream].append(config)
    for stream, configs in wanted.items():
        for config in configs:
            # add_consumer with a durable name creates it, or updates it in place.
            await js.add_consumer(stream, config)
            report.consumers.append(config.durable_name or "")
    ours = re.compile(rf"^({'|'.join(re.escape(s.name) for s in specs)})-\d+$")
    names = {c.durable_name for c in wanted[EVENTS_STREAM]}
    for info in await js.consumers_info(EVENTS_STREAM):
        if ours.match(info.name) and info.name not in names:
            await js.delete_consumer(EVENTS_STREAM, info.name)
            report.deleted.append(info.name)
    return report
