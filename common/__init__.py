"""Choreo: the toolkit that makes a Python service an autonomous, idempotent participant in
an event chain on NATS JetStream.

Where an event enters: `consumer.Runner`. Where it is stored: `inbox.Store` (inbox, the
service's tables, outbox, one transaction). Where it leaves: `publisher.Publisher`.
"""

from common.consumer import Handler, Runner, RunnerOptions
from common.correlation import bind_event, configure_logging, get_logger
from common.declarations import ServiceSpec, consumer_name, mermaid_graph
from common.envelope import (
    Envelope,
    Payload,
    PayloadRegistry,
    caused_by,
    derive_event_id,
    event_subject,
    new_event,
    parse_envelope,
)
from common.errors import (
    ChoreoError,
    ConfigError,
    PermanentError,
    PoisonMessageError,
    RetryableError,
    UndeclaredEventError,
)
from common.inbox import Store
from common.metrics import Metrics
from common.provision import provision
from common.publisher import Publisher, event_headers
from common.settings import ProvisionSettings, RunnerSettings

__all__ = [
    "ChoreoError",
    "ConfigError",
    "Envelope",
    "Handler",
    "Metrics",
    "Payload",
    "PayloadRegistry",
    "PermanentError",
    "PoisonMessageError",
    "ProvisionSettings",
    "Publisher",
    "RetryableError",
    "Runner",
    "RunnerOptions",
    "RunnerSettings",
    "ServiceSpec",
    "Store",
    "UndeclaredEventError",
    "bind_event",
    "caused_by",
    "configure_logging",
    "consumer_name",
    "derive_event_id",
    "event_headers",
    "event_subject",
    "get_logger",
    "mermaid_graph",
    "new_event",
    "parse_envelope",
    "provision",
]
