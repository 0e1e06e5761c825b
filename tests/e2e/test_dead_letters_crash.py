"""A consumer that never acks: its process dies on the message (a crash loop) each time, so
JetStream redelivers after ack_wait until max_deliver, and only the MAX_DELIVERIES advisory,
copied by the dlq service, can dead-letter it. Own `choreo up`: the crashes restart `shop`."""

from __future__ import annotations

from pathlib import Path

import nats
import pytest

from services.dlq.advisories import TIMEOUT_ERROR
from tests.e2e.dlqharness import (
    System,
    advisories_done,
    advisory_seqs,
    entries_for,
    new_order_id,
    order_body,
    publish,
    running_system,
    settled,
)
from tests.support import wait_until

pytestmark = pytest.mark.e2e


async def test_crash_looping_consumer_reaches_the_dlq_through_the_advisory_path(tmp_path: Path) -> None:
    """The handler SIGKILLs its process on every delivery: after max_deliver (3) the dlq service
    writes one max_deliveries entry from the advisory, and the events fetched in the same batch
    (before and after it) are processed, not dead-lettered with it."""
    with running_system(tmp_path) as system:
        nc = await nats.connect(system.nats_url, connect_timeout=2, max_reconnect_attempts=3)
        js = nc.jetstream()
        try:
            before = new_order_id()
            before_seq = await publish(js, before, order_body(before))
            crasher = new_order_id()
            body = order_body(crasher, "crash")
            seq = await publish(js, crasher, body)
            after = new_order_id()
            after_seq = await publish(js, after, order_body(after))

            async def dead() -> bool:
                return bool(await entries_for(js, seq))

            await wait_until(dead, timeout=60, interval=0.25, what="entry from the advisory")

            async def quiet() -> bool:
                return await settled(js, "shop-0") and await advisories_done(js)

            await wait_until(quiet, timeout=30, what="settled")
            for neighbour in (before, after):
                await wait_until(
                    lambda n=neighbour: _charged(system, n), timeout=20, what="neighbour processed"
                )
            assert await entries_for(js, before_seq) == []
            assert await entries_for(js, after_seq) == []
            (entry,) = await entries_for(js, seq)
            assert entry.reason == "max_deliveries"
            assert entry.header("Dlq-Deliveries") == "3"
            assert entry.header("Dlq-Error") == TIMEOUT_ERROR  # written by the dlq service
            assert entry.body == (await js.get_msg("EVENTS", seq)).data
            assert seq in await advisory_seqs(js, "MAX_DELIVERIES")
            assert system.charges(crasher) == []
            assert (system.state_dir / "runs" / body["eventId"]).read_text() == "xxx"  # 3 deliveries
            assert "restart      shop-0" in system.up.output_path.read_text()
        finally:
            await nc.close()


async def _charged(system: System, order_id: str) -> bool:
    return bool(system.charges(order_id))
