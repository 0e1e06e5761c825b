"""The service shell: wires settings, NATS, the store, the runner and the HTTP server.

    choreo serve <service>
      ├─ settings from CHOREO_* environment variables
      ├─ NATS connection (as the service's own user)
      ├─ Store (SQLite: inbox, the service's tables, outbox)
      ├─ consumer loop (Runner for EVENTS; the dlq service brings its own)
      └─ HTTP: /healthz, /readyz, /metrics and the service's API

Exit codes: 0 clean stop (SIGTERM/SIGINT, drained), 1 crash, 2 bad configuration,
75 the drain deadline passed with work still in flight.
"""

from __future__ import annotations

import asyncio
import gc
import signal
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import uvicorn
from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from pydantic import ValidationError

from common._nats import connect
from common._view import SnapshotFn, view_digest
from common.consumer import Handler, Runner, RunnerOptions
from common.correlation import configure_logging, get_logger
from common.declarations import ServiceSpec, consumer_name
from common.envelope import PayloadRegistry
from common.errors import ConfigError
from common.inbox import Store
from common.metrics import Metrics
from common.publisher import Publisher
from common.settings import RunnerSettings

__all__ = [
    "EXIT_CRASH",
    "EXIT_DRAIN_TIMEOUT",
    "EXIT_OK",
    "EXIT_USAGE",
    "ConsumerLoop",
    "ServiceContext",
    "ServiceDefinition",
    "run_service",
]

EXIT_OK: Final = 0
EXIT_CRASH: Final = 1
EXIT_USAGE: Final = 2
EXIT_DRAIN_TIMEOUT: Final = 75

log = get_logger("choreo.service")


class ConsumerLoop(Protocol):
    """Consumes until `stop` is set, finishing (and acking) the work in flight first.
    `consuming` is True while it is bound to its consumer and fetching."""

    consuming: bool

    async def run(self, stop: asyncio.Event) -> None: ...


@dataclass
class ServiceContext:
    """Everything a running service owns; handed to its hooks and HTTP routes."""

    definition: ServiceDefinition
    settings: RunnerSettings
    nc: NATS
    js: JetStreamContext
    store: Store
    publisher: Publisher
    metrics: Metrics
    registry: CollectorRegistry
    loop: ConsumerLoop | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def consumer(self) -> str:
        return consumer_name(self.definition.spec.name, self.settings.partition)


@dataclass
class ServiceDefinition:
    """A service: its declaration, reactions, tables, settings, and optional API.

    `handlers` builds the reactions from the service's settings; `api` adds routes to the
    service's FastAPI app; `on_start` runs once the store is open (seed data, for example);
    `make_loop` replaces the default EVENTS runner (the dlq service consumes ADVISORIES);
    `snapshot` (query views) reads the comparable content of the view, for
    `choreo projection rebuild --compare` and `GET /view/digest`.
    """

    spec: ServiceSpec
    payloads: PayloadRegistry
    handlers: Callable[[Any], Mapping[str, Handler]] = lambda _settings: {}
    schema: str = ""
    settings_cls: type[RunnerSettings] = RunnerSettings
    api: Callable[[FastAPI, ServiceContext], None] | None = None
    on_start: Callable[[ServiceContext], Awaitable[None]] | None = None
    make_loop: Callable[[ServiceContext], ConsumerLoop] | None = None
    title: str = ""
    snapshot: SnapshotFn | None = None


def runner_options(settings: RunnerSettings) -> RunnerOptions:
    return RunnerOptions(
        batch_size=settings.batch_size,
        ack_wait=settings.ack_wait_seconds,
        max_deliver=settings.max_deliver,
        handler_timeout=settings.handler_timeout_seconds,
        max_event_bytes=settings.max_event_bytes,
        inbox_retention_seconds=settings.inbox_retention_hours * 3600,
        log_sample=settings.log_sample,
    )


def build_app(ctx: ServiceContext) -> FastAPI:
    definition = ctx.definition
    app = FastAPI(
        title=definition.title or f"choreo {definition.spec.name}",
        version="1.0.0",
        docs_url="/docs" if definition.api else None,
        redoc_url=None,
    )

    @app.get("/healthz", tags=["operations"], summary="Alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"], summary="Connected to NATS and consuming")
    async def readyz() -> JSONResponse:
        ready = ctx.nc.is_connected and (ctx.loop is None or ctx.loop.consuming)
        return JSONResponse({"ready": ready, "nats": ctx.nc.is_connected}, status_code=200 if ready else 503)

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics")
    async def metrics() -> Response:
        return Response(generate_latest(ctx.registry), media_type=CONTENT_TYPE_LATEST)

    if definition.snapshot is not None:
        snapshot = definition.snapshot

        @app.get("/view/digest", tags=["operations"], summary="Rows and digest of the view (rebuild checks)")
        async def digest() -> dict[str, Any]:
            async with ctx.store.lock:
                return view_digest(await snapshot(ctx.store.db))

    if definition.api is not None:
        definition.api(app, ctx)
    return app


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the shell owns SIGTERM/SIGINT."""

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def load_settings(definition: ServiceDefinition) -> RunnerSettings:
    try:
        settings = definition.settings_cls()
        settings.check()
    except ValidationError as exc:
        raise ConfigError(str(exc)) from None
    return settings


async def start_context(definition: ServiceDefinition, settings: RunnerSettings) -> ServiceContext:
    """Connect, open the store, build publisher, metrics and consumer loop (not started)."""
    spec = definition.spec
    registry = CollectorRegistry()
    metrics = Metrics(registry, service=spec.name)
    nc = await connect(settings, name=f"{spec.name}-{settings.partition}", attempts=30)
    js = nc.jetstream()
    store = Store(settings.data_dir / f"{spec.name}-{settings.partition}.db", schema=definition.schema)
    await store.open()
    publisher = Publisher(js, service=spec.name, produces=spec.produces, metrics=metrics)
    ctx = ServiceContext(definition, settings, nc, js, store, publisher, metrics, registry)
    if definition.on_start is not None:
        await definition.on_start(ctx)
    if definition.make_loop is not None:
        ctx.loop = definition.make_loop(ctx)
    elif spec.consumes:
        ctx.loop = Runner(
            spec=spec,
            consumer=ctx.consumer,
            handlers=definition.handlers(settings),
            registry=definition.payloads,
            store=store,
            publisher=publisher,
            metrics=metrics,
            nc=nc,
            options=runner_options(settings),
        )
    return ctx


# The young generation is collected every 10,000 net allocations instead of 700. A service
# allocates and frees many short-lived objects per event (messages, envelopes, rows), few of
# them in cycles: at 700 the collector ran about every 30 events, about 6% of a hop's CPU.
GC_THRESHOLDS: Final = (10_000, 20, 20)


def tune_gc() -> None:
    """Once started: move everything allocated so far (imports, pydantic schemas, FastAPI)
    out of the collector's reach (`gc.freeze`), so a full collection stops walking it again
    (each one took about 35 ms), and collect the young generation less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


async def serve(definition: ServiceDefinition, settings: RunnerSettings) -> int:
    """Run until SIGTERM/SIGINT; return the process exit code."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    ctx = await start_context(definition, settings)
    tune_gc()
    port = settings.http_port if settings.http_port is not None else definition.spec.http_port
    server = _Server(
        uvicorn.Config(
            build_app(ctx), host=settings.http_host, port=port, log_config=None,
            access_log=False, lifespan="off",
        )
    )  # fmt: skip
    http = asyncio.create_task(server.serve())
    consuming = asyncio.create_task(ctx.loop.run(stop)) if ctx.loop else None
    log.info("service started", partition=settings.partition, port=port)
    code = EXIT_OK
    try:
        waiters: set[asyncio.Future[Any]] = {asyncio.ensure_future(stop.wait()), http}
        if consuming is not None:
            waiters.add(consuming)
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for task in (consuming, http):
            if task is not None and task.done() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        log.info("draining", deadline=settings.drain_timeout_seconds)
        if consuming is not None:
            try:
                await asyncio.wait_for(consuming, settings.drain_timeout_seconds)
            except TimeoutError:
                log.error("drain deadline passed with work in flight")
                code = EXIT_DRAIN_TIMEOUT
    finally:
        stop.set()
        server.should_exit = True
        await asyncio.wait({http}, timeout=5)
        await _close(ctx)
    log.info("service stopped", exit_code=code)
    return code


async def _close(ctx: ServiceContext) -> None:
    try:
        await asyncio.wait_for(ctx.nc.drain(), 5)
    except Exception as exc:
        log.warning("nats drain failed", error=str(exc))
    await ctx.store.close()


def run_service(definition: ServiceDefinition) -> int:
    """Entry point of `choreo serve <service>`."""
    try:
        settings = load_settings(definition)
    except ConfigError as exc:
        configure_logging(definition.spec.name)
        log.error("invalid configuration", error=str(exc))
        return EXIT_USAGE
    configure_logging(definition.spec.name, level=settings.log_level)
    try:
        import uvloop

        return uvloop.run(serve(definition, settings))
    except Exception:
        log.exception("service crashed")
        return EXIT_CRASH
