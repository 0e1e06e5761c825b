"""`choreo up`: the whole system on this machine, each service its own OS process.

    embedded nats-server (or --nats-url) ─► provision ─► one process per (service, partition)
    ─► READY <urls> ─► demo orders and their live status ─► serve until SIGINT/SIGTERM

Like a kubelet, it restarts a service process that exits unexpectedly (with a short
backoff) and says so. On SIGINT/SIGTERM it stops every process it started.

`--cluster` starts a 3-node nats-server cluster on loopback ports instead (JetStream, file
storage, `sync_interval: always`, streams at 3 replicas); `--auth` turns on one
least-privilege NATS user per service (common/auth.py), with passwords generated for this
run and written only under <data-dir>/auth (mode 0600).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import secrets
import shutil
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import httpx

from common._nats import connect
from common.app import load_app
from common.auth import PROVISION_USER, authorization_block, env_file_text, users_for
from common.natsserver import NatsServer, free_port
from common.provision import provision
from common.settings import ProvisionSettings

__all__ = ["ServiceProcess", "Supervisor", "UpOptions", "run_up"]

RESTART_BACKOFF: Final = (0.5, 1.0, 2.0, 5.0)
STOP_GRACE_SECONDS: Final = 25.0
CLUSTER_NODES: Final = 3
PROVISION_DEADLINE_SECONDS: Final = 60.0
PR_SET_PDEATHSIG: Final = 1


def _die_with_parent() -> None:
    """In the child: get SIGTERM if `choreo up` itself dies, so nothing is orphaned."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class UpOptions:
    data_dir: Path = Path(".data")
    nats_url: str | None = None
    nats_port: int = 4222
    partitions: int = 1
    view_replicas: int = 1
    order_port: int = 8080
    status_port: int = 8081
    demo: bool = True
    keep_data: bool = False
    extra_env: dict[str, str] = field(default_factory=dict)
    cluster: bool = False
    auth: bool = False


@dataclass
class ServiceProcess:
    service: str
    index: int
    port: int
    env: dict[str, str]
    log_path: Path
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0
    stopping: bool = False

    @property
    def name(self) -> str:
        return f"{self.service}-{self.index}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        log = self.log_path.open("ab")
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "common.cli", "serve", self.service,
            env=self.env, stdout=log, stderr=asyncio.subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )  # fmt: skip
        log.close()


class Supervisor:
    """Starts, watches, restarts and stops the service processes."""

    def __init__(self, options: UpOptions, *, say: Callable[[str], None] = print) -> None:
        self.options = options
        self.say = say
        self.nats: NatsServer | None = None
        self.nodes: list[NatsServer] = []  # every embedded node (one, or CLUSTER_NODES)
        self.passwords: dict[str, str] | None = None  # per NATS user, with --auth
        self.processes: list[ServiceProcess] = []
        self._watchers: list[asyncio.Task[None]] = []

    @property
    def nats_url(self) -> str:
        if self.options.nats_url:
            return self.options.nats_url
        assert self.nats is not None
        return ",".join(node.url for node in self.nodes)

    def credentials(self, user: str) -> dict[str, str]:
        """CHOREO_NATS_USER/PASSWORD of a user when --auth is on, else nothing."""
        if self.passwords is None:
            return {}
        return {"CHOREO_NATS_USER": user, "CHOREO_NATS_PASSWORD": self.passwords[user]}

    def _auth_config(self) -> str:
        if not self.options.auth:
            return ""
        users = users_for(
            load_app().specs(), partitions=self.options.partitions, view_replicas=self.options.view_replicas
        )
        self.passwords = {u.name: secrets.token_urlsafe(32) for u in users}
        auth_dir = self.options.data_dir / "auth"
        auth_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        for user, password in self.passwords.items():
            path = auth_dir / f"{user}.env"
            path.touch(mode=0o600)
            path.write_text(env_file_text(user, password))
        return authorization_block(users, self.passwords)

    def start_nats(self) -> None:
        if self.options.nats_url:
            return
        opts = self.options
        extra = self._auth_config()
        logs = opts.data_dir / "logs"
        if not opts.cluster:
            self.nodes = [
                NatsServer(
                    store_dir=opts.data_dir / "nats", port=opts.nats_port, extra_config=extra,
                    log_file=logs / "nats-server.log",
                )
            ]  # fmt: skip
        else:
            routes = [free_port() for _ in range(CLUSTER_NODES)]
            self.nodes = [
                NatsServer(
                    store_dir=opts.data_dir / f"nats-{i}" / "jetstream",
                    port=opts.nats_port if i == 0 else free_port(),
                    name=f"choreo-nats-{i}", cluster_port=routes[i],
                    routes=[p for j, p in enumerate(routes) if j != i],
                    sync_always=True, extra_config=extra,
                    log_file=logs / f"nats-server-{i}.log",
                )
                for i in range(CLUSTER_NODES)
            ]  # fmt: skip
        for node in self.nodes:
            node.start()
        self.nats = self.nodes[0]
        auth = " with per-service users" if self.passwords else ""
        self.say(f"nats-server  {self.nats_url}  ({len(self.nodes)} node(s){auth})")

    def restart_node(self, index: int) -> None:
        """SIGKILL one embedded node and start it again on the same port and store."""
        node = self.nodes[index]
        node.kill()
        node.start()

    async def provision(self) -> None:
        env = {**os.environ, **self.options.extra_env}
        settings = ProvisionSettings(
            nats_url=self.nats_url,
            partitions=self.options.partitions,
            view_replicas=self.options.view_replicas,
            ack_wait_seconds=float(env.get("CHOREO_ACK_WAIT_SECONDS", 30)),
            max_deliver=int(env.get("CHOREO_MAX_DELIVER", 5)),
            stream_replicas=CLUSTER_NODES if self.options.cluster else 1,
        )
        if self.passwords is not None:
            settings.nats_user, settings.nats_password = PROVISION_USER, self.passwords[PROVISION_USER]
        nc = await connect(settings, name="choreo-up", attempts=20)
        try:
            # A new cluster answers "JetStream temporarily unavailable" until it has a leader.
            deadline = time.monotonic() + PROVISION_DEADLINE_SECONDS
            while True:
                try:
                    report = await provision(nc.jetstream(), load_app().specs(), settings)
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.5)
        finally:
            await nc.close()
        self.say(f"provisioned  streams {', '.join(report.streams)}; {len(report.consumers)} consumers")

    def plan(self) -> list[ServiceProcess]:
        app = load_app()
        opts = self.options
        base = {**os.environ, **opts.extra_env}
        base.update(
            CHOREO_NATS_URL=self.nats_url,
            CHOREO_PARTITIONS=str(opts.partitions),
            CHOREO_DATA_DIR=str(opts.data_dir / "stores"),
            PYTHONUNBUFFERED="1",
        )
        processes = []
        for name in app.SERVICES:
            spec = app.spec(name)
            if spec.consumes_advisories:
                count = 1
            else:
                count = opts.partitions if spec.partitioned else opts.view_replicas
            for index in range(count):
                port = {("order", 0): opts.order_port, ("order-status", 0): opts.status_port}.get(
                    (name, index)
                ) or free_port()
                env = {**base, "CHOREO_PARTITION": str(index), "CHOREO_HTTP_PORT": str(port)}
                env.update(self.credentials(name))
                if not spec.partitioned:
                    env["CHOREO_PARTITIONS"] = str(max(count, 1))
                log_path = opts.data_dir / "logs" / f"{name}-{index}.log"
                processes.append(ServiceProcess(name, index, port, env, log_path))
        return processes

    async def start_services(self) -> None:
        (self.options.data_dir / "logs").mkdir(parents=True, exist_ok=True)
        self.processes = self.plan()
        for proc in self.processes:
            await proc.start()
            self._watchers.append(asyncio.create_task(self._watch(proc)))
        self.say(
            f"started      {len(self.processes)} service processes (logs in {self.options.data_dir / 'logs'})"
        )

    async def _watch(self, proc: ServiceProcess) -> None:
        """Restart a process that exits while we are not stopping it."""
        while True:
            assert proc.process is not None
            code = await proc.process.wait()
            if proc.stopping:
                return
            delay = RESTART_BACKOFF[min(proc.restarts, len(RESTART_BACKOFF) - 1)]
            proc.restarts += 1
            self.say(
                f"restart      {proc.name} exited with {code}; "
                f"restarting in {delay}s (restart #{proc.restarts})"
            )
            await asyncio.sleep(delay)
            if proc.stopping:
                return
            await proc.start()

    async def wait_ready(self, *, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=1.0) as client:
            pending = list(self.processes)
            while pending and time.monotonic() < deadline:
                still = []
                for proc in pending:
                    try:
                        ok = (await client.get(f"{proc.url}/readyz")).status_code == 200
                    except httpx.HTTPError:
                        ok = False
                    if not ok:
                        still.append(proc)
                pending = still
                if pending:
                    await asyncio.sleep(0.2)
        if pending:
            raise TimeoutError(f"not ready after {timeout}s: {', '.join(p.name for p in pending)}")

    async def stop(self) -> None:
        for proc in self.processes:
            proc.stopping = True
        for task in self._watchers:
            task.cancel()
        for proc in self.processes:
            if proc.process is not None and proc.process.returncode is None:
                proc.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for proc in self.processes:
            if proc.process is None:
                continue
            try:
                await asyncio.wait_for(proc.process.wait(), max(0.1, deadline - time.monotonic()))
            except TimeoutError:
                proc.process.kill()
                await proc.process.wait()
        for node in self.nodes:
            node.stop()
        self.say("stopped      every process choreo up started")


async def _serve(options: UpOptions) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if not options.keep_data:
        for sub in ("nats", "stores", "logs", "auth", *(f"nats-{i}" for i in range(CLUSTER_NODES))):
            shutil.rmtree(options.data_dir / sub, ignore_errors=True)
    supervisor = Supervisor(options)
    try:
        supervisor.start_nats()
        await supervisor.provision()
        await supervisor.start_services()
        await supervisor.wait_ready()
        order = f"http://127.0.0.1:{options.order_port}"
        status = f"http://127.0.0.1:{options.status_port}"
        print(f"READY order={order} order-status={status} nats={supervisor.nats_url}", flush=True)
        run_demo = getattr(load_app(), "run_demo", None)
        if options.demo and run_demo is not None:
            demo = asyncio.create_task(run_demo(order, status, stop))
            await asyncio.wait(
                {demo, asyncio.ensure_future(stop.wait())}, return_when=asyncio.FIRST_COMPLETED
            )
        print("serving      until Ctrl-C", flush=True)
        await stop.wait()
    finally:
        await supervisor.stop()
    return 0


def run_up(options: UpOptions) -> int:
    return asyncio.run(_serve(options))
