"""Where events enter: a pull request kept open on a durable consumer, messages queued as they arrive.

nats-py's `PullSubscription.fetch` costs two pull requests per call when the consumer is idle
(a `no_wait` probe, then a waiting request), a timer per message, and a round trip before
every batch. `PullFeed` keeps one waiting request open instead (`batch` messages, `expires`
seconds) and queues what the server delivers; the runner takes everything queued when it
is ready. A new request goes out as soon as the previous one is used up, expires, or is
ended by the server (status 408/409), so under load a batch never waits for a round trip,
and when idle a message is handed over the moment it arrives.

Nothing here acks: the runner settles every message it is given. To stop, the runner sets
`closing` (no new requests) and goes on taking batches until the open request is over
(`drained`, at most `expires` later); whatever is still queued at `stop()` is nak'ed.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import suppress
from typing import Final

import orjson
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from common.correlation import get_logger

__all__ = ["PullFeed"]

_STATUS: Final = "Status"
_HEARTBEAT: Final = "100"
_TIMEOUT: Final = "408"
log = get_logger("choreo.pull")


class PullFeed:
    """The messages of one durable pull consumer, as they arrive (see the module's text)."""

    def __init__(self, nc: NATS, stream: str, consumer: str, *, batch: int, expires: float) -> None:
        self._nc = nc
        self._next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._inbox = nc.new_inbox()
        self._batch = batch
        self._expires = expires
        self._queue: deque[Msg] = deque()
        self._arrived = asyncio.Event()
        self._sub: Subscription | None = None
        self._left = 0  # messages the open request may still deliver
        self._ends_at = 0.0  # when the open request is over even if no status says so
        self._pause_until = 0.0  # after an error status: no request before this
        self._requesting = False
        self.closing = False  # no new requests: the feed is being drained

    @property
    def drained(self) -> bool:
        """Closing, nothing queued, and no request open that could still deliver."""
        return self.closing and not self._queue and (self._left <= 0 or time.monotonic() >= self._ends_at)

    @property
    def queued(self) -> list[Msg]:
        """Delivered, not yet taken: their ack_wait is running (the runner's +WPI covers them)."""
        return list(self._queue)

    async def start(self) -> None:
        self._sub = await self._nc.subscribe(self._inbox, cb=self._on_message)
        await self._request_if_due()

    async def batches(self, stop: asyncio.Event, max_wait: float) -> AsyncIterator[list[Msg]]:
        """Batch after batch (an empty one at least every `max_wait` seconds) until `stop` is
        set and the open request is drained."""
        while not self.drained:
            self.closing = stop.is_set()
            yield await self.next_batch(max_wait)

    async def next_batch(self, max_wait: float) -> list[Msg]:
        """Everything queued (up to `batch`), waiting up to `max_wait` seconds for a first message."""
        await self._request_if_due()
        if not self._queue:
            self._arrived.clear()
            with suppress(TimeoutError):
                async with asyncio.timeout(max_wait):
                    await self._arrived.wait()
        count = min(len(self._queue), self._batch)
        batch = [self._queue.popleft() for _ in range(count)]
        await self._request_if_due()
        return batch

    async def stop(self) -> None:
        """Stop receiving and give back what was queued (nak: redelivered at once)."""
        if self._sub is not None:
            with suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None
        while self._queue:
            msg = self._queue.popleft()
            with suppress(Exception):
                await msg.nak()

    async def _on_message(self, msg: Msg) -> None:
        status = msg.headers.get(_STATUS) if msg.headers and not msg.data else None
        if status is None:
            self._left -= 1
            self._queue.append(msg)
            self._arrived.set()
        elif status == _HEARTBEAT:
            return
        else:  # the request is over: 408 expired, 409 (leader change, consumer deleted, ...)
            self._left = 0
            if status != _TIMEOUT:
                description = msg.headers.get("Description", "") if msg.headers else ""
                log.warning("pull request ended by the server", status=status, description=description)
                self._pause_until = time.monotonic() + self._expires
        if self._left <= 0 and self._queue_room() > 0:
            await self._request_if_due()

    def _queue_room(self) -> int:
        return 2 * self._batch - len(self._queue)

    async def _request_if_due(self) -> None:
        """Open a new request when none is open (used up, ended, or past its expiry) and the
        queue has room; at most one is open at a time."""
        now = time.monotonic()
        if self._requesting or self.closing or self._sub is None or now < self._pause_until:
            return
        if self._left > 0 and now < self._ends_at:
            return
        room = self._queue_room()
        if room <= 0:
            return
        self._requesting = True
        try:
            batch = min(self._batch, room)
            request = {"batch": batch, "expires": int(self._expires * 1e9)}
            try:
                await self._nc.publish(self._next_subject, orjson.dumps(request), reply=self._inbox)
            except Exception as exc:  # disconnected, buffer full: try again after a pause
                log.warning("pull request not sent; retrying", error=repr(exc))
                self._pause_until = now + self._expires
                return
            self._left = batch
            # A request lost with its server (a restart, a reconnect) sends no status: after
            # its expiry and a grace period, it is considered over.
            self._ends_at = now + self._expires + 1.0
        finally:
            self._requesting = False
