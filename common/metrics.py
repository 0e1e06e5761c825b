"""Prometheus metrics of shared/CONTRACT.md, on a registry the caller owns.

Labels are low-cardinality (`service`, `event_type`, `outcome`, `reason`); never an id.
"""

from __future__ import annotations

from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = [
    "OUTCOME_DEAD_LETTERED",
    "OUTCOME_DUPLICATE",
    "OUTCOME_PROCESSED",
    "OUTCOME_RETRIED",
    "Metrics",
]

OUTCOME_PROCESSED: Final = "processed"
OUTCOME_DUPLICATE: Final = "duplicate"
OUTCOME_RETRIED: Final = "retried"
OUTCOME_DEAD_LETTERED: Final = "dead_lettered"

_LATENCY_BUCKETS: Final = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
_LAG_BUCKETS: Final = (
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
)  # fmt: skip


class Metrics:
    """The contract's metrics for one service, registered on `registry`."""

    def __init__(self, registry: CollectorRegistry, *, service: str, prefix: str = "choreo") -> None:
        self.registry = registry
        self.service = service
        self.published = Counter(
            f"{prefix}_events_published", "Events published to the bus",
            ["service", "event_type"], registry=registry,
        )  # fmt: skip
        self.consumed = Counter(
            f"{prefix}_events_consumed", "Events consumed, by outcome",
            ["service", "event_type", "outcome"], registry=registry,
        )  # fmt: skip
        self.handler_duration = Histogram(
            f"{prefix}_handler_duration_seconds", "Time spent in the handler",
            ["service", "event_type"], buckets=_LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip
        self.lag = Histogram(
            f"{prefix}_event_lag_seconds", "Consume time minus the event's occurredAt",
            ["service", "event_type"], buckets=_LAG_BUCKETS, registry=registry,
        )  # fmt: skip
        self.dlq = Counter(
            f"{prefix}_dlq_events", "Messages sent to the dead letter queue",
            ["service", "event_type", "reason"], registry=registry,
        )  # fmt: skip
        # Labelled children by label values: `labels()` costs a lock and a dict build per call.
        self._children: dict[tuple[Any, ...], Any] = {}
        self.ready = Gauge(
            f"{prefix}_ready", "1 when connected to NATS and consuming",
            ["service"], registry=registry,
        )  # fmt: skip

    def _child(self, metric: Any, *values: str) -> Any:
        key = (id(metric), *values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(self.service, *values)
        return child

    def published_event(self, event_type: str, n: int = 1) -> None:
        self._child(self.published, event_type).inc(n)

    def consumed_event(self, event_type: str, outcome: str) -> None:
        self._child(self.consumed, event_type, outcome).inc()

    def observe_handler(self, event_type: str, seconds: float) -> None:
        self._child(self.handler_duration, event_type).observe(seconds)

    def observe_lag(self, event_type: str, seconds: float) -> None:
        self._child(self.lag, event_type).observe(seconds)

    def dead_lettered(self, event_type: str, reason: str) -> None:
        self.dlq.labels(self.service, event_type, reason).inc()

    def set_ready(self, ready: bool) -> None:
        self.ready.labels(self.service).set(1 if ready else 0)
