"""Wiring of the dlq service."""

from common.envelope import PayloadRegistry
from common.service import ServiceDefinition
from services.dlq.advisories import AdvisoryLoop
from services.dlq.events import SPEC

definition = ServiceDefinition(spec=SPEC, payloads=PayloadRegistry(), make_loop=AdvisoryLoop)
