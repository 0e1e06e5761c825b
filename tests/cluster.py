"""The whole system on a 3-node JetStream cluster with per-service NATS users, for the chaos,
bad-input and security suites: `common.up.Supervisor` driven in-process (as `choreo up
--cluster --auth` runs it), on free loopback ports, in a temporary data dir."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client as NATS
from nats.js.api import ConsumerInfo

from common.auth import ADMIN_USER, inbox_prefix
from common.declarations import ADVISORIES_STREAM, EVENTS_STREAM
from common.natsserver import free_port
from common.up import ServiceProcess, Supervisor, UpOptions


@dataclass
class RunningSystem:
    supervisor: Supervisor
    data_dir: Path
    said: list[str] = field(default_factory=list)

    @property
    def nats_url(self) -> str:
        return self.supervisor.nats_url

    @property
    def servers(self) -> list[str]:
        return self.nats_url.split(",")

    def processes(self, service: str | None = None) -> list[ServiceProcess]:
        return [p for p in self.supervisor.processes if service is None or p.service == service]

    def url(self, service: str, index: int = 0) -> str:
        return next(p.url for p in self.processes(service) if p.index == index)

    def password(self, user: str) -> str:
        assert self.supervisor.passwords is not None, "auth is off"
        return self.supervisor.passwords[user]

    async def connect(self, user: str | None, *, password: str | None = None, **kwargs: Any) -> NATS:
        """A client as `user` (with its own inbox prefix), or anonymous with None."""
        options: dict[str, Any] = {
            "servers": self.servers, "connect_timeout": 2, "max_reconnect_attempts": 60,
            "reconnect_time_wait": 0.5, "allow_reconnect": True,
        }  # fmt: skip
        if user is not None:
            options.update(user=user, password=password or self.password(user))
            if user != ADMIN_USER:
                options["inbox_prefix"] = inbox_prefix(user)
        options.update(kwargs)
        options.setdefault("error_cb", _quiet)  # reconnects during chaos are expected
        options.setdefault("disconnected_cb", _quiet_event)
        return await nats.connect(**options)

    async def admin(self) -> NATS:
        return await self.connect(ADMIN_USER)

    def log_tail(self, name: str, lines: int = 25) -> str:
        path = self.data_dir / "logs" / f"{name}.log"
        if not path.exists():
            return "(no log)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def count_in_logs(self, service: str, text: str) -> int:
        total = 0
        for path in (self.data_dir / "logs").glob(f"{service}-[0-9]*.log"):
            total += sum(1 for line in path.read_text(errors="replace").splitlines() if text in line)
        return total


async def _quiet(_exc: Exception) -> None:
    return None


async def _quiet_event() -> None:
    return None


async def consumer_infos(nc: NATS) -> list[ConsumerInfo]:
    js = nc.jetstream()
    infos: list[ConsumerInfo] = []
    for stream in (EVENTS_STREAM, ADVISORIES_STREAM):
        infos += await js.consumers_info(stream)
    return infos


def describe_consumers(infos: list[ConsumerInfo]) -> str:
    return "\n".join(
        f"  {i.stream_name}/{i.name}: pending={i.num_pending} ack_pending={i.num_ack_pending} "
        f"redelivered={i.num_redelivered} delivered={i.delivered.stream_seq if i.delivered else None}"
        for i in infos
    )


async def diagnostics(system: RunningSystem) -> str:
    """Consumer infos, supervisor output and log tails: printed when a suite fails."""
    parts = ["--- supervisor", *system.said[-40:], "--- consumers"]
    with contextlib.suppress(Exception):
        nc = await asyncio.wait_for(system.admin(), 10)
        try:
            parts.append(describe_consumers(await asyncio.wait_for(consumer_infos(nc), 10)))
        finally:
            await nc.close()
    for proc in system.processes():
        parts += [f"--- {proc.name} (restarts {proc.restarts})", system.log_tail(proc.name, 15)]
    for i in range(len(system.supervisor.nodes)):
        parts += [f"--- nats-server-{i}", system.log_tail(f"nats-server-{i}", 10)]
    return "\n".join(parts)


@contextlib.asynccontextmanager
async def running_system(
    data_dir: Path,
    *,
    partitions: int = 2,
    env: Mapping[str, str] | None = None,
    cluster: bool = True,
    auth: bool = True,
) -> AsyncIterator[RunningSystem]:
    """Start NATS (3 nodes), provision as `provision`, start every service as its own user."""
    said: list[str] = []
    options = UpOptions(
        data_dir=data_dir, nats_port=free_port(), partitions=partitions, order_port=free_port(),
        status_port=free_port(), demo=False, extra_env=dict(env or {}), cluster=cluster, auth=auth,
    )  # fmt: skip
    supervisor = Supervisor(options, say=said.append)
    system = RunningSystem(supervisor, data_dir, said)
    try:
        supervisor.start_nats()
        await supervisor.provision()
        await supervisor.start_services()
        await supervisor.wait_ready(timeout=90)
        yield system
    except BaseException:
        print(await diagnostics(system))
        raise
    finally:
        await supervisor.stop()


def metric_sum(text: str, name: str, **labels: str) -> float:
    """Sum of a Prometheus counter's samples whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        head, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total


def pretty(obj: Any) -> str:
    return json.dumps(obj, indent=2, default=str)
