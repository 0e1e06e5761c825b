"""Errors raised by the Choreo toolkit.

    ChoreoError
    ├── ConfigError (ValueError)          bad settings or declarations
    ├── UndeclaredEventError (ValueError) publishing an event type the service did not declare
    ├── PoisonMessageError                a message that can never be processed; goes to the DLQ
    │   ├── InvalidJsonError              body is not JSON / not UTF-8            -> invalid_json
    │   ├── InvalidEnvelopeError          not an object, or an envelope field bad -> invalid_envelope
    │   ├── InvalidPayloadError           payload fails its schema                -> invalid_payload
    │   ├── UnsupportedSchemaVersionError unknown major version    -> unsupported_schema_version
    │   ├── SubjectMismatchError          subject disagrees with the body         -> subject_mismatch
    │   ├── PayloadTooLargeError          message over the size limit             -> payload_too_large
    │   └── PermanentError                raised by a handler: no retry will help -> permanent_error
    └── RetryableError                    raised by a handler: try again later (nak with backoff)

Any other exception raised by a handler is treated as retryable.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "ChoreoError",
    "ConfigError",
    "InvalidEnvelopeError",
    "InvalidJsonError",
    "InvalidPayloadError",
    "PayloadTooLargeError",
    "PermanentError",
    "PoisonMessageError",
    "RetryableError",
    "SubjectMismatchError",
    "UndeclaredEventError",
    "UnsupportedSchemaVersionError",
]


class ChoreoError(Exception):
    """Base of every error the toolkit raises."""


class ConfigError(ChoreoError, ValueError):
    """Settings or declarations are invalid."""


class UndeclaredEventError(ChoreoError, ValueError):
    """A service tried to publish an event type it did not declare in `produces`."""

    def __init__(self, service: str, event_type: str) -> None:
        super().__init__(f"service {service!r} did not declare that it produces {event_type!r}")
        self.service = service
        self.event_type = event_type


class PoisonMessageError(ChoreoError):
    """A message that will never succeed; `reason` is its contract `Dlq-Reason`."""

    reason: ClassVar[str] = "permanent_error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class InvalidJsonError(PoisonMessageError):
    """The body is not valid UTF-8 JSON."""

    reason = "invalid_json"


class InvalidEnvelopeError(PoisonMessageError):
    """The body is not a JSON object, or an envelope field is missing or invalid."""

    reason = "invalid_envelope"


class InvalidPayloadError(PoisonMessageError):
    """The payload does not match the schema of its event type and major version."""

    reason = "invalid_payload"


class UnsupportedSchemaVersionError(PoisonMessageError):
    """The schema major version is not one this consumer knows."""

    reason = "unsupported_schema_version"

    def __init__(self, event_type: str, version: str, known: list[int]) -> None:
        super().__init__(f"{event_type} schemaVersion {version}: known majors {known}")
        self.event_type = event_type
        self.version = version
        self.known = known


class SubjectMismatchError(PoisonMessageError):
    """The subject's eventType or aggregateId disagrees with the body."""

    reason = "subject_mismatch"


class PayloadTooLargeError(PoisonMessageError):
    """The message is larger than the configured limit."""

    reason = "payload_too_large"


class PermanentError(PoisonMessageError):
    """Raised by a handler when retrying cannot help (business rule, bad reference)."""

    reason = "permanent_error"


class RetryableError(ChoreoError):
    """Raised by a handler for a transient failure: the message is redelivered later."""
