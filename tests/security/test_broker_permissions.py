"""The broker enforces the generated permissions: a real 3-node cluster with `choreo nats-auth`
users, each client connected with one service's credentials."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import nats
import nats.errors
import pytest
import pytest_asyncio
from nats.aio.client import Client as NATS

from tests.cluster import RunningSystem, running_system

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(240)]

DENIED = (nats.errors.TimeoutError, asyncio.TimeoutError, nats.errors.Error)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def system(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningSystem]:
    async with running_system(tmp_path_factory.mktemp("security")) as running:
        async with httpx.AsyncClient(timeout=5) as http:
            order = {"customerId": "sec", "items": [{"sku": "sku-1", "quantity": 1, "unitPriceCents": 100}]}
            response = await http.post(f"{running.url('order')}/orders", json=order)
            assert response.status_code == 202
        yield running


class Client:
    """A connection as one user that records the server's -ERR (permission violations)."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.nc: NATS | None = None

    async def error_cb(self, exc: Exception) -> None:
        self.errors.append(str(exc))

    def violations(self) -> list[str]:
        return [e for e in self.errors if "permissions violation" in e.lower()]


async def connect_as(system: RunningSystem, user: str) -> tuple[NATS, Client]:
    client = Client()
    nc = await system.connect(user, error_cb=client.error_cb)
    return nc, client


async def wait_for_violation(client: Client, needle: str) -> list[str]:
    for _ in range(50):  # the server's -ERR arrives asynchronously
        found = [v for v in client.violations() if needle.lower() in v.lower()]  # nats-py lowercases
        if found:
            return found
        await asyncio.sleep(0.1)
    return []


async def events_count(system: RunningSystem, subject: str) -> int:
    admin = await system.admin()
    try:
        info = await admin.jetstream().stream_info("EVENTS", subjects_filter=subject)
        return sum((info.state.subjects or {}).values())
    finally:
        await admin.close()


async def test_payment_cannot_publish_a_shipment_event(system: RunningSystem) -> None:
    """payment's credentials get no PubAck for events.shipment.scheduled.x; nothing is stored."""
    nc, client = await connect_as(system, "payment")
    try:
        with pytest.raises(DENIED):
            await nc.jetstream().publish("events.shipment.scheduled.x", b"{}", timeout=2)
        assert await wait_for_violation(client, "events.shipment.scheduled.x")
    finally:
        await nc.close()
    assert await events_count(system, "events.shipment.scheduled.x.>") == 0


async def test_payment_reads_its_consumer_but_not_shippings(system: RunningSystem) -> None:
    """payment may look up payment-0 but fetching from (or inspecting) shipping-0 is refused."""
    nc, client = await connect_as(system, "payment")
    js = nc.jetstream()
    try:
        info = await js.consumer_info("EVENTS", "payment-0")
        assert info.name == "payment-0"
        sub = await js.pull_subscribe_bind("shipping-0", stream="EVENTS")
        with pytest.raises(DENIED):
            await sub.fetch(1, timeout=2)
        assert await wait_for_violation(client, "$JS.API.CONSUMER.MSG.NEXT.EVENTS.shipping-0"), client.errors
        with pytest.raises(DENIED):
            await js.consumer_info("EVENTS", "shipping-0", timeout=2)
    finally:
        await nc.close()


async def test_payment_cannot_snoop_other_users_replies(system: RunningSystem) -> None:
    """Subscribing to the shared _INBOX (where other users' fetched messages arrive) is refused."""
    nc, client = await connect_as(system, "payment")
    try:
        await nc.subscribe("_INBOX.>")
        await nc.subscribe("_INBOX_shipping.>")
        await nc.flush()
        assert await wait_for_violation(client, 'Subscription to "_INBOX.>"')
        assert await wait_for_violation(client, "_INBOX_shipping.>")
    finally:
        await nc.close()


@pytest.mark.parametrize("credentials", [{}, {"user": "payment", "pass": "wrong"}])
async def test_unauthenticated_client_is_refused(system: RunningSystem, credentials: dict[str, Any]) -> None:
    """No user, or a wrong password: every node answers CONNECT with an authorization violation.

    Spoken in the raw protocol: nats-py leaks its socket when a connect is refused."""
    for server in system.servers:
        host, port = server.removeprefix("nats://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            info = await asyncio.wait_for(reader.readline(), 5)
            assert info.startswith(b"INFO ")
            assert b'"auth_required":true' in info
            connect = {"verbose": False, "pedantic": False, "protocol": 1, **credentials}
            writer.write(b"CONNECT " + json.dumps(connect).encode() + b"\r\nPING\r\n")
            await writer.drain()
            reply = await asyncio.wait_for(reader.readline(), 5)
            assert reply.strip() == b"-ERR 'Authorization Violation'", reply
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


async def test_dlq_user_reads_what_it_must_and_nothing_more(system: RunningSystem) -> None:
    """dlq: ADVISORIES/dlq and EVENTS by sequence and dlq.> publishes are allowed; events.>,
    other consumers and consumer management are not."""
    nc, client = await connect_as(system, "dlq")
    js = nc.jetstream()
    try:
        assert (await js.consumer_info("ADVISORIES", "dlq")).name == "dlq"
        first = await js.get_msg("EVENTS", 1)
        assert first.subject is not None
        assert first.subject.startswith("events.order.placed.")
        ack = await js.publish("dlq.security-test.order.placed", b"{}", timeout=5)
        assert ack.stream == "DLQ"
        with pytest.raises(DENIED):
            await js.publish("events.order.placed.x", b"{}", timeout=2)
        assert await wait_for_violation(client, "events.order.placed.x")
        with pytest.raises(DENIED):
            await js.consumer_info("EVENTS", "payment-0", timeout=2)
        with pytest.raises(DENIED):
            await js.delete_consumer("EVENTS", "payment-0")
    finally:
        await nc.close()
    assert await events_count(system, "events.order.placed.x.>") == 0


async def test_provision_user_manages_consumers_but_publishes_no_events(system: RunningSystem) -> None:
    """provision can read stream info (it provisioned this cluster) but cannot publish events."""
    nc, client = await connect_as(system, "provision")
    js = nc.jetstream()
    try:
        assert (await js.stream_info("EVENTS")).config.num_replicas == 3
        with pytest.raises(DENIED):
            await js.publish("events.order.placed.x", b"{}", timeout=2)
        with pytest.raises(DENIED):
            await js.delete_stream("EVENTS")
        assert await wait_for_violation(client, "$JS.API.STREAM.DELETE.EVENTS")
    finally:
        await nc.close()


async def test_data_dir_credentials_are_private(system: RunningSystem) -> None:
    """The run's generated passwords live only in 0600 files under the data dir."""
    auth_dir = system.data_dir / "auth"
    files = sorted(auth_dir.glob("*.env"))
    assert {p.stem for p in files} >= {"payment", "dlq", "provision", "admin"}
    assert all(p.stat().st_mode & 0o077 == 0 for p in files)
    assert all(Path(p).stat().st_mode & 0o077 == 0 for p in system.data_dir.glob("nats-*/*.conf"))


async def test_view_reads_dead_letters_but_cannot_write_them(system: RunningSystem) -> None:
    """order-status may scan the DLQ for its trace page, and may not write other consumers' entries."""
    from common.tracing import read_dead_letters

    admin = await system.admin()
    try:
        headers = {
            "Correlation-Id": "sec-view-dlq",
            "Dlq-Reason": "invalid_json",
            "Nats-Msg-Id": "sec-view:1",
        }
        await admin.jetstream().publish("dlq.payment-0.order.placed", b"{", headers=headers)
    finally:
        await admin.close()
    nc, client = await connect_as(system, "order-status")
    js = nc.jetstream()
    try:
        found = await read_dead_letters(nc, "sec-view-dlq")
        assert len(found) == 1
        assert client.violations() == []
        with pytest.raises(DENIED):
            await js.publish("dlq.payment-0.order.placed", b"{}", timeout=2)
    finally:
        await nc.close()
