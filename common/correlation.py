"""Correlation: structlog JSON logs with the flow's ids bound per handled event.

Every line logged while an event is handled carries `correlation_id`, `causation_id`,
`event_id`, `event_type` and `service`, through contextvars, so one order can be followed
with `grep <correlationId>` across every service's logs.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import sys
from collections.abc import MutableMapping
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Any

import orjson
import structlog

if TYPE_CHECKING:
    from common.envelope import Envelope

__all__ = ["bind_event", "configure_logging", "get_logger", "merge_correlation"]


def _dumps(obj: Any, default: Any = None) -> str:
    return orjson.dumps(obj, default=default).decode()


class _CurrentStdout:
    """The log sink: `sys.stdout`, looked up at each write (so a cached logger follows a
    replaced stdout: pytest's capture, a CLI run in-process).

    structlog flushes after every line, which is a write(2) per line with PYTHONUNBUFFERED
    (as services run). Inside an event loop the lines are instead collected and written
    together at the loop's next step: a batch of handled events costs one write, and no
    line waits longer than the work in between. Outside a loop, and at exit, lines are
    written at once."""

    def __init__(self) -> None:
        self._pending: list[str] = []
        self._scheduled_on: asyncio.AbstractEventLoop | None = None  # a write_out is due there
        atexit.register(self.write_out)

    def write(self, text: str) -> int:
        self._pending.append(text)
        return len(text)

    def flush(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.write_out()
            return
        if self._scheduled_on is not loop:  # (a loop closed before its write_out ran: anew)
            self._scheduled_on = loop
            loop.call_soon(self.write_out)

    def write_out(self) -> None:
        self._scheduled_on = None
        pending, self._pending = self._pending, []
        if pending:
            sys.stdout.write("".join(pending))
            sys.stdout.flush()


_SINK = _CurrentStdout()


def configure_logging(service: str, *, level: str = "INFO") -> None:
    """JSON to stdout, one object per line; `service` is on every line of the process."""
    structlog.configure(
        processors=[
            merge_correlation,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=_dumps),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.WriteLoggerFactory(file=_SINK),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(service=service)


def get_logger(name: str | None = None) -> Any:
    return structlog.get_logger(name)


# The fields of the event being handled: one context variable for all of them, set and reset
# once per event (binding five structlog contextvars cost more than handling some events).
_EVENT: ContextVar[dict[str, Any] | None] = ContextVar("choreo_event", default=None)


def merge_correlation(
    logger: Any, method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """The structlog processor adding the handled event's fields, then the bound contextvars
    (a keyword of the call wins over both, the event's fields over the contextvars)."""
    fields = _EVENT.get()
    if fields is not None:
        for key, value in fields.items():
            event_dict.setdefault(key, value)
    return structlog.contextvars.merge_contextvars(logger, method, event_dict)


class bind_event:
    """`with bind_event(envelope, service=...)`: every log line inside the block carries the
    event's correlation fields."""

    __slots__ = ("_fields", "_token")

    def __init__(self, envelope: Envelope, *, service: str) -> None:
        self._fields = {
            "correlation_id": envelope.correlation_id,
            "causation_id": envelope.causation_id,
            "event_id": envelope.event_id_str,
            "event_type": envelope.event_type,
            "service": service,
        }
        self._token: Token[dict[str, Any] | None] | None = None

    def __enter__(self) -> None:
        self._token = _EVENT.set(self._fields)

    def __exit__(self, *exc: object) -> None:
        if self._token is not None:
            _EVENT.reset(self._token)
