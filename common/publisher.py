"""Publishing events to JetStream: contract headers, de-duplication, pipelined batches.

Every publish of a batch goes out with `publish_async`, then all PubAcks are awaited
together: one round trip per batch instead of one per message.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Final

from nats.js import JetStreamContext
from nats.js.api import PubAck

from common.envelope import Envelope
from common.errors import UndeclaredEventError
from common.metrics import Metrics

__all__ = [
    "HDR_CAUSATION_ID",
    "HDR_CORRELATION_ID",
    "HDR_EVENT_TYPE",
    "HDR_MSG_ID",
    "HDR_SCHEMA_VERSION",
    "OutgoingMessage",
    "Publisher",
    "event_headers",
    "to_message",
]

HDR_MSG_ID: Final = "Nats-Msg-Id"
HDR_EVENT_TYPE: Final = "Event-Type"
HDR_SCHEMA_VERSION: Final = "Schema-Version"
HDR_CORRELATION_ID: Final = "Correlation-Id"
HDR_CAUSATION_ID: Final = "Causation-Id"


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """A message ready for the wire; `event_type` is only for metrics."""

    subject: str
    body: bytes
    headers: dict[str, str]
    event_type: str


def event_headers(envelope: Envelope) -> dict[str, str]:
    """The contract headers of an event; the body stays the source of truth."""
    headers = {
        HDR_MSG_ID: envelope.event_id_str,
        HDR_EVENT_TYPE: envelope.event_type,
        HDR_SCHEMA_VERSION: envelope.schema_version,
        HDR_CORRELATION_ID: envelope.correlation_id,
    }
    if envelope.causation_id is not None:
        headers[HDR_CAUSATION_ID] = envelope.causation_id
    return headers


def to_message(event: Envelope) -> OutgoingMessage:
    """The wire form of an event: subject, JSON body, contract headers."""
    return OutgoingMessage(event.subject, event.to_json(), event_headers(event), event.event_type)


class Publisher:
    """Publishes a service's events; refuses event types it did not declare."""

    def __init__(
        self,
        js: JetStreamContext,
        *,
        service: str,
        produces: Collection[str],
        metrics: Metrics | None = None,
    ) -> None:
        self._js = js
        self.service = service
        self.produces = frozenset(produces)
        self._metrics = metrics

    def check_declared(self, events: Sequence[Envelope]) -> None:
        for event in events:
            if event.event_type not in self.produces:
                raise UndeclaredEventError(self.service, event.event_type)

    def to_messages(self, events: Sequence[Envelope]) -> list[OutgoingMessage]:
        self.check_declared(events)
        return [to_message(e) for e in events]

    async def publish(self, events: Sequence[Envelope], *, timeout: float = 5.0) -> None:
        await self.publish_messages(self.to_messages(events), timeout=timeout)

    async def publish_messages(
        self, messages: Sequence[OutgoingMessage], *, timeout: float = 5.0, count: bool = True
    ) -> list[PubAck]:
        """Publish all messages pipelined, then wait for every PubAck (duplicates included).
        `count` adds them to `choreo_events_published_total` (not for dead letters)."""
        if not messages:
            return []
        futures = [await self._js.publish_async(m.subject, m.body, headers=m.headers) for m in messages]
        acks = await asyncio.wait_for(asyncio.gather(*futures), timeout)
        if count and self._metrics is not None:
            for message, ack in zip(messages, acks, strict=True):
                if not ack.duplicate:
                    self._metrics.published_event(message.event_type)
        return list(acks)
