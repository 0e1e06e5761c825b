"""The dlq service's loop: advisories in, dead letters out.

For each advisory about an `EVENTS` consumer it reads the original message by stream
sequence (limits retention keeps it) and publishes the DLQ entry with `Nats-Msg-Id =
<consumer>:<seq>`. When the runner already wrote that entry (a poison message, a
PermanentError, or its last failed retry), the `DLQ` stream reports a duplicate and
nothing is stored twice. Advisories are acked only after the entry is stored.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Final

import orjson
import structlog
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js.errors import NotFoundError

from common.correlation import get_logger
from common.declarations import ADVISORIES_STREAM, EVENTS_STREAM
from common.dlq import DLQ_REASONS, REASON_MAX_DELIVERIES, REASON_PERMANENT_ERROR, dead_letter
from common.metrics import OUTCOME_DUPLICATE, OUTCOME_PROCESSED
from common.provision import DLQ_CONSUMER
from common.publisher import HDR_CAUSATION_ID, HDR_CORRELATION_ID, OutgoingMessage
from common.pull import PullFeed
from common.service import ServiceContext

MAX_DELIVERIES_TYPE: Final = "io.nats.jetstream.advisory.v1.max_deliver"
TERMINATED_TYPE: Final = "io.nats.jetstream.advisory.v1.terminated"
TIMEOUT_ERROR: Final = "no ack after the last delivery: ack_wait passed (crash, hang or timeout)"
log = get_logger("choreo.dlq")


@dataclass
class AdvisoryLoop:
    """Consumes ADVISORIES with the durable `dlq` consumer."""

    ctx: ServiceContext
    batch_size: int = 64
    consuming: bool = False

    async def run(self, stop: asyncio.Event) -> None:
        feed = PullFeed(self.ctx.nc, ADVISORIES_STREAM, DLQ_CONSUMER, batch=self.batch_size, expires=1.0)
        await feed.start()
        self.consuming = True
        self.ctx.metrics.set_ready(True)
        try:
            async for msgs in feed.batches(stop, 1.0):
                if not msgs:
                    continue
                try:
                    await self.process(msgs)
                except NatsError as exc:  # NATS unreachable, leader election: advisories stay unacked
                    log.warning("advisory batch failed; it will be redelivered", error=repr(exc))
                    await asyncio.sleep(1.0)
        finally:
            self.consuming = False
            self.ctx.metrics.set_ready(False)
            await feed.stop()

    async def process(self, msgs: list[Msg]) -> None:
        entries: list[tuple[Msg, OutgoingMessage | None, dict[str, Any]]] = []
        for msg in msgs:
            try:
                advisory = orjson.loads(msg.data)
                entries.append((msg, await self.entry_for(advisory), advisory))
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                # Not a server advisory (anyone allowed to publish on the subject could send
                # it). With max_deliver=-1 it would crash-loop this service forever: skip it.
                log.error("unreadable advisory skipped", subject=msg.subject, error=str(exc))
                await msg.term()
        outgoing = [entry for _, entry, _ in entries if entry is not None]
        acks = iter(await self.ctx.publisher.publish_messages(outgoing, count=False))
        metrics = self.ctx.metrics
        for msg, entry, advisory in entries:
            kind = "max_deliveries" if advisory.get("type") == MAX_DELIVERIES_TYPE else "terminated"
            if entry is not None:
                duplicate = next(acks).duplicate
                reason = entry.headers["Dlq-Reason"]
                with _bound(entry):
                    log.info(
                        "dead letter already written" if duplicate else "dead letter written",
                        consumer=advisory.get("consumer"), stream_seq=advisory.get("stream_seq"),
                        reason=reason,
                    )  # fmt: skip
                if not duplicate:
                    metrics.dead_lettered(entry.event_type, reason)
                metrics.consumed_event(
                    f"advisory.{kind}", OUTCOME_DUPLICATE if duplicate else OUTCOME_PROCESSED
                )
            await msg.ack()

    async def entry_for(self, advisory: dict[str, Any]) -> OutgoingMessage | None:
        if advisory.get("stream") != EVENTS_STREAM:
            return None
        seq = int(advisory["stream_seq"])
        consumer = str(advisory["consumer"])
        deliveries = int(advisory.get("deliveries", 0))
        if advisory.get("type") == MAX_DELIVERIES_TYPE:
            reason, error = REASON_MAX_DELIVERIES, TIMEOUT_ERROR
        else:
            term_reason = str(advisory.get("reason") or "")
            known = term_reason.split(" ", 1)[0]
            reason = known if known in DLQ_REASONS else REASON_PERMANENT_ERROR
            error = term_reason or "terminated"
        try:
            original = await self.ctx.js.get_msg(EVENTS_STREAM, seq)
        except NotFoundError:
            log.error("original message gone from EVENTS", stream_seq=seq, consumer=consumer)
            body, headers, subject = b"", {}, f"events.unknown.unknown.seq-{seq}"
            error = f"{error}; original message no longer in EVENTS"
        else:
            body, headers, subject = (
                original.data or b"",
                dict(original.headers or {}),
                original.subject or "",
            )
        return dead_letter(
            body=body, headers=headers, original_subject=subject, stream=EVENTS_STREAM,
            stream_seq=seq, consumer=consumer, deliveries=deliveries, reason=reason, error=error,
        )  # fmt: skip


def _bound(entry: OutgoingMessage) -> Any:
    return structlog.contextvars.bound_contextvars(
        correlation_id=entry.headers.get(HDR_CORRELATION_ID),
        causation_id=entry.headers.get(HDR_CAUSATION_ID),
        event_type=entry.event_type,
    )
