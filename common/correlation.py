"""Correlation: structlog JSON logs with the flow's ids bound per handled event.

Every line logged while an event is handled carries `correlation_id`, `causation_id`,
`event_id`, `event_type` and `service`, through contextvars, so one order can be followed
with `grep <correlationId>` across every service's logs.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import orjson
import structlog

if TYPE_CHECKING:
    from common.envelope import Envelope

__all__ = ["bind_event", "configure_logging", "get_logger"]


def _dumps(obj: Any, default: Any = None) -> str:
    return orjson.dumps(obj, default=default).decode()


class _CurrentStdout:
    """`sys.stdout` looked up at each write, so a cached logger follows a replaced stdout
    (pytest's capture, a CLI run in-process) instead of writing to a closed file."""

    def write(self, text: str) -> int:
        return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()


def configure_logging(service: str, *, level: str = "INFO") -> None:
    """JSON to stdout, one object per line; `service` is on every line of the process."""
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=_dumps),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.WriteLoggerFactory(file=_CurrentStdout()),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(service=service)


def get_logger(name: str | None = None) -> Any:
    return structlog.get_logger(name)


@contextmanager
def bind_event(envelope: Envelope, *, service: str) -> Iterator[None]:
    """Bind the event's correlation fields for every log line inside the block."""
    # bind + reset by token: half the cost of `bound_contextvars` (no copy of the context).
    tokens = structlog.contextvars.bind_contextvars(
        correlation_id=envelope.correlation_id,
        causation_id=envelope.causation_id,
        event_id=str(envelope.event_id),
        event_type=envelope.event_type,
        service=service,
    )
    try:
        yield
    finally:
        structlog.contextvars.reset_contextvars(**tokens)
