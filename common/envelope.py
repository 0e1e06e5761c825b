"""The event envelope of shared/CONTRACT.md, its subjects, and the payload registry.

An `Envelope` is what travels on the bus. Its `payload` is kept as a plain dict; the
`PayloadRegistry` turns it into the pydantic model registered for (eventType, major).
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.alias_generators import to_camel

from common.errors import (
    ConfigError,
    InvalidEnvelopeError,
    InvalidJsonError,
    InvalidPayloadError,
    SubjectMismatchError,
    UnsupportedSchemaVersionError,
)

__all__ = [
    "EVENT_TYPE_RE",
    "Envelope",
    "Payload",
    "PayloadRegistry",
    "caused_by",
    "derive_event_id",
    "event_subject",
    "new_event",
    "parse_envelope",
    "split_subject",
]

EVENT_TYPE_RE: Final = re.compile(r"^[a-z][a-z_]*\.[a-z][a-z_]*\Z")
AGGREGATE_ID_RE: Final = re.compile(r"^[A-Za-z0-9_-]{1,128}\Z")
SEMVER_RE: Final = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)\Z")
# Namespace of derived event ids: uuid5(namespace, "<causing eventId>:<produced eventType>").
DERIVED_ID_NAMESPACE: Final = uuid.UUID("6f1c2a52-8d0e-5b7a-9c1e-3c1d0a7e4b21")
_NAMESPACE_BYTES: Final = DERIVED_ID_NAMESPACE.bytes
SUBJECT_PREFIX: Final = "events"


class _computed_once:
    """`functools.cached_property` without its per-instance lock (Python 3.11 takes one on
    every uncached read): the value is stored in the instance's `__dict__`, which shadows
    this non-data descriptor from then on. Pydantic ignores such entries."""

    def __init__(self, fn: Any) -> None:
        self._fn = fn
        self._name = fn.__name__
        self.__doc__ = fn.__doc__

    def __get__(self, obj: Any, owner: Any = None) -> Any:
        if obj is None:
            return self
        value = obj.__dict__[self._name] = self._fn(obj)
        return value


class Payload(BaseModel):
    """Base of payload models: camelCase on the wire, unknown fields ignored (newer minors)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True)


class Envelope(BaseModel):
    """One event: routing metadata plus the domain payload (kept as a dict)."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True,
        ignored_types=(_computed_once,),
    )  # fmt: skip

    event_id: uuid.UUID
    event_type: str
    schema_version: str
    occurred_at: datetime
    aggregate_id: str
    correlation_id: str = Field(min_length=1, max_length=128)
    causation_id: str | None
    payload: dict[str, Any]

    @field_validator("event_type")
    @classmethod
    def _event_type(cls, value: str) -> str:
        if not EVENT_TYPE_RE.match(value):
            raise ValueError("eventType must be two lower-case tokens '<aggregate>.<verb>'")
        return value

    @field_validator("schema_version")
    @classmethod
    def _semver(cls, value: str) -> str:
        if not SEMVER_RE.match(value):
            raise ValueError("schemaVersion must be semver MAJOR.MINOR.PATCH")
        return value

    @field_validator("aggregate_id")
    @classmethod
    def _aggregate_id(cls, value: str) -> str:
        if not AGGREGATE_ID_RE.match(value):
            raise ValueError("aggregateId must match [A-Za-z0-9_-]{1,128}")
        return value

    @field_validator("occurred_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("occurredAt must carry a timezone (RFC 3339)")
        return value.astimezone(UTC)

    @_computed_once
    def event_id_str(self) -> str:
        """`str(event_id)`, computed once: the hot path needs it for the inbox, the headers,
        the body and the log context."""
        return str(self.event_id)

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Envelope:
        copied = super().model_copy(update=update, deep=deep)
        copied.__dict__.pop("event_id_str", None)  # the copy may have another event_id
        return copied

    @property
    def major(self) -> int:
        return int(self.schema_version.split(".", 1)[0])

    @property
    def subject(self) -> str:
        return event_subject(self.event_type, self.aggregate_id)

    def to_json(self) -> bytes:
        """The wire body: camelCase JSON, UTC timestamps with a `Z`."""
        return orjson.dumps(
            {
                "eventId": self.event_id_str,
                "eventType": self.event_type,
                "schemaVersion": self.schema_version,
                "occurredAt": self.occurred_at.isoformat().replace("+00:00", "Z"),
                "aggregateId": self.aggregate_id,
                "correlationId": self.correlation_id,
                "causationId": self.causation_id,
                "payload": self.payload,
            }
        )


def event_subject(event_type: str, aggregate_id: str) -> str:
    """`events.<eventType>.<aggregateId>`, the subject producers publish to."""
    return f"{SUBJECT_PREFIX}.{event_type}.{aggregate_id}"


def split_subject(subject: str) -> tuple[str, str]:
    """(eventType, aggregateId) of an event subject, with or without a partition token."""
    tokens = subject.split(".")
    if len(tokens) not in (4, 5) or tokens[0] != SUBJECT_PREFIX:
        raise SubjectMismatchError(f"subject {subject!r} is not events.<aggregate>.<verb>.<id>")
    return f"{tokens[1]}.{tokens[2]}", tokens[3]


def derive_event_id(
    causing_event_id: uuid.UUID | str, produced_type: str, key: str | None = None
) -> uuid.UUID:
    """Deterministic id of the event a reaction produces: same cause and type, same id.
    A reaction producing several events of one type tells them apart with `key`.

    `uuid.uuid5(DERIVED_ID_NAMESPACE, name)`, computed without its intermediate objects."""
    name = f"{causing_event_id}:{produced_type}" + (f":{key}" if key is not None else "")
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + name.encode()).digest()[:16])  # noqa: S324 - RFC 4122 v5
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    return uuid.UUID(bytes=bytes(digest))


def _payload_dict(payload: BaseModel | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(payload, BaseModel):
        return payload.model_dump(by_alias=True, mode="json")
    return dict(payload)


def new_event(
    event_type: str,
    aggregate_id: str,
    payload: BaseModel | Mapping[str, Any],
    *,
    correlation_id: str | None = None,
    event_id: uuid.UUID | None = None,
    schema_version: str = "1.0.0",
    occurred_at: datetime | None = None,
) -> Envelope:
    """A root event: the first of a flow (no causation). Its correlation id defaults to its id."""
    event_id = event_id or uuid.uuid4()
    return Envelope(
        event_id=event_id,
        event_type=event_type,
        schema_version=schema_version,
        occurred_at=occurred_at or datetime.now(UTC),
        aggregate_id=aggregate_id,
        correlation_id=correlation_id or str(event_id),
        causation_id=None,
        payload=_payload_dict(payload),
    )


def caused_by(
    cause: Envelope,
    event_type: str,
    payload: BaseModel | Mapping[str, Any],
    *,
    aggregate_id: str | None = None,
    schema_version: str = "1.0.0",
    occurred_at: datetime | None = None,
    key: str | None = None,
) -> Envelope:
    """The event a reaction to `cause` produces: same correlation, causation = cause's id,
    and a deterministic id, so the same reaction always yields the same event. Give each of
    several same-type events of one reaction its own `key` (a line number, a SKU)."""
    aggregate_id = aggregate_id or cause.aggregate_id
    # The cause was validated on the way in; only the new parts are checked here, so the hot
    # path builds the envelope without a second full validation.
    if not (EVENT_TYPE_RE.match(event_type) and SEMVER_RE.match(schema_version)):
        raise ValueError(f"invalid eventType {event_type!r} or schemaVersion {schema_version!r}")
    if not AGGREGATE_ID_RE.match(aggregate_id):
        raise ValueError(f"invalid aggregateId {aggregate_id!r}")
    occurred_at = occurred_at or datetime.now(UTC)
    if occurred_at.tzinfo is None:
        raise ValueError("occurredAt must carry a timezone")
    return Envelope.model_construct(
        event_id=derive_event_id(cause.event_id_str, event_type, key),
        event_type=event_type,
        schema_version=schema_version,
        occurred_at=occurred_at.astimezone(UTC),
        aggregate_id=aggregate_id,
        correlation_id=cause.correlation_id,
        causation_id=cause.event_id_str,
        payload=_payload_dict(payload),
    )


def parse_envelope(data: bytes, *, subject: str | None = None) -> Envelope:
    """Decode and validate a message body; raise the poison error that names what is wrong."""
    try:
        envelope = Envelope.model_validate_json(data)  # the fast path: one pass from bytes
    except ValidationError:
        envelope = _classify(data)  # re-read only to name the failure precisely
    if subject is not None:
        _check_subject(envelope, subject)
    return envelope


def _classify(data: bytes) -> Envelope:
    try:
        raw = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidJsonError(f"body is not valid UTF-8 JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise InvalidEnvelopeError(f"body is a JSON {type(raw).__name__}, not an object")
    try:
        return Envelope.model_validate(raw)
    except ValidationError as exc:
        raise InvalidEnvelopeError(_describe(exc)) from None


def _check_subject(envelope: Envelope, subject: str) -> None:
    event_type, aggregate_id = split_subject(subject)
    if (event_type, aggregate_id) != (envelope.event_type, envelope.aggregate_id):
        raise SubjectMismatchError(
            f"subject says {event_type}/{aggregate_id}, "
            f"body says {envelope.event_type}/{envelope.aggregate_id}"
        )


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False)[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


class PayloadRegistry:
    """Payload models per (eventType, major version).

    A consumer accepts its known majors and any minor/patch of them; a newer minor's extra
    fields are ignored by the model. An unknown major raises `UnsupportedSchemaVersionError`.
    """

    def __init__(self) -> None:
        self._models: dict[tuple[str, int], type[Payload]] = {}

    def register(self, event_type: str, major: int, model: type[Payload]) -> None:
        if not EVENT_TYPE_RE.match(event_type):
            raise ConfigError(f"invalid event type {event_type!r}")
        self._models[(event_type, major)] = model

    def event_types(self) -> set[str]:
        return {event_type for event_type, _ in self._models}

    def majors(self, event_type: str) -> list[int]:
        return sorted(major for et, major in self._models if et == event_type)

    def model_for(self, event_type: str, major: int) -> type[Payload]:
        try:
            return self._models[(event_type, major)]
        except KeyError:
            raise ConfigError(f"no payload model for {event_type} v{major}") from None

    def decode(self, envelope: Envelope) -> Payload:
        """The typed payload of `envelope`, or the poison error saying why not."""
        model = self._models.get((envelope.event_type, envelope.major))
        if model is None:
            known = self.majors(envelope.event_type)
            if not known:
                raise InvalidEnvelopeError(f"unknown eventType {envelope.event_type!r}")
            raise UnsupportedSchemaVersionError(envelope.event_type, envelope.schema_version, known)
        try:
            return model.model_validate(envelope.payload)
        except ValidationError as exc:
            raise InvalidPayloadError(_describe(exc)) from None
