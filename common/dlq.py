"""Dead letters: the contract's DLQ subjects, headers and reasons.

A dead letter is the original message, body unchanged, published to
`dlq.<consumer>.<eventType>` with the original headers plus the `Dlq-*` headers below.
Its `Nats-Msg-Id` is `<consumer>:<stream seq>`, so the runner and the dlq service can both
write the entry for the same failure and the `DLQ` stream keeps one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import orjson
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from common.declarations import DLQ_STREAM
from common.envelope import split_subject
from common.errors import SubjectMismatchError
from common.publisher import HDR_MSG_ID, OutgoingMessage

__all__ = [
    "DLQ_REASONS",
    "HDR_DLQ_CONSUMER",
    "HDR_DLQ_DELIVERIES",
    "HDR_DLQ_ERROR",
    "HDR_DLQ_FAILED_AT",
    "HDR_DLQ_ORIGINAL_SUBJECT",
    "HDR_DLQ_REASON",
    "HDR_DLQ_STREAM",
    "HDR_DLQ_STREAM_SEQ",
    "REASON_MAX_DELIVERIES",
    "REASON_PERMANENT_ERROR",
    "Entry",
    "dead_letter",
    "dlq_msg_id",
    "dlq_subject",
    "read_dlq",
]

HDR_DLQ_REASON: Final = "Dlq-Reason"
HDR_DLQ_ERROR: Final = "Dlq-Error"
HDR_DLQ_STREAM: Final = "Dlq-Stream"
HDR_DLQ_STREAM_SEQ: Final = "Dlq-Stream-Seq"
HDR_DLQ_CONSUMER: Final = "Dlq-Consumer"
HDR_DLQ_DELIVERIES: Final = "Dlq-Deliveries"
HDR_DLQ_ORIGINAL_SUBJECT: Final = "Dlq-Original-Subject"
HDR_DLQ_FAILED_AT: Final = "Dlq-Failed-At"

REASON_MAX_DELIVERIES: Final = "max_deliveries"
REASON_PERMANENT_ERROR: Final = "permanent_error"
DLQ_REASONS: Final = frozenset(
    {
        REASON_MAX_DELIVERIES,
        "invalid_json",
        "invalid_envelope",
        "invalid_payload",
        "unsupported_schema_version",
        "subject_mismatch",
        "payload_too_large",
        REASON_PERMANENT_ERROR,
    }
)
MAX_ERROR_BYTES: Final = 1024
UNKNOWN_EVENT_TYPE: Final = "unknown.unknown"


def dlq_subject(consumer: str, event_type: str) -> str:
    return f"dlq.{consumer}.{event_type}"


def dlq_msg_id(consumer: str, stream_seq: int) -> str:
    return f"{consumer}:{stream_seq}"


def _truncate(text: str, limit: int = MAX_ERROR_BYTES) -> str:
    data = text.encode()
    if len(data) <= limit:
        return text
    return data[: limit - 3].decode(errors="ignore") + "..."


def _header_safe(text: str) -> str:
    return " ".join(text.split())


def dead_letter(
    *,
    body: bytes,
    headers: Mapping[str, str] | None,
    original_subject: str,
    stream: str,
    stream_seq: int,
    consumer: str,
    deliveries: int,
    reason: str,
    error: str,
    failed_at: datetime | None = None,
) -> OutgoingMessage:
    """The DLQ entry for one failed (consumer, stream sequence)."""
    if reason not in DLQ_REASONS:
        raise ValueError(f"unknown DLQ reason {reason!r}")
    try:
        event_type, _ = split_subject(original_subject)
    except SubjectMismatchError:
        event_type = UNKNOWN_EVENT_TYPE
    out = {k: v for k, v in (headers or {}).items() if not k.startswith("Dlq-")}
    out.update(
        {
            HDR_MSG_ID: dlq_msg_id(consumer, stream_seq),
            HDR_DLQ_REASON: reason,
            HDR_DLQ_ERROR: _truncate(_header_safe(error)) or reason,
            HDR_DLQ_STREAM: stream,
            HDR_DLQ_STREAM_SEQ: str(stream_seq),
            HDR_DLQ_CONSUMER: consumer,
            HDR_DLQ_DELIVERIES: str(deliveries),
            HDR_DLQ_ORIGINAL_SUBJECT: original_subject,
            HDR_DLQ_FAILED_AT: (failed_at or datetime.now(UTC)).isoformat().replace("+00:00", "Z"),
        }
    )
    return OutgoingMessage(dlq_subject(consumer, event_type), body, out, event_type)


@dataclass(frozen=True)
class Entry:
    """One message as stored in the `DLQ` stream (a dead letter, or a replay marker)."""

    seq: int
    subject: str
    headers: dict[str, str]
    body: bytes
    stored_at: datetime | None = None

    def header(self, name: str) -> str:
        return self.headers.get(name, "")

    @property
    def consumer(self) -> str:
        return self.header(HDR_DLQ_CONSUMER)

    @property
    def event_type(self) -> str:
        tokens = self.subject.split(".")
        return ".".join(tokens[2:4]) if len(tokens) >= 4 else "?"

    @property
    def reason(self) -> str:
        return self.header(HDR_DLQ_REASON)

    @property
    def failed_at(self) -> datetime | None:
        text = self.header(HDR_DLQ_FAILED_AT)
        try:
            return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else self.stored_at
        except ValueError:
            return self.stored_at

    def envelope(self) -> dict[str, Any] | None:
        """The decoded body if it is a JSON object, else None."""
        try:
            body = orjson.loads(self.body)
        except orjson.JSONDecodeError:
            return None
        return body if isinstance(body, dict) else None


async def read_dlq(
    js: JetStreamContext, subject: str = "dlq.>", *, since: datetime | None = None, timeout: float = 5.0
) -> list[Entry]:
    """Every message of `DLQ` on `subject` (from `since`), oldest first.

    One read-only mechanism for every reader (the CLI, traces, the trace page): an ordered
    consumer (ephemeral, no acks, flow-controlled), so it needs no durable state and only
    read rights. Bounded: it stops at the last message pending when it started, or at
    `timeout`."""
    try:
        info = await js.stream_info(DLQ_STREAM, subjects_filter=subject)
    except NotFoundError:
        return []
    if not sum((info.state.subjects or {}).values()):
        return []
    config = ConsumerConfig(opt_start_time=since.astimezone(UTC)) if since else None
    policy = DeliverPolicy.BY_START_TIME if since else DeliverPolicy.ALL
    sub = await js.subscribe(
        subject, stream=DLQ_STREAM, ordered_consumer=True, deliver_policy=policy, config=config
    )
    found: list[Entry] = []
    try:
        async with asyncio.timeout(timeout):
            while True:
                msg = await sub.next_msg(timeout=timeout)
                meta = msg.metadata
                found.append(
                    Entry(
                        meta.sequence.stream, msg.subject, dict(msg.headers or {}), msg.data, meta.timestamp
                    )
                )
                if meta.num_pending == 0:
                    break
    except TimeoutError:
        pass  # `since` matched nothing (or fewer than counted): what arrived is the answer
    finally:
        await sub.unsubscribe()
    return found
