"""The toy service as a real process (`python -m tests.integration.toy_service`), for the shutdown tests.

Its handler logs `handler started` and sleeps TOY_HANDLER_SLEEP seconds (default 1) per message,
so that a batch is in flight when the test sends SIGTERM.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import aiosqlite

from common import Envelope, Handler, RunnerSettings, get_logger
from common.service import ServiceDefinition, run_service
from tests.integration.toy import SCHEMA, SPEC, Behaviour, make_handler, payload_registry

log = get_logger("toy")


def handlers(settings: RunnerSettings) -> Mapping[str, Handler]:
    charge = make_handler(Behaviour())
    sleep = float(os.environ.get("TOY_HANDLER_SLEEP", "1.0"))

    async def slow_charge(event: Envelope, payload: Any, db: aiosqlite.Connection) -> Sequence[Envelope]:
        log.info("handler started")
        await asyncio.sleep(sleep)
        produced = await charge(event, payload, db)
        log.info("handler finished")
        return produced

    return {"order.placed": slow_charge}


def definition() -> ServiceDefinition:
    return ServiceDefinition(spec=SPEC, payloads=payload_registry(), handlers=handlers, schema=SCHEMA)


def main() -> int:
    return run_service(definition())


if __name__ == "__main__":
    sys.exit(main())
