"""PullFeed against a real nats-server: one waiting pull request, messages handed over as they
arrive, a request the server ends (consumer deleted) recovered, and a clean drain on stop."""

from __future__ import annotations

import asyncio
import time

import nats
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from common.declarations import EVENTS_STREAM
from common.natsserver import NatsServer
from common.provision import provision
from common.pull import PullFeed
from tests.integration.toy import CONSUMER, PROVISION, SPEC, order_placed, publish_raw
from tests.support import wait_until

EXPIRES = 0.5


async def _feed(nc: NATS, js: JetStreamContext, *, batch: int = 8) -> PullFeed:
    await provision(js, [SPEC], PROVISION)
    feed = PullFeed(nc, EVENTS_STREAM, CONSUMER, batch=batch, expires=EXPIRES)
    await feed.start()
    return feed


async def _take(feed: PullFeed, count: int, *, seconds: float = 10.0) -> list[object]:
    taken: list[object] = []
    deadline = time.monotonic() + seconds
    for _ in range(1000):
        if len(taken) >= count or time.monotonic() > deadline:
            break
        for msg in await feed.next_batch(0.2):
            await msg.ack()
            taken.append(msg)
    return taken


async def test_one_waiting_request_and_messages_as_they_arrive(nc: NATS, js: JetStreamContext) -> None:
    feed = await _feed(nc, js)
    assert await feed.next_batch(0.2) == []  # nothing yet; a request is now open
    info = await js.consumer_info(EVENTS_STREAM, CONSUMER)
    assert info.num_waiting == 1
    events = [order_placed() for _ in range(20)]
    for event in events:
        await publish_raw(js, event)
    taken = await _take(feed, 20)
    assert len(taken) == 20  # more than one request's worth (batch 8): refilled as used up
    assert sorted(m.headers["Nats-Msg-Id"] for m in taken) == sorted(e.event_id_str for e in events)  # type: ignore[attr-defined]
    await wait_until(lambda: _ack_pending(js, 0), what="every ack processed by the server")
    info = await js.consumer_info(EVENTS_STREAM, CONSUMER)
    assert info.num_waiting <= 1  # never more than one open request
    await feed.stop()


async def test_batches_never_exceed_the_batch_size(nc: NATS, js: JetStreamContext) -> None:
    await provision(js, [SPEC], PROVISION)
    for _ in range(30):
        await publish_raw(js, order_placed())
    feed = await _feed(nc, js, batch=8)
    sizes = []
    for _ in range(50):
        batch = await feed.next_batch(0.5)
        sizes.append(len(batch))
        for msg in batch:
            await msg.ack()
        if sum(sizes) >= 30:
            break
    assert sum(sizes) == 30
    assert max(sizes) <= 8
    await feed.stop()


async def test_a_request_ended_by_the_server_is_replaced(nc: NATS, js: JetStreamContext) -> None:
    """The consumer is deleted under the open request (409) and provisioned again: the feed
    pauses, then asks again and receives new messages."""
    feed = await _feed(nc, js)
    assert await feed.next_batch(0.2) == []
    await js.delete_consumer(EVENTS_STREAM, CONSUMER)
    await provision(js, [SPEC], PROVISION)
    await publish_raw(js, order_placed())
    taken = await _take(feed, 1, seconds=10.0)
    assert len(taken) == 1
    await feed.stop()


async def test_closing_drains_the_open_request(nc: NATS, js: JetStreamContext) -> None:
    """Closing: no new request; batches are taken until the open request is over, so nothing
    is left delivered-but-unacked behind the feed (the runner's stop)."""
    feed = await _feed(nc, js, batch=4)
    for _ in range(6):
        await publish_raw(js, order_placed())
    await wait_until(lambda: _queued_at_least(feed, 6), what="both requests' messages queued")
    feed.closing = True
    taken = 0
    deadline = time.monotonic() + 10
    while not feed.drained and time.monotonic() < deadline:
        for msg in await feed.next_batch(0.2):
            await msg.ack()
            taken += 1
    assert feed.drained
    assert taken == 6
    await feed.stop()
    await publish_raw(js, order_placed())  # after the drain: nobody asks for it
    await asyncio.sleep(EXPIRES)
    await wait_until(lambda: _ack_pending(js, 0), what="every ack processed by the server")
    info = await js.consumer_info(EVENTS_STREAM, CONSUMER)
    assert (info.num_waiting, info.num_pending) == (0, 1)


async def _queued_at_least(feed: PullFeed, count: int) -> bool:
    await asyncio.sleep(0.01)
    return len(feed.queued) >= count


async def _ack_pending(js: JetStreamContext, count: int) -> bool:
    return (await js.consumer_info(EVENTS_STREAM, CONSUMER)).num_ack_pending == count


async def test_a_request_that_cannot_be_sent_is_retried_not_raised(
    nc: NATS, js: JetStreamContext, nats_server: NatsServer
) -> None:
    """The connection is gone (closed under the feed): asking for a batch logs and pauses
    instead of raising out of the runner's loop."""
    await provision(js, [SPEC], PROVISION)
    own = await nats.connect(nats_server.url, connect_timeout=2, max_reconnect_attempts=0)
    feed = PullFeed(own, EVENTS_STREAM, CONSUMER, batch=4, expires=EXPIRES)
    await feed.start()
    await own.close()
    await asyncio.sleep(EXPIRES + 1.1)  # the open request counts as over
    assert await feed.next_batch(0.1) == []
    assert await feed.next_batch(0.1) == []
    await feed.stop()
