"""Wiring of the order service."""

from common.service import ServiceDefinition
from services.contract import payload_registry
from services.order import api, handlers, store
from services.order.events import SPEC

definition = ServiceDefinition(
    spec=SPEC,
    payloads=payload_registry(SPEC.consumes),
    handlers=handlers.handlers,
    schema=store.SCHEMA,
    api=api.mount,
    title="Choreo order API",
)
