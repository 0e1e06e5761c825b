"""What a service declares, in code: the event types it consumes and produces.

Provisioning (streams, durable consumers), NATS permissions, the publisher's guard and
`choreo graph` are all derived from these declarations and nothing else.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from common.envelope import EVENT_TYPE_RE
from common.errors import ConfigError

__all__ = [
    "ADVISORIES_STREAM",
    "DLQ_STREAM",
    "EVENTS_STREAM",
    "ServiceSpec",
    "consumer_name",
    "filter_subjects",
    "mermaid_graph",
]

EVENTS_STREAM: Final = "EVENTS"
DLQ_STREAM: Final = "DLQ"
ADVISORIES_STREAM: Final = "ADVISORIES"


@dataclass(frozen=True)
class ServiceSpec:
    """One service's declaration.

    `partitioned` services own a slice of the orders (one durable consumer and one store per
    partition). Unpartitioned ones (a query view) consume every event into a full copy per
    replica. `consumes_advisories` marks the dlq service, which reads ADVISORIES, not EVENTS.
    """

    name: str
    consumes: frozenset[str] = field(default_factory=frozenset)
    produces: frozenset[str] = field(default_factory=frozenset)
    partitioned: bool = True
    http_port: int = 8080
    consumes_advisories: bool = False

    def __post_init__(self) -> None:
        for event_type in self.consumes | self.produces:
            if not EVENT_TYPE_RE.match(event_type):
                raise ConfigError(f"{self.name}: invalid event type {event_type!r}")

    @classmethod
    def of(
        cls,
        name: str,
        *,
        consumes: Iterable[str] = (),
        produces: Iterable[str] = (),
        partitioned: bool = True,
        http_port: int = 8080,
        consumes_advisories: bool = False,
    ) -> ServiceSpec:
        return cls(
            name, frozenset(consumes), frozenset(produces), partitioned, http_port,
            consumes_advisories,
        )  # fmt: skip


def consumer_name(service: str, index: int) -> str:
    """Durable consumer of a service's partition (or view replica): `<service>-<index>`."""
    return f"{service}-{index}"


def filter_subjects(spec: ServiceSpec, partition: int) -> list[str]:
    """Stored (partition-tagged) subjects a consumer of `spec` for `partition` receives."""
    token = str(partition) if spec.partitioned else "*"
    return [f"events.{event_type}.*.{token}" for event_type in sorted(spec.consumes)]


def mermaid_graph(specs: Iterable[ServiceSpec]) -> str:
    """The event flow as a Mermaid diagram: service -->|event| service."""
    specs = list(specs)
    lines = ["flowchart LR"]
    for producer in specs:
        for event_type in sorted(producer.produces):
            consumers = [s.name for s in specs if event_type in s.consumes]
            for consumer in consumers:
                lines.append(f"    {_node(producer.name)} -->|{event_type}| {_node(consumer)}")
    if any(s.consumes_advisories for s in specs):
        for spec in specs:
            if spec.consumes and not spec.consumes_advisories:
                lines.append(f"    {_node(spec.name)} -.->|dead letters| DLQ_STREAM[(DLQ stream)]")
    return "\n".join(lines)


def _node(name: str) -> str:
    return f"{name.replace('-', '_')}[{name}]"
