"""Envelope, payload registry, backoff, dead-letter headers, graph, publisher guard: no broker."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import orjson
import pytest
from pydantic import ValidationError

from common import (
    Envelope,
    Payload,
    PayloadRegistry,
    Publisher,
    ServiceSpec,
    UndeclaredEventError,
    caused_by,
    derive_event_id,
    mermaid_graph,
    new_event,
    parse_envelope,
)
from common.consumer import nak_delay
from common.dlq import (
    HDR_DLQ_CONSUMER,
    HDR_DLQ_DELIVERIES,
    HDR_DLQ_ERROR,
    HDR_DLQ_ORIGINAL_SUBJECT,
    HDR_DLQ_REASON,
    HDR_DLQ_STREAM,
    HDR_DLQ_STREAM_SEQ,
    MAX_ERROR_BYTES,
    dead_letter,
)
from common.errors import (
    InvalidEnvelopeError,
    InvalidJsonError,
    InvalidPayloadError,
    SubjectMismatchError,
    UnsupportedSchemaVersionError,
)
from common.publisher import HDR_MSG_ID, event_headers


class PaymentSucceeded(Payload):
    order_id: str
    payment_id: str
    amount_cents: int


def _order(**overrides: object) -> Envelope:
    event = new_event("order.placed", "order-1", {"orderId": "order-1", "totalCents": 10})
    return event.model_copy(update=overrides) if overrides else event


def _body(**fields: object) -> bytes:
    raw = orjson.loads(_order().to_json())
    raw.update(fields)
    return orjson.dumps(raw)


def _registry() -> PayloadRegistry:
    registry = PayloadRegistry()
    registry.register("payment.succeeded", 1, PaymentSucceeded)
    return registry


@pytest.mark.parametrize("version", ["1.0.0", "0.1.0", "2.10.3", "10.0.12"])
def test_semver_schema_version_is_accepted(version: str) -> None:
    """A MAJOR.MINOR.PATCH schemaVersion passes validation."""
    event = new_event("order.placed", "o-1", {}, schema_version=version)
    assert event.schema_version == version
    assert event.major == int(version.split(".", maxsplit=1)[0])


@pytest.mark.parametrize("version", ["1", "1.0", "1.0.0-beta", "v1.0.0", "01.0.0", "1.0.0.0", ""])
def test_non_semver_schema_version_is_rejected(version: str) -> None:
    """Anything that is not plain MAJOR.MINOR.PATCH fails envelope validation."""
    with pytest.raises(ValidationError):
        new_event("order.placed", "o-1", {}, schema_version=version)


@pytest.mark.parametrize(
    "field",
    [
        {"schema_version": "1.0.0\n"},
        {"aggregate_id": "order-1\n"},
        {"event_type": "order.placed\n"},
    ],
)
def test_trailing_newline_is_not_a_valid_envelope_field(field: dict[str, str]) -> None:
    """`$` would let 'x\\n' through; a newline in aggregateId makes an unpublishable subject."""
    raw = orjson.loads(_order().to_json())
    raw.update({Envelope.model_fields[name].alias or name: value for name, value in field.items()})
    with pytest.raises(InvalidEnvelopeError):
        parse_envelope(orjson.dumps(raw))


def test_derive_event_id_is_deterministic_and_depends_on_type() -> None:
    """Same cause and produced type give the same id; another type gives another id."""
    cause = uuid.uuid4()
    assert derive_event_id(cause, "payment.succeeded") == derive_event_id(cause, "payment.succeeded")
    assert derive_event_id(str(cause), "payment.succeeded") == derive_event_id(cause, "payment.succeeded")
    assert derive_event_id(cause, "payment.succeeded") != derive_event_id(cause, "payment.failed")
    assert derive_event_id(cause, "payment.succeeded") != derive_event_id(uuid.uuid4(), "payment.succeeded")


def test_caused_by_keeps_correlation_and_sets_causation() -> None:
    """A reaction copies correlationId, sets causationId to the cause's id and a derived eventId."""
    cause = new_event("order.placed", "order-1", {}, correlation_id="flow-42")
    produced = caused_by(cause, "payment.succeeded", {"orderId": "order-1"})
    assert produced.correlation_id == "flow-42"
    assert produced.causation_id == str(cause.event_id)
    assert produced.event_id == derive_event_id(cause.event_id, "payment.succeeded")
    assert produced.aggregate_id == cause.aggregate_id
    assert cause.causation_id is None
    again = caused_by(cause, "payment.succeeded", {"orderId": "order-1"})
    assert again.event_id == produced.event_id


def test_registry_accepts_newer_minor_with_extra_fields() -> None:
    """A 1.3.0 payload with unknown fields decodes with the 1.x model, extras ignored."""
    event = new_event(
        "payment.succeeded",
        "o-1",
        {"orderId": "o-1", "paymentId": "p-1", "amountCents": 5, "currency": "EUR"},
        schema_version="1.3.0",
    )
    payload = _registry().decode(event)
    assert isinstance(payload, PaymentSucceeded)
    assert payload.amount_cents == 5
    assert not hasattr(payload, "currency")


def test_registry_rejects_unknown_major() -> None:
    """A 2.0.0 event for a consumer that knows only 1.x is an unsupported schema version."""
    event = new_event(
        "payment.succeeded",
        "o-1",
        {"orderId": "o-1", "paymentId": "p-1", "amountCents": 5},
        schema_version="2.0.0",
    )
    with pytest.raises(UnsupportedSchemaVersionError) as err:
        _registry().decode(event)
    assert err.value.reason == "unsupported_schema_version"
    assert err.value.known == [1]


def test_registry_rejects_payload_failing_its_schema() -> None:
    """A payload missing a required field or with a wrong type is an invalid payload."""
    event = new_event("payment.succeeded", "o-1", {"orderId": "o-1", "amountCents": "lots"})
    with pytest.raises(InvalidPayloadError) as err:
        _registry().decode(event)
    assert err.value.reason == "invalid_payload"


def test_registry_rejects_unknown_event_type_as_invalid_envelope() -> None:
    """An event type with no registered model at all is an invalid envelope."""
    event = new_event("order.placed", "o-1", {})
    with pytest.raises(InvalidEnvelopeError):
        _registry().decode(event)


def test_parse_envelope_rejects_invalid_json() -> None:
    """A body that is not JSON raises InvalidJsonError (reason invalid_json)."""
    with pytest.raises(InvalidJsonError) as err:
        parse_envelope(b"{not json")
    assert err.value.reason == "invalid_json"


def test_parse_envelope_rejects_invalid_utf8() -> None:
    """A body that is not UTF-8 raises InvalidJsonError."""
    with pytest.raises(InvalidJsonError):
        parse_envelope(b'{"eventId": "\xff\xfe"}')


@pytest.mark.parametrize("body", [b"[]", b"42", b'"text"', b"null"])
def test_parse_envelope_rejects_non_object(body: bytes) -> None:
    """Valid JSON that is not an object is an invalid envelope."""
    with pytest.raises(InvalidEnvelopeError) as err:
        parse_envelope(body)
    assert err.value.reason == "invalid_envelope"


@pytest.mark.parametrize(
    "field",
    ["eventId", "eventType", "schemaVersion", "occurredAt", "aggregateId", "correlationId", "payload"],
)
def test_parse_envelope_rejects_missing_field(field: str) -> None:
    """An envelope without one of its required fields is invalid and names the field."""
    raw = orjson.loads(_order().to_json())
    del raw[field]
    with pytest.raises(InvalidEnvelopeError) as err:
        parse_envelope(orjson.dumps(raw))
    assert field in err.value.detail


def test_parse_envelope_ignores_unknown_top_level_fields() -> None:
    """Unknown top-level fields are ignored (contract)."""
    event = parse_envelope(_body(traceparent="00-abc", extra={"a": 1}))
    assert event.event_type == "order.placed"


@pytest.mark.parametrize(
    "subject",
    ["events.order.placed.order-1", "events.order.placed.order-1.0", "events.order.placed.order-1.17"],
)
def test_parse_envelope_accepts_matching_subject_with_or_without_partition(subject: str) -> None:
    """The subject may carry the partition token the stream adds."""
    assert parse_envelope(_order().to_json(), subject=subject).aggregate_id == "order-1"


@pytest.mark.parametrize(
    "subject",
    [
        "events.order.cancelled.order-1",
        "events.order.placed.order-2",
        "events.order.placed.order-2.0",
        "events.payment.succeeded.order-1.3",
        "events.order.placed",
        "orders.order.placed.order-1",
        "events.order.placed.order-1.0.extra",
    ],
)
def test_parse_envelope_rejects_subject_mismatch(subject: str) -> None:
    """A subject whose type or aggregate disagrees with the body (or is malformed) is rejected."""
    with pytest.raises(SubjectMismatchError) as err:
        parse_envelope(_order().to_json(), subject=subject)
    assert err.value.reason == "subject_mismatch"


def test_to_json_round_trips() -> None:
    """to_json then parse_envelope gives back an equal envelope, with a Z timestamp."""
    cause = new_event(
        "order.placed",
        "order-1",
        {"orderId": "order-1", "items": [{"sku": "sku-1", "quantity": 2}]},
        occurred_at=datetime(2025, 3, 1, 12, 30, 5, 123456, tzinfo=UTC),
    )
    produced = caused_by(cause, "payment.succeeded", {"orderId": "order-1"})
    for event in (cause, produced):
        body = event.to_json()
        assert orjson.loads(body)["occurredAt"].endswith("Z")
        assert parse_envelope(body, subject=event.subject) == event
    assert orjson.loads(cause.to_json())["causationId"] is None


def test_naive_timestamp_is_rejected() -> None:
    """occurredAt without a timezone is not RFC 3339 and is rejected."""
    with pytest.raises(InvalidEnvelopeError):
        parse_envelope(_body(occurredAt="2025-03-01T12:00:00"))


def test_nak_delay_grows_with_deliveries_and_is_capped() -> None:
    """Each delay lies in [ceiling/2, ceiling] with ceiling = min(cap, base*2^(n-1))."""
    base, cap = 0.5, 30.0
    for delivered in range(1, 15):
        ceiling = min(cap, base * 2 ** (delivered - 1))
        for _ in range(20):
            delay = nak_delay(delivered, base=base, cap=cap)
            assert ceiling / 2 <= delay <= ceiling
    # the lowest possible delay after 4 deliveries beats the highest after 1
    assert min(nak_delay(4, base=base, cap=cap) for _ in range(50)) > max(
        nak_delay(1, base=base, cap=cap) for _ in range(50)
    )
    assert max(nak_delay(40, base=base, cap=cap) for _ in range(50)) <= cap


def _dead(error: str = "boom", headers: dict[str, str] | None = None) -> tuple[bytes, dict[str, str]]:
    body = _order().to_json()
    msg = dead_letter(
        body=body,
        headers=headers if headers is not None else event_headers(_order()),
        original_subject="events.order.placed.order-1.0",
        stream="EVENTS",
        stream_seq=42,
        consumer="payment-0",
        deliveries=5,
        reason="max_deliveries",
        error=error,
    )
    assert msg.body == body
    assert msg.subject == "dlq.payment-0.order.placed"
    return msg.body, msg.headers


def test_dead_letter_has_contract_headers_and_consumer_seq_msg_id() -> None:
    """A dead letter keeps the original headers, adds the Dlq-* ones, Nats-Msg-Id <consumer>:<seq>."""
    original = event_headers(_order())
    _, headers = _dead(headers=original)
    assert headers[HDR_MSG_ID] == "payment-0:42"
    assert headers[HDR_DLQ_REASON] == "max_deliveries"
    assert headers[HDR_DLQ_STREAM] == "EVENTS"
    assert headers[HDR_DLQ_STREAM_SEQ] == "42"
    assert headers[HDR_DLQ_CONSUMER] == "payment-0"
    assert headers[HDR_DLQ_DELIVERIES] == "5"
    assert headers[HDR_DLQ_ORIGINAL_SUBJECT] == "events.order.placed.order-1.0"
    assert headers["Dlq-Failed-At"].endswith("Z")
    for name in ("Event-Type", "Schema-Version", "Correlation-Id"):
        assert headers[name] == original[name]


def test_dead_letter_truncates_error_to_one_kib() -> None:
    """A long (multi-byte) error is cut to at most 1 KiB of UTF-8 and stays on one line."""
    _, headers = _dead(error="é" * 5000 + "\nsecond line")
    value = headers[HDR_DLQ_ERROR]
    assert len(value.encode()) <= MAX_ERROR_BYTES == 1024
    assert value.endswith("...")
    assert "\n" not in value
    _, short = _dead(error="line one\nline two")
    assert short[HDR_DLQ_ERROR] == "line one line two"


def test_dead_letter_rejects_unknown_reason() -> None:
    """Only the contract's reasons are allowed."""
    with pytest.raises(ValueError, match="unknown DLQ reason"):
        dead_letter(
            body=b"x",
            headers=None,
            original_subject="events.order.placed.o",
            stream="EVENTS",
            stream_seq=1,
            consumer="c-0",
            deliveries=1,
            reason="bad_luck",
            error="",
        )


def test_mermaid_graph_draws_producer_to_consumer_edges() -> None:
    """Each produced event becomes an edge to every service consuming it; dlq edges when present."""
    specs = [
        ServiceSpec.of("order", produces=["order.placed"], consumes=["payment.failed"]),
        ServiceSpec.of("payment", consumes=["order.placed"], produces=["payment.failed"]),
        ServiceSpec.of("order-status", consumes=["order.placed", "payment.failed"], partitioned=False),
        ServiceSpec.of("dlq", consumes_advisories=True),
    ]
    graph = mermaid_graph(specs).splitlines()
    assert graph[0] == "flowchart LR"
    assert "    order[order] -->|order.placed| payment[payment]" in graph
    assert "    order[order] -->|order.placed| order_status[order-status]" in graph
    assert "    payment[payment] -->|payment.failed| order[order]" in graph
    assert "    payment[payment] -->|payment.failed| order_status[order-status]" in graph
    assert sum("dead letters" in line for line in graph) == 3
    assert mermaid_graph(specs[:2]).count("dead letters") == 0


def test_publisher_refuses_undeclared_event_type() -> None:
    """A service publishing an event type it did not declare gets UndeclaredEventError."""
    publisher = Publisher(None, service="payment", produces={"payment.succeeded"})  # type: ignore[arg-type]
    cause = _order()
    allowed = caused_by(cause, "payment.succeeded", {})
    assert publisher.to_messages([allowed])[0].headers[HDR_MSG_ID] == str(allowed.event_id)
    with pytest.raises(UndeclaredEventError) as err:
        publisher.to_messages([allowed, caused_by(cause, "shipment.scheduled", {})])
    assert (err.value.service, err.value.event_type) == ("payment", "shipment.scheduled")


async def test_publisher_publish_refuses_undeclared_before_sending() -> None:
    """publish() raises before touching JetStream (js is None here and never used)."""
    publisher = Publisher(None, service="payment", produces={"payment.succeeded"})  # type: ignore[arg-type]
    with pytest.raises(UndeclaredEventError):
        await publisher.publish([_order()])


def test_same_type_events_of_one_reaction_differ_by_key() -> None:
    """Two events of one type from one reaction get distinct, still deterministic, ids with `key`."""
    from common.envelope import caused_by, new_event

    cause = new_event("order.placed", "o-1", {"orderId": "o-1"})
    first = caused_by(cause, "shipment.scheduled", {"n": 1}, key="1")
    second = caused_by(cause, "shipment.scheduled", {"n": 2}, key="2")
    assert first.event_id != second.event_id
    assert first.event_id == caused_by(cause, "shipment.scheduled", {"n": 1}, key="1").event_id
    assert caused_by(cause, "shipment.scheduled", {}).event_id != first.event_id


def test_derived_ids_are_rfc4122_uuid5() -> None:
    """`derive_event_id` computes uuid5 itself (faster); it must equal `uuid.uuid5` exactly."""
    from common.envelope import DERIVED_ID_NAMESPACE

    for cause in ("0dae9624-30ec-4f6f-9dc3-6a7e3061ee7f", "order-1", "x" * 200):
        for key in (None, "sku-1", ""):
            name = f"{cause}:payment.succeeded" + (f":{key}" if key is not None else "")
            derived = derive_event_id(cause, "payment.succeeded", key)
            assert derived == uuid.uuid5(DERIVED_ID_NAMESPACE, name)
            assert derived.version == 5


def test_event_id_str_is_computed_once_and_not_copied_stale() -> None:
    event = _order()
    assert event.event_id_str == str(event.event_id)
    assert event.event_id_str is event.event_id_str  # computed once
    other = uuid.uuid4()
    copied = event.model_copy(update={"event_id": other})
    assert copied.event_id_str == str(other)
    assert "event_id_str" not in event.model_dump()  # not a field
    assert copied != event
