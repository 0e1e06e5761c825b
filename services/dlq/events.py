"""dlq: turns JetStream's MAX_DELIVERIES and MSG_TERMINATED advisories into DLQ entries."""

from common.declarations import ServiceSpec

SPEC = ServiceSpec.of("dlq", consumes_advisories=True, http_port=8085)
