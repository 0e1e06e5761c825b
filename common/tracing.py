"""Following one flow: `choreo trace <correlationId>` and `choreo logs <correlationId>`.

    choreo trace <cid>   GET /traces/<cid> of the order-status API  ─┐
                         DLQ stream entries with Correlation-Id=<cid> ─┴─► causation tree
    choreo logs <cid>    every JSON log line with correlation_id=<cid> in <dir>/*.log, by `ts`

The tree is built from plain data (`build_tree`, `render`), so it is tested without a broker.
An event whose `causationId` is not in the trace is a missing link: it is shown as a root,
marked. A dead letter is shown under the event it holds (or that event's cause), marked with
the consumer that gave up and the `Dlq-Reason`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import httpx
import orjson

from common.dlq import HDR_DLQ_CONSUMER, HDR_DLQ_ERROR, HDR_DLQ_FAILED_AT, HDR_DLQ_REASON
from common.publisher import HDR_CAUSATION_ID, HDR_CORRELATION_ID, HDR_EVENT_TYPE

__all__ = [
    "DeadLetter",
    "Node",
    "TraceEvent",
    "build_tree",
    "gather_logs",
    "read_dead_letters",
    "register",
    "render",
]

DEFAULT_STATUS_URL: Final = "http://127.0.0.1:8081"
DEFAULT_LOG_DIR: Final = ".data/logs"
DLQ_STREAM: Final = "DLQ"
DLQ_READ_TIMEOUT_SECONDS: Final = 10.0
MISSING_LINK: Final = "!! missing link"
DEAD_LETTERED: Final = "xx dead-lettered"


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass(frozen=True)
class TraceEvent:
    """One event of a flow, as GET /traces/{correlationId} returns it."""

    event_id: str
    causation_id: str | None
    event_type: str
    service: str
    occurred_at: datetime

    @classmethod
    def from_api(cls, item: Mapping[str, Any]) -> TraceEvent:
        return cls(
            event_id=str(item["eventId"]),
            causation_id=item.get("causationId"),
            event_type=str(item["eventType"]),
            service=str(item["service"]),
            occurred_at=_time(str(item["occurredAt"])),
        )


@dataclass(frozen=True)
class DeadLetter:
    """One DLQ entry of the flow: the event (when its body parses) and why it was given up."""

    consumer: str
    reason: str
    error: str
    event_type: str
    event_id: str | None
    causation_id: str | None
    failed_at: datetime | None

    @classmethod
    def from_message(cls, headers: Mapping[str, str], body: bytes) -> DeadLetter:
        try:
            envelope = orjson.loads(body)
        except orjson.JSONDecodeError:
            envelope = None
        if not isinstance(envelope, dict):
            envelope = {}
        failed_at = headers.get(HDR_DLQ_FAILED_AT)
        return cls(
            consumer=headers.get(HDR_DLQ_CONSUMER, "?"),
            reason=headers.get(HDR_DLQ_REASON, "?"),
            error=headers.get(HDR_DLQ_ERROR, ""),
            event_type=str(envelope.get("eventType") or headers.get(HDR_EVENT_TYPE, "?")),
            event_id=envelope.get("eventId"),
            causation_id=envelope.get("causationId") or headers.get(HDR_CAUSATION_ID),
            failed_at=_time(failed_at) if failed_at else None,
        )


@dataclass
class Node:
    """A line of the tree: an event or a dead letter, with its children in time order."""

    event: TraceEvent | None = None
    dead_letter: DeadLetter | None = None
    cause: TraceEvent | None = None
    missing_cause: str | None = None
    children: list[Node] = field(default_factory=list)

    @property
    def at(self) -> datetime | None:
        if self.event is not None:
            return self.event.occurred_at
        return self.dead_letter.failed_at if self.dead_letter else None


def _sort(nodes: list[Node]) -> list[Node]:
    return sorted(nodes, key=lambda n: (n.at is None, n.at or datetime.min))


def build_tree(events: Iterable[TraceEvent], dead_letters: Iterable[DeadLetter] = ()) -> list[Node]:
    """The roots of the causation tree: first events, missing links and orphan dead letters."""
    by_id = {e.event_id: e for e in events}
    nodes = {eid: Node(event=e) for eid, e in by_id.items()}
    roots: list[Node] = []
    for eid, node in nodes.items():
        cause_id = by_id[eid].causation_id
        if cause_id is None:
            roots.append(node)
        elif cause_id in nodes and cause_id != eid:
            node.cause = by_id[cause_id]
            nodes[cause_id].children.append(node)
        else:
            node.missing_cause = cause_id
            roots.append(node)
    for letter in dead_letters:
        node = Node(dead_letter=letter)
        parent_id = next((i for i in (letter.event_id, letter.causation_id) if i in nodes), None)
        if parent_id is None:
            node.missing_cause = letter.causation_id or letter.event_id
            roots.append(node)
            continue
        node.cause = by_id[parent_id]
        nodes[parent_id].children.append(node)
    reachable = _reachable(roots)
    for eid, node in nodes.items():  # a causation cycle (corrupt data): cut it, show it anyway
        if eid not in reachable:
            if node.cause is not None:
                nodes[node.cause.event_id].children.remove(node)
            node.cause, node.missing_cause = None, by_id[eid].causation_id
            roots.append(node)
            reachable |= _reachable([node])
    for node in nodes.values():
        node.children = _sort(node.children)
    return _sort(roots)


def _reachable(roots: Iterable[Node]) -> set[str]:
    seen: set[str] = set()
    stack = list(roots)
    while stack:
        node = stack.pop()
        if node.event is not None:
            if node.event.event_id in seen:
                continue
            seen.add(node.event.event_id)
        stack.extend(node.children)
    return seen


def _latency(node: Node) -> str:
    if node.cause is None or node.at is None:
        return ""
    ms = (node.at - node.cause.occurred_at).total_seconds() * 1000
    return f"+{ms:.1f} ms" if abs(ms) < 1000 else f"+{ms / 1000:.2f} s"


def _clock(at: datetime | None) -> str:
    return at.strftime("%H:%M:%S.%f")[:-3] if at else "?"


def _columns(node: Node) -> tuple[str, str, str]:
    """(what, where, note) of one line."""
    if node.dead_letter is not None:
        letter = node.dead_letter
        note = f"{DEAD_LETTERED}: {letter.reason}" + (f" ({letter.error})" if letter.error else "")
        return f"{letter.event_type}", letter.consumer, note
    assert node.event is not None
    note = f"{MISSING_LINK}: cause {node.missing_cause} not in trace" if node.missing_cause else ""
    return node.event.event_type, node.event.service, note


def _walk(nodes: Sequence[Node], prefix: str, top: bool) -> Iterable[tuple[str, Node]]:
    for i, node in enumerate(nodes):
        last = i == len(nodes) - 1
        branch = "" if top else ("└─ " if last else "├─ ")
        yield prefix + branch, node
        more = "" if top else ("   " if last else "│  ")
        yield from _walk(node.children, prefix + more, top=False)


def render(correlation_id: str, roots: Sequence[Node]) -> str:
    """The tree as text: one line per event or dead letter, columns aligned."""
    lines = list(_walk(roots, "", top=True))
    if not lines:
        return f"trace {correlation_id}: no events"
    events = [n.event for _, n in lines if n.event is not None]
    letters = sum(1 for _, n in lines if n.dead_letter is not None)
    missing = sum(1 for _, n in lines if n.missing_cause is not None)
    head = f"trace {correlation_id}: {len(events)} events"
    if events:
        start = min(e.occurred_at for e in events)
        span = (max(e.occurred_at for e in events) - start).total_seconds() * 1000
        head += f", {span:.1f} ms from first to last, starting {start.isoformat()}"
    head += f"; {letters} dead-lettered; {missing} missing links"
    rows = []
    for prefix, node in lines:
        what, where, note = _columns(node)
        rows.append((prefix + what, where, _clock(node.at), _latency(node), note))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    out = [head]
    for row in rows:
        cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1]), row[2].ljust(widths[2])]
        cells.append(row[3].rjust(widths[3]))
        out.append("  ".join([*cells, row[4]]).rstrip())
    return "\n".join(out)


def fetch_trace(status_url: str, correlation_id: str, *, timeout: float = 5.0) -> list[TraceEvent]:
    """The flow's events from order-status; empty when it knows none (404)."""
    response = httpx.get(f"{status_url.rstrip('/')}/traces/{correlation_id}", timeout=timeout)
    if response.status_code == 404:
        return []
    response.raise_for_status()
    return [TraceEvent.from_api(item) for item in response.json()["events"]]


async def read_dead_letters(
    nc: Any, correlation_id: str, *, timeout: float = DLQ_READ_TIMEOUT_SECONDS
) -> list[DeadLetter]:
    """The DLQ entries of this flow (by their `Correlation-Id` header)."""
    from common.dlq import read_dlq

    entries = await read_dlq(nc.jetstream(), timeout=timeout)
    return [
        DeadLetter.from_message(e.headers, e.body)
        for e in entries
        if e.headers.get(HDR_CORRELATION_ID) == correlation_id
    ]


async def _dead_letters(nats_url: str | None, correlation_id: str) -> tuple[list[DeadLetter], str]:
    import nats

    from common._nats import connect_options
    from common.settings import NatsSettings

    settings = NatsSettings()
    if nats_url:
        settings = settings.model_copy(update={"nats_url": nats_url})

    async def quiet(_exc: Exception) -> None:
        return None  # a refused connection is reported once, below, not as nats-py tracebacks

    options = {
        **connect_options(settings, name="choreo-trace"),
        "allow_reconnect": False,
        "max_reconnect_attempts": 1,  # nats-py retries an initial connect forever with 0 or -1
        "error_cb": quiet,
    }
    try:
        async with asyncio.timeout(DLQ_READ_TIMEOUT_SECONDS):
            nc = await nats.connect(**options)
    except Exception as exc:
        return [], f"DLQ not read: cannot connect to {settings.nats_url} ({exc.__class__.__name__})"
    try:
        return await read_dead_letters(nc, correlation_id), ""
    finally:
        await nc.close()


def _trace(args: argparse.Namespace) -> int:
    try:
        events = fetch_trace(args.url, args.correlation_id)
    except httpx.HTTPError as exc:
        print(f"cannot read {args.url}/traces/{args.correlation_id}: {exc}", file=sys.stderr)
        return 1
    letters: list[DeadLetter] = []
    note = ""
    if not args.no_dlq:
        letters, note = asyncio.run(_dead_letters(args.nats_url, args.correlation_id))
    print(render(args.correlation_id, build_tree(events, letters)))
    if note:
        print(note, file=sys.stderr)
    return 0 if events or letters else 1


def gather_logs(log_dir: Path, correlation_id: str) -> list[tuple[str, str]]:
    """(file stem, raw line) of every JSON line of <log_dir>/*.log for this flow, by `ts`."""
    found: list[tuple[str, str, str]] = []
    for path in sorted(log_dir.glob("*.log")):
        with path.open("rb") as lines:
            for raw in lines:
                if correlation_id.encode() not in raw:
                    continue
                try:
                    record = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    continue  # not a structlog line (nats-server's own log, a traceback)
                if isinstance(record, dict) and record.get("correlation_id") == correlation_id:
                    found.append((str(record.get("ts", "")), path.stem, raw.decode().rstrip("\n")))
    found.sort(key=lambda item: item[0])
    return [(name, line) for _, name, line in found]


def _logs(args: argparse.Namespace) -> int:
    log_dir = Path(args.dir)
    if not log_dir.is_dir():
        print(f"no log directory {log_dir} (choreo up writes <data-dir>/logs)", file=sys.stderr)
        return 1
    found = gather_logs(log_dir, args.correlation_id)
    width = max((len(name) for name, _ in found), default=0) + 2
    for name, line in found:
        print(f"{f'[{name}]':<{width}} {line}")
    return 0 if found else 1


def register(subparsers: Any) -> None:
    trace = subparsers.add_parser("trace", help="one flow as a causation tree, with its dead letters")
    trace.add_argument("correlation_id", metavar="correlationId")
    trace.add_argument(
        "--url", default=DEFAULT_STATUS_URL, metavar="ORDER_STATUS_URL", help="the order-status API"
    )
    trace.add_argument("--nats-url", help="NATS for the DLQ (default: CHOREO_NATS_URL)")
    trace.add_argument("--no-dlq", action="store_true", help="do not read the DLQ stream")
    trace.set_defaults(func=_trace)
    logs = subparsers.add_parser("logs", help="one flow's JSON log lines of a local run, by time")
    logs.add_argument("correlation_id", metavar="correlationId")
    logs.add_argument("--dir", default=DEFAULT_LOG_DIR, help="the logs directory of choreo up")
    logs.set_defaults(func=_logs)
