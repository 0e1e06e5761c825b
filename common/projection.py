"""`choreo projection rebuild`: replay `EVENTS` from the start into a fresh copy of a query view.

    temporary durable consumer on EVENTS (deliver all, the view's own filters)
      ─► a Runner with the view's handlers, payloads and schema, into a new SQLite file
      ─► stop once nothing is pending or unacked ─► delete the consumer
      ─► optionally compare with the live copy: its SQLite file (a full diff of the
         snapshots) or its URL (`GET /view/digest`: row count and digest)

The view is found in the app catalog (`load_app().definition(name)`), so any service that
declares a `snapshot` and produces no events can be rebuilt. A service that produces events
is refused: replaying it would publish its reactions again (JetStream de-duplicates them only
inside the duplicate window). The temporary consumer has an inactivity threshold, so the
server removes it even if the command is killed. A poison message met during the replay is
dead-lettered as by any consumer, under the temporary consumer's name.

Exit codes: 0 rebuilt (and equal, with --compare), 1 the copies differ, 2 usage error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import sqlite3
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import aiosqlite
import httpx
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError
from prometheus_client import CollectorRegistry

from common._view import Snapshot, diff_views, view_digest
from common.consumer import Runner
from common.declarations import EVENTS_STREAM, filter_subjects
from common.errors import ConfigError
from common.inbox import Store
from common.metrics import Metrics
from common.publisher import Publisher

if TYPE_CHECKING:
    from common.service import ServiceDefinition
    from common.settings import RunnerSettings

__all__ = ["RebuildResult", "compare_with", "rebuild", "register"]

EXIT_OK: Final = 0
EXIT_DIFFERENT: Final = 1
EXIT_USAGE: Final = 2
DEFAULT_SERVICE: Final = "order-status"
REBUILD_BATCH: Final = 1024
POLL_SECONDS: Final = 0.2
# The server deletes the temporary consumer this long after the command stops using it.
INACTIVE_THRESHOLD_SECONDS: Final = 300.0
SHOWN_KEYS: Final = 5


@dataclass(frozen=True)
class RebuildResult:
    db: Path
    consumer: str
    events: int
    rows: int
    seconds: float


def check_rebuildable(definition: ServiceDefinition) -> None:
    spec = definition.spec
    if not spec.consumes or spec.consumes_advisories:
        raise ConfigError(f"{spec.name} consumes no events: nothing to rebuild")
    if spec.produces:
        raise ConfigError(f"{spec.name} produces events: only a query view can be replayed")


async def rebuild(
    definition: ServiceDefinition,
    settings: RunnerSettings,
    nc: NATS,
    *,
    db_path: Path,
    timeout: float = 600.0,
) -> RebuildResult:
    """Replay every stored event the view consumes into a new store at `db_path`."""
    from common.service import runner_options

    check_rebuildable(definition)
    js = nc.jetstream()
    if await asyncio.to_thread(db_path.exists):
        raise ConfigError(f"{db_path} exists: a rebuild writes a fresh store")
    spec = definition.spec
    name = f"{spec.name}-rebuild-{uuid.uuid4().hex[:8]}"
    await js.add_consumer(
        EVENTS_STREAM,
        ConsumerConfig(
            durable_name=name,
            description=f"temporary: rebuild of {spec.name}",
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            filter_subjects=filter_subjects(spec, settings.partition),
            ack_wait=settings.ack_wait_seconds,
            max_deliver=settings.max_deliver,
            max_ack_pending=REBUILD_BATCH * 2,
            inactive_threshold=INACTIVE_THRESHOLD_SECONDS,
        ),
    )
    store = Store(db_path, schema=definition.schema, synchronous="NORMAL")
    started = time.monotonic()
    try:
        await store.open()
        registry = CollectorRegistry()
        metrics = Metrics(registry, service=spec.name)
        options = runner_options(settings)
        runner = Runner(
            spec=spec,
            consumer=name,
            handlers=definition.handlers(settings),
            registry=definition.payloads,
            store=store,
            publisher=Publisher(js, service=spec.name, produces=spec.produces, metrics=metrics),
            metrics=metrics,
            nc=nc,
            options=dataclasses.replace(options, batch_size=REBUILD_BATCH),
        )
        stop = asyncio.Event()
        consuming = asyncio.create_task(runner.run(stop))
        try:
            await _until_drained(js, name, consuming, timeout=timeout)
        finally:
            stop.set()
            await consuming
        events = await store.inbox_size()
        rows = len(await definition.snapshot(store.db)) if definition.snapshot else events
    finally:
        await store.close()
        with contextlib.suppress(NotFoundError):
            await js.delete_consumer(EVENTS_STREAM, name)
    return RebuildResult(db_path, name, events, rows, time.monotonic() - started)


async def _until_drained(
    js: JetStreamContext, consumer: str, consuming: asyncio.Task[None], *, timeout: float
) -> None:
    """Return once the consumer has nothing pending and nothing unacked."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if consuming.done():
            consuming.result()  # the runner stopped on its own: raise its error
            raise RuntimeError("the replay stopped before the stream was drained")
        info = await js.consumer_info(EVENTS_STREAM, consumer)
        if info.num_pending == 0 and info.num_ack_pending == 0:
            return
        await asyncio.sleep(POLL_SECONDS)
    raise TimeoutError(f"replay not finished after {timeout}s")


async def _read_snapshot(definition: ServiceDefinition, path: Path) -> Snapshot:
    assert definition.snapshot is not None
    if not await asyncio.to_thread(path.exists):
        raise ConfigError(f"{path}: no such view store")
    async with aiosqlite.connect(f"file:{path}?mode=ro", uri=True) as db:
        return await definition.snapshot(db)


async def compare_with(definition: ServiceDefinition, rebuilt_db: Path, target: str) -> tuple[bool, str]:
    """Compare the rebuilt store with the live copy (a SQLite path or the view's base URL).
    Returns (equal, a human-readable summary)."""
    if definition.snapshot is None:
        raise ConfigError(f"{definition.spec.name} declares no snapshot: it cannot be compared")
    rebuilt = await _read_snapshot(definition, rebuilt_db)
    if target.startswith(("http://", "https://")):
        async with httpx.AsyncClient(timeout=30.0) as client:
            response = await client.get(f"{target.rstrip('/')}/view/digest")
            response.raise_for_status()
        live: dict[str, Any] = response.json()
        mine = view_digest(rebuilt)
        equal = mine == live
        verdict = "equal" if equal else "DIFFERENT"
        return equal, (
            f"compare      rebuilt {mine['rows']} rows (digest {mine['digest'][:12]}), "
            f"live {live.get('rows')} rows (digest {str(live.get('digest'))[:12]}): {verdict}"
        )
    diff = diff_views(rebuilt, await _read_snapshot(definition, Path(target)))
    if diff.equal:
        return True, f"compare      rebuilt and live views are equal ({len(rebuilt)} rows)"
    lines = [f"compare      DIFFERENT from {target}:"]
    for label, keys in (
        ("only in the rebuild", diff.only_rebuilt),
        ("only in the live view", diff.only_live),
        ("different", diff.different),
    ):
        if keys:
            shown = ", ".join(keys[:SHOWN_KEYS]) + (" …" if len(keys) > SHOWN_KEYS else "")
            lines.append(f"  {label}: {len(keys)} ({shown})")
    return False, "\n".join(lines)


async def _run(args: argparse.Namespace, definition: ServiceDefinition, settings: RunnerSettings) -> int:
    from common._nats import connect

    nc = await connect(settings, name=f"{definition.spec.name}-rebuild", attempts=10)
    try:
        result = await rebuild(definition, settings, nc, db_path=args.db, timeout=args.timeout)
    finally:
        await nc.close()
    print(
        f"rebuilt      {definition.spec.name} from {EVENTS_STREAM}: {result.events} events, "
        f"{result.rows} rows in {result.seconds:.1f}s -> {result.db}",
        flush=True,
    )
    if args.compare is None:
        return EXIT_OK
    equal, summary = await compare_with(definition, result.db, args.compare)
    print(summary, flush=True)
    return EXIT_OK if equal else EXIT_DIFFERENT


def _rebuild_command(args: argparse.Namespace) -> int:
    from common.app import load_app
    from common.correlation import configure_logging
    from common.service import load_settings

    app = load_app()
    if args.service not in app.SERVICES:
        print(f"unknown service {args.service!r}; one of: {', '.join(app.SERVICES)}", file=sys.stderr)
        return EXIT_USAGE
    definition = app.definition(args.service)
    configure_logging(f"{args.service}-rebuild", level=args.log_level)
    try:
        check_rebuildable(definition)
        if args.compare is not None and definition.snapshot is None:
            raise ConfigError(f"{args.service} declares no snapshot: --compare is not possible")
        settings = load_settings(definition)
        if args.nats_url:
            settings = settings.model_copy(update={"nats_url": args.nats_url})
        if args.db is None:
            stamp = time.strftime("%Y%m%dT%H%M%S")
            args.db = Path(".data") / "rebuild" / f"{args.service}-{stamp}-{uuid.uuid4().hex[:6]}.db"
        return asyncio.run(_run(args, definition, settings))
    except (ConfigError, sqlite3.Error, httpx.HTTPError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE


def register(subparsers: Any) -> None:
    projection = subparsers.add_parser("projection", help="query views: rebuild from EVENTS")
    sub = projection.add_subparsers(dest="projection_command", required=True)
    cmd = sub.add_parser("rebuild", help="replay EVENTS from the start into a fresh store")
    cmd.add_argument("--service", default=DEFAULT_SERVICE, help="the view to rebuild (default order-status)")
    cmd.add_argument("--db", type=Path, help="the new store (default: a new file under .data/rebuild/)")
    cmd.add_argument(
        "--compare",
        metavar="URL_OR_DBPATH",
        help="the live view's base URL or SQLite file; exit 1 if they differ",
    )
    cmd.add_argument("--nats-url", help="NATS to read from (default: CHOREO_NATS_URL)")
    cmd.add_argument("--timeout", type=float, default=600.0, help="give up after this many seconds")
    cmd.add_argument("--log-level", default="WARNING", help="log level of the replay (JSON on stdout)")
    cmd.set_defaults(func=_rebuild_command)
