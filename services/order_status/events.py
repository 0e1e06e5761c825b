"""order-status: the query view. Consumes every event; each replica keeps a full copy."""

from common.declarations import ServiceSpec
from services.contract import ALL_EVENT_TYPES

SPEC = ServiceSpec.of("order-status", consumes=ALL_EVENT_TYPES, partitioned=False, http_port=8081)
