"""The consumer runner: pull, handle in one transaction, publish the outbox, then ack.

    batch (PullFeed) ─► for each message (SAVEPOINT):
                     size / JSON / envelope / subject / payload checks ── poison ─► DLQ, +TERM
                     inbox insert ── conflict ─► duplicate (skip handler), ack
                     handler(event, payload, db) ─► produced events
                     PermanentError ─► DLQ, +TERM     other errors ─► nak(backoff)
                   produced events into the outbox (one statement for the batch)
                   COMMIT ─► publish them + dead letters (pipelined) ─► ack / +TERM / nak
                   (the sent outbox rows are deleted in the next batch's transaction)

Batches of first deliveries overlap by one stage: batch N+1 is handled and committed while
batch N waits for its PubAcks; N is acked before N+1 is published. Redeliveries are handled
one at a time, after everything before them is acked (see `process_batch`).

Nothing is acked before its effects are committed and the events it caused are stored in
JetStream. A crash anywhere means redelivery; the inbox recognises it, the outbox is
flushed again (JetStream de-duplicates by eventId), and the message is acked.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import aiosqlite
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from common.correlation import bind_event, get_logger
from common.declarations import EVENTS_STREAM, ServiceSpec
from common.dlq import REASON_MAX_DELIVERIES, dead_letter
from common.envelope import Envelope, Payload, PayloadRegistry, parse_envelope
from common.errors import PayloadTooLargeError, PoisonMessageError, UndeclaredEventError
from common.inbox import Store, flush_outbox
from common.metrics import (
    OUTCOME_DEAD_LETTERED,
    OUTCOME_DUPLICATE,
    OUTCOME_PROCESSED,
    OUTCOME_RETRIED,
    Metrics,
)
from common.publisher import HDR_MSG_ID, OutgoingMessage, Publisher, to_message
from common.pull import PullFeed

__all__ = ["Handler", "Runner", "RunnerOptions", "nak_delay"]

Handler = Callable[[Envelope, Any, aiosqlite.Connection], Awaitable[Sequence[Envelope]]]
"""A reaction: (event, typed payload, db in the batch transaction) -> events it produces.
It must not ack, publish or commit: the runner does, in that order."""

UNKNOWN_TYPE: Final = "unknown.unknown"
# TEST-ONLY: `CHOREO_UNSAFE_DISABLE_INBOX=1` treats every event as new (the inbox never says
# duplicate). It exists so the chaos suite's control run can prove its checks catch a broken
# build; never set it anywhere else.
UNSAFE_DISABLE_INBOX_ENV: Final = "CHOREO_UNSAFE_DISABLE_INBOX"
log = get_logger("choreo.consumer")


@dataclass(frozen=True)
class RunnerOptions:
    batch_size: int = 256
    fetch_timeout: float = 1.0
    ack_wait: float = 30.0
    max_deliver: int = 5
    handler_timeout: float = 10.0
    max_event_bytes: int = 65536
    inbox_retention_seconds: float = 7 * 86400.0
    prune_every_seconds: float = 600.0
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    # Fraction of "event handled" lines logged (warnings, errors and duplicates always are).
    log_sample: float = 1.0


def nak_delay(num_delivered: int, *, base: float, cap: float) -> float:
    """Exponential backoff with full jitter in its upper half, from the delivery count."""
    ceiling = min(cap, base * 2 ** max(0, num_delivered - 1))
    return float(ceiling / 2 + random.uniform(0, ceiling / 2))


@dataclass(slots=True)
class _Result:
    msg: Msg
    event_type: str
    outcome: str
    dead: OutgoingMessage | None = None
    delay: float = 0.0
    reason: str = ""
    produced: Sequence[Envelope] = ()


@dataclass(slots=True)
class _Committed:
    """A batch between its commit and its acks."""

    results: list[_Result]
    outgoing: list[OutgoingMessage]
    heartbeat: asyncio.Task[None]


def _batch_failed(exc: Exception) -> None:
    # NATS unreachable or the store failing: nothing of the batch was acked, so it is
    # redelivered after ack_wait.
    log.error("batch failed; unacked messages will be redelivered", error=repr(exc))


@dataclass
class Runner:
    """Runs one durable consumer of one service: the only place events enter a service."""

    spec: ServiceSpec
    consumer: str
    handlers: Mapping[str, Handler]
    registry: PayloadRegistry
    store: Store
    publisher: Publisher
    metrics: Metrics
    nc: NATS
    options: RunnerOptions = field(default_factory=RunnerOptions)
    consuming: bool = False
    _last_prune: float = 0.0
    _feed: PullFeed | None = None
    _inbox_disabled: bool = field(default_factory=lambda: os.environ.get(UNSAFE_DISABLE_INBOX_ENV) == "1")

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set; the batch in flight is finished and acked first."""
        if self._inbox_disabled:
            log.warning(
                "UNSAFE: the inbox is disabled; duplicates WILL be handled again (test-only switch)",
                env=UNSAFE_DISABLE_INBOX_ENV,
            )
        finishing: asyncio.Task[None] | None = None
        feed = PullFeed(
            self.nc, EVENTS_STREAM, self.consumer,
            batch=self.options.batch_size, expires=self.options.fetch_timeout,
        )  # fmt: skip
        await feed.start()
        self._feed = feed
        await self.flush_outbox()  # events committed before a crash, not yet published
        self.consuming = True
        self.metrics.set_ready(True)
        log.info("consuming", consumer=self.consumer)
        try:
            # On stop: no new pull requests; the open one is drained (at most fetch_timeout).
            async for msgs in feed.batches(stop, self.options.fetch_timeout):
                try:
                    if msgs and all(m.metadata.num_delivered == 1 for m in msgs):
                        # Pipelined: this batch is handled and committed while the previous
                        # one waits for its PubAcks; then that one is acked, and this one's
                        # publish starts. At most one batch is between commit and ack.
                        committed = await self._commit_group(msgs)
                        await self._finished(finishing)
                        finishing = asyncio.create_task(self._finish(committed))
                    else:
                        await self._finished(finishing)
                        finishing = None
                        if msgs:
                            await self.process_batch(msgs)  # redeliveries: one at a time
                        else:
                            await self.flush_outbox()
                    await self._prune_if_due()
                except Exception as exc:
                    _batch_failed(exc)
                    await asyncio.sleep(self.options.fetch_timeout)
        finally:
            await self._finished(finishing)
            self.consuming = False
            self.metrics.set_ready(False)
            self._feed = None
            await feed.stop()

    @staticmethod
    async def _finished(finishing: asyncio.Task[None] | None) -> None:
        """Wait for a batch's publish and acks; a failure is logged, not raised (its
        messages stay unacked and come back)."""
        if finishing is not None:
            try:
                await finishing
            except Exception as exc:
                _batch_failed(exc)

    async def _prune_if_due(self) -> None:
        now = time.monotonic()
        if now - self._last_prune >= self.options.prune_every_seconds:
            self._last_prune = now
            pruned = await self.store.prune_inbox(older_than_seconds=self.options.inbox_retention_seconds)
            if pruned:
                log.info("inbox pruned", rows=pruned)

    async def flush_outbox(self) -> None:
        await flush_outbox(self.store, self.publisher)

    async def process_batch(self, msgs: Sequence[Msg]) -> None:
        """First deliveries as one transaction; redeliveries one by one, suspects last.

        A redelivery may be a message that crashed the process. Handling redeliveries one at
        a time, each marked as a suspect while it runs, means a crash-looping message takes
        down only itself: its batch neighbours are handled before it on the next delivery,
        and it alone reaches max_deliver (then the DLQ, through the advisory)."""
        fresh: list[Msg] = []
        redelivered: list[Msg] = []
        for msg in msgs:  # Msg.metadata parses the reply subject on every access: once here
            (redelivered if msg.metadata.num_delivered > 1 else fresh).append(msg)
        if redelivered:
            suspects = await self.store.suspects()
            redelivered.sort(key=lambda m: m.metadata.sequence.stream in suspects)
            for msg in redelivered:
                seq = msg.metadata.sequence.stream
                await self.store.mark_suspect(seq)
                await self._process_group([msg])
                await self.store.clear_suspect(seq)
        if fresh:
            await self._process_group(fresh)

    async def _process_group(self, msgs: Sequence[Msg]) -> None:
        await self._finish(await self._commit_group(msgs))

    async def _commit_group(self, msgs: Sequence[Msg]) -> _Committed:
        """Handle the messages and commit: inbox, effects and outbox rows in one transaction."""
        heartbeat = asyncio.create_task(self._heartbeat(msgs))
        try:
            async with self.store.transaction() as db:
                results = [await self._handle(db, msg) for msg in msgs]
                outgoing = [to_message(e) for r in results for e in r.produced]
                self.store.add_outbox(outgoing)
        except BaseException:
            heartbeat.cancel()
            raise
        return _Committed(results, outgoing, heartbeat)

    async def _finish(self, committed: _Committed) -> None:
        """Publish what was committed (and the dead letters), then ack / +TERM / nak."""
        try:
            await self._publish(committed.outgoing)
            dead = [r.dead for r in committed.results if r.dead is not None]
            await self.publisher.publish_messages(dead, count=False)
        finally:
            committed.heartbeat.cancel()
        await self._settle(committed.results)

    async def _publish(self, outgoing: Sequence[OutgoingMessage]) -> None:
        """Publish what the batch committed to the outbox; if the outbox may hold more (a
        start, a failed publish), flush all of it instead."""
        if self.store.outbox_backlog:
            await self.flush_outbox()
            return
        try:
            await self.publisher.publish_messages(outgoing)
        except BaseException:
            self.store.outbox_backlog = True
            raise
        self.store.mark_sent([m.headers[HDR_MSG_ID] for m in outgoing])

    async def _heartbeat(self, msgs: Sequence[Msg]) -> None:
        """Tell the server a long batch, and what is queued behind it, is still being worked
        on (`+WPI`)."""
        while True:
            await asyncio.sleep(self.options.ack_wait / 3)
            queued = self._feed.queued if self._feed is not None else []
            for msg in [*msgs, *queued]:
                await msg.in_progress()

    async def _settle(self, results: Sequence[_Result]) -> None:
        for r in results:
            if r.outcome in (OUTCOME_PROCESSED, OUTCOME_DUPLICATE):
                await r.msg.ack()
            elif r.outcome == OUTCOME_RETRIED:
                await r.msg.nak(delay=r.delay)
            elif r.reason == REASON_MAX_DELIVERIES:
                # The last delivery failed: the entry is written; the nak lets the server
                # hit max_deliver and emit its advisory (the dlq service's copy dedups).
                await r.msg.nak()
            else:
                await self.nc.publish(r.msg.reply, f"+TERM {r.reason}".encode())
            self.metrics.consumed_event(r.event_type, r.outcome)
            if r.dead is not None:
                self.metrics.dead_lettered(r.event_type, r.reason)

    async def _handle(self, db: aiosqlite.Connection, msg: Msg) -> _Result:
        try:
            if len(msg.data) > self.options.max_event_bytes:
                raise PayloadTooLargeError(f"{len(msg.data)} bytes > limit {self.options.max_event_bytes}")
            envelope = parse_envelope(msg.data, subject=msg.subject)
            payload = self.registry.decode(envelope)
        except PoisonMessageError as exc:
            event_type = _subject_type(msg.subject)
            log.warning("poison message", reason=exc.reason, error=exc.detail, subject=msg.subject)
            return self._dead(msg, event_type, exc.reason, exc.detail)
        with bind_event(envelope, service=self.spec.name):
            lag = datetime.now(UTC) - envelope.occurred_at
            self.metrics.observe_lag(envelope.event_type, max(0.0, lag.total_seconds()))
            return await self._react(db, msg, envelope, payload)

    async def _react(
        self, db: aiosqlite.Connection, msg: Msg, envelope: Envelope, payload: Payload
    ) -> _Result:
        event_type = envelope.event_type
        handler = self.handlers[event_type]
        started = time.perf_counter()
        try:
            with self.store.savepoint():
                is_new = self.store.record_inbox(envelope, time.time())
                if not is_new and not self._inbox_disabled:
                    log.info("duplicate event skipped")
                    return _Result(msg, event_type, OUTCOME_DUPLICATE)
                # asyncio.timeout, not wait_for: no task per message (3.11's wait_for makes one).
                async with asyncio.timeout(self.options.handler_timeout):
                    produced = await handler(envelope, payload, db)
                self.publisher.check_declared(produced)
        except (PoisonMessageError, UndeclaredEventError) as exc:
            reason = getattr(exc, "reason", "permanent_error")
            log.error("permanent failure", reason=reason, error=str(exc))
            return self._dead(msg, event_type, reason, str(exc))
        except Exception as exc:  # anything else is worth another try
            return self._retry(msg, event_type, exc)
        finally:
            self.metrics.observe_handler(event_type, time.perf_counter() - started)
        if self.options.log_sample >= 1.0 or random.random() < self.options.log_sample:
            log.info("event handled", produced=[e.event_type for e in produced])
        return _Result(msg, event_type, OUTCOME_PROCESSED, produced=produced)

    def _retry(self, msg: Msg, event_type: str, exc: Exception) -> _Result:
        delivered = msg.metadata.num_delivered
        error = f"{type(exc).__name__}: {exc}"
        if delivered >= self.options.max_deliver:
            log.error("retries exhausted", error=error, deliveries=delivered)
            return self._dead(msg, event_type, REASON_MAX_DELIVERIES, error)
        delay = nak_delay(delivered, base=self.options.backoff_base, cap=self.options.backoff_max)
        log.warning("retryable failure", error=error, deliveries=delivered, retry_in=delay)
        return _Result(msg, event_type, OUTCOME_RETRIED, delay=delay)

    def _dead(self, msg: Msg, event_type: str, reason: str, error: str) -> _Result:
        meta = msg.metadata
        dead = dead_letter(
            body=msg.data,
            headers=msg.headers,
            original_subject=msg.subject,
            stream=meta.stream,
            stream_seq=meta.sequence.stream,
            consumer=meta.consumer,
            deliveries=meta.num_delivered,
            reason=reason,
            error=error,
        )
        return _Result(msg, event_type, OUTCOME_DEAD_LETTERED, dead=dead, reason=reason)


def _subject_type(subject: str) -> str:
    tokens = subject.split(".")
    return f"{tokens[1]}.{tokens[2]}" if len(tokens) >= 3 else UNKNOWN_TYPE
