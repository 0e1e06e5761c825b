"""`choreo dlq`: find, read, replay and purge dead letters.

    choreo dlq ls      [filters] [--limit N] [--json]      a table of entries
    choreo dlq show    <seq>                                headers, envelope, error
    choreo dlq replay  <seq>… | --all [filters] [--rate N/s] [--dry-run] [--force]
    choreo dlq purge   [filters] --yes

Reading: an ephemeral pull consumer on `DLQ` (no acks, started at `--since` when given,
deleted afterwards), drained until the server reports nothing pending; `show` is a get by
sequence. Replay re-publishes the original body to `events.<eventType>.<aggregateId>` (the
stored subject without its partition token) with the original headers and
`Nats-Msg-Id = <eventId or consumer:seq>:replay:<dlq seq>`, which is new to the `EVENTS`
duplicate window. The body, so the envelope `eventId`, is unchanged: a consumer that already
processed the event finds it in its inbox and skips it. Each replay is recorded as a marker
message `dlq._replays.<dlq seq>` in the `DLQ` stream, checked before replaying, so an entry is
not replayed twice by accident (`--force` replays it again, with a new message id).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import orjson
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from common.declarations import DLQ_STREAM
from common.dlq import (
    HDR_DLQ_DELIVERIES,
    HDR_DLQ_ERROR,
    HDR_DLQ_ORIGINAL_SUBJECT,
    HDR_DLQ_STREAM_SEQ,
    Entry,
    read_dlq,
)
from common.publisher import HDR_MSG_ID

__all__ = [
    "REPLAY_PREFIX",
    "Entry",
    "Filters",
    "ReplayResult",
    "parse_since",
    "purge",
    "read_entries",
    "register",
    "replay",
    "replay_subject",
]

REPLAY_PREFIX: Final = "dlq._replays"  # marker subjects: dlq._replays.<dlq seq>
HDR_REPLAY_OF: Final = "Choreo-Replay-Of"  # on a replayed event: the DLQ entry it came from
FETCH_BATCH: Final = 256
FETCH_TIMEOUT: Final = 2.0
MAX_EMPTY_FETCHES: Final = 3
DURATION_RE: Final = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400}
EXIT_OK: Final = 0
EXIT_FAILED: Final = 1


def parse_since(text: str, *, now: datetime | None = None) -> datetime:
    """`90s`, `30m`, `2h`, `7d` (ago), or an RFC 3339 timestamp."""
    match = DURATION_RE.match(text.strip())
    if match:
        ago = float(match.group(1)) * UNITS[match.group(2)]
        return (now or datetime.now(UTC)) - timedelta(seconds=ago)
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration (30m, 2h, 1d) nor RFC 3339: {text!r}") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def parse_rate(text: str) -> float:
    """`50` or `50/s`: replays per second."""
    value = text.strip().removesuffix("/s")
    try:
        rate = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"rate must be N or N/s, not {text!r}") from None
    if rate <= 0:
        raise argparse.ArgumentTypeError("rate must be positive")
    return rate


def replay_subject(original_subject: str) -> str:
    """The producer's subject `events.<a>.<v>.<id>`: the stored one minus its partition token."""
    tokens = original_subject.split(".")
    return ".".join(tokens[:4]) if len(tokens) == 5 and tokens[0] == "events" else original_subject


@dataclass(frozen=True)
class Filters:
    consumer: str | None = None
    event_type: str | None = None
    reason: str | None = None
    since: datetime | None = None

    def match(self, entry: Entry) -> bool:
        failed_at = entry.failed_at
        return (
            (self.consumer is None or entry.consumer == self.consumer)
            and (self.event_type is None or entry.event_type == self.event_type)
            and (self.reason is None or entry.reason == self.reason)
            and (self.since is None or (failed_at is not None and failed_at >= self.since))
        )

    def subject(self) -> str:
        if self.consumer and self.event_type:
            return f"dlq.{self.consumer}.{self.event_type}"
        return f"dlq.{self.consumer}.>" if self.consumer else "dlq.>"


@dataclass
class Scan:
    """What a read of the stream found: the matching entries and every replay marker."""

    entries: list[Entry] = field(default_factory=list)
    replays: dict[int, dict[str, Any]] = field(default_factory=dict)


def base_msg_id(entry: Entry) -> str:
    """The event id of a decodable envelope, else `<consumer>:<stream seq>`."""
    event_id = (entry.envelope() or {}).get("eventId")
    if isinstance(event_id, str) and event_id:
        return event_id
    return f"{entry.consumer}:{entry.header(HDR_DLQ_STREAM_SEQ)}"


def marker_subject(dlq_seq: int) -> str:
    return f"{REPLAY_PREFIX}.{dlq_seq}"


async def read_entries(js: JetStreamContext, filters: Filters = Filters()) -> Scan:
    """The entries matching `filters`, oldest first, and the replay markers."""
    scan = Scan()
    narrowed = filters.subject() != "dlq.>"  # then the markers need a read of their own
    for message in await read_dlq(js, filters.subject(), since=filters.since):
        if message.subject.startswith(REPLAY_PREFIX + "."):
            scan.replays[int(message.subject.rsplit(".", 1)[1])] = _marker_body(message.body)
        elif filters.match(message):
            scan.entries.append(message)
    if narrowed:
        for message in await read_dlq(js, f"{REPLAY_PREFIX}.>"):
            scan.replays[int(message.subject.rsplit(".", 1)[1])] = _marker_body(message.body)
    return scan


def _marker_body(data: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError:
        return {}
    return body if isinstance(body, dict) else {}


async def get_entry(js: JetStreamContext, seq: int) -> Entry:
    msg = await js.get_msg(DLQ_STREAM, seq)
    if (msg.subject or "").startswith(REPLAY_PREFIX + "."):
        raise NotFoundError(description=f"DLQ seq {seq} is a replay marker, not an entry")
    return Entry(seq, msg.subject or "", dict(msg.headers or {}), msg.data or b"", msg.time)


async def last_replay(js: JetStreamContext, dlq_seq: int) -> dict[str, Any] | None:
    try:
        marker = await js.get_last_msg(DLQ_STREAM, marker_subject(dlq_seq))
    except NotFoundError:
        return None
    return _marker_body(marker.data or b"")


@dataclass(frozen=True)
class ReplayResult:
    seq: int
    status: str  # replayed | would-replay | already-replayed | inbox-expired
    subject: str
    msg_id: str
    events_seq: int | None = None


def inbox_retention() -> timedelta:
    """How long consumers remember processed event ids (CHOREO_INBOX_RETENTION_HOURS)."""
    return timedelta(hours=float(os.environ.get("CHOREO_INBOX_RETENTION_HOURS", "168")))


async def replay(
    js: JetStreamContext, entry: Entry, *, dry_run: bool = False, force: bool = False
) -> ReplayResult:
    """Re-publish one entry's original event (see the module docstring), once."""
    subject = replay_subject(entry.header(HDR_DLQ_ORIGINAL_SUBJECT))
    previous = await last_replay(js, entry.seq)
    attempt = int((previous or {}).get("attempt", 0)) + 1
    suffix = "" if attempt == 1 else f":{attempt}"
    msg_id = f"{base_msg_id(entry)}:replay:{entry.seq}{suffix}"
    if previous is not None and not force:
        return ReplayResult(entry.seq, "already-replayed", subject, str(previous.get("msgId", "")))
    failed_at = entry.failed_at
    if not force and failed_at is not None and datetime.now(UTC) - failed_at > inbox_retention():
        # Consumers that did process this event may have pruned its id from their inbox.
        return ReplayResult(entry.seq, "inbox-expired", subject, msg_id)
    if dry_run:
        return ReplayResult(entry.seq, "would-replay", subject, msg_id)
    headers = {k: v for k, v in entry.headers.items() if not k.startswith("Dlq-")}
    headers[HDR_MSG_ID] = msg_id
    headers[HDR_REPLAY_OF] = str(entry.seq)
    ack = await js.publish(subject, entry.body, headers=headers)
    marker = {
        "dlqSeq": entry.seq, "attempt": attempt, "msgId": msg_id, "subject": subject,
        "eventsSeq": ack.seq, "forced": force and previous is not None,
        "replayedAt": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
    }  # fmt: skip
    await js.publish(
        marker_subject(entry.seq), orjson.dumps(marker), headers={HDR_MSG_ID: f"replay:{entry.seq}{suffix}"}
    )
    return ReplayResult(entry.seq, "replayed", subject, msg_id, ack.seq)


async def purge(js: JetStreamContext, entries: Iterable[Entry], replays: Iterable[int] = ()) -> int:
    """Delete entries by sequence, and the replay markers of the purged entries."""
    gone = 0
    purged = set()
    for entry in entries:
        if await js.delete_msg(DLQ_STREAM, entry.seq):
            gone += 1
            purged.add(entry.seq)
    for seq in set(replays) & purged:
        await js.purge_stream(DLQ_STREAM, subject=marker_subject(seq))
    return gone


# ---------------------------------------------------------------------------- the CLI


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def format_table(entries: Sequence[Entry], replays: dict[int, dict[str, Any]]) -> str:
    rows = [("SEQ", "FAILED AT", "CONSUMER", "EVENT TYPE", "REASON", "DELIV", "REPLAYED", "ERROR")]
    for e in entries:
        failed = e.failed_at
        rows.append(
            (
                str(e.seq),
                failed.strftime("%Y-%m-%dT%H:%M:%SZ") if failed else "?",
                e.consumer,
                e.event_type,
                e.reason,
                e.header(HDR_DLQ_DELIVERIES),
                "yes" if e.seq in replays else "no",
                _short(e.header(HDR_DLQ_ERROR), 60),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=False)) + "  " + r[-1] for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def format_entry(entry: Entry, replay_marker: dict[str, Any] | None) -> str:
    out = [f"DLQ seq {entry.seq}  subject {entry.subject}", "", "Headers:"]
    out += [f"  {k}: {v}" for k, v in sorted(entry.headers.items())]
    out += ["", "Error:", f"  {entry.header(HDR_DLQ_ERROR)}", ""]
    envelope = entry.envelope()
    if envelope is not None:
        out += ["Envelope:", orjson.dumps(envelope, option=orjson.OPT_INDENT_2).decode()]
    else:
        out += [
            f"Body (raw, {len(entry.body)} bytes, not a JSON object):",
            entry.body.decode(errors="replace"),
        ]
    out += ["", f"Replayed: {orjson.dumps(replay_marker).decode()}" if replay_marker else "Replayed: no"]
    return "\n".join(out)


def _filters(args: argparse.Namespace) -> Filters:
    return Filters(consumer=args.consumer, event_type=args.type, reason=args.reason, since=args.since)


async def _with_js(action: Any) -> int:
    from common._nats import connect
    from common.settings import NatsSettings

    nc = await connect(NatsSettings(), name="choreo-dlq", attempts=3)
    try:
        code: int = await action(nc.jetstream())
        return code
    finally:
        await nc.close()


def _ls(args: argparse.Namespace) -> int:
    async def run(js: JetStreamContext) -> int:
        scan = await read_entries(js, _filters(args))
        entries = scan.entries[-args.limit :] if args.limit else scan.entries
        if args.json:
            for e in entries:
                row = {
                    "seq": e.seq,
                    "subject": e.subject,
                    "headers": e.headers,
                    "replayed": e.seq in scan.replays,
                }
                print(orjson.dumps(row).decode())
        else:
            print(format_table(entries, scan.replays))
            if len(entries) < len(scan.entries):
                hidden = len(scan.entries) - len(entries)
                print(f"({hidden} older entries not shown; raise --limit, 0 for all)", file=sys.stderr)
        return EXIT_OK

    return asyncio.run(_with_js(run))


def _show(args: argparse.Namespace) -> int:
    async def run(js: JetStreamContext) -> int:
        try:
            entry = await get_entry(js, args.seq)
        except NotFoundError:
            print(f"no DLQ entry with seq {args.seq}", file=sys.stderr)
            return EXIT_FAILED
        print(format_entry(entry, await last_replay(js, entry.seq)))
        return EXIT_OK

    return asyncio.run(_with_js(run))


def _replay(args: argparse.Namespace) -> int:
    if bool(args.seqs) == bool(args.all):
        print("give DLQ sequence numbers or --all (with optional filters), not both", file=sys.stderr)
        return EXIT_FAILED

    async def run(js: JetStreamContext) -> int:
        if args.all:
            scan = await read_entries(js, _filters(args))
            entries = [e for e in scan.entries if args.force or e.seq not in scan.replays]
        else:
            entries = []
            for seq in args.seqs:
                try:
                    entries.append(await get_entry(js, seq))
                except NotFoundError:
                    print(f"no DLQ entry with seq {seq}", file=sys.stderr)
                    return EXIT_FAILED
        counts: dict[str, int] = {}
        for index, entry in enumerate(entries):
            if index and args.rate and not args.dry_run:
                await asyncio.sleep(1.0 / args.rate)
            result = await replay(js, entry, dry_run=args.dry_run, force=args.force)
            counts[result.status] = counts.get(result.status, 0) + 1
            print(f"{result.status:<16} dlq seq {result.seq} -> {result.subject}  msg id {result.msg_id}")
        summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "nothing to replay"
        print(summary)
        if counts.get("inbox-expired"):
            print("inbox-expired: older than CHOREO_INBOX_RETENTION_HOURS; consumers that processed the "
                  "event may no longer recognise it. Check, then use --force.")  # fmt: skip
        return EXIT_OK

    return asyncio.run(_with_js(run))


def _purge(args: argparse.Namespace) -> int:
    async def run(js: JetStreamContext) -> int:
        scan = await read_entries(js, _filters(args))
        if not args.yes:
            print(f"would delete {len(scan.entries)} DLQ entries; add --yes to delete them", file=sys.stderr)
            return EXIT_FAILED
        gone = await purge(js, scan.entries, scan.replays)
        print(f"deleted {gone} DLQ entries")
        return EXIT_OK

    return asyncio.run(_with_js(run))


def _add_filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--consumer", help="durable consumer, e.g. payment-0")
    parser.add_argument("--type", help="event type, e.g. order.placed")
    parser.add_argument("--reason", help="Dlq-Reason, e.g. max_deliveries")
    parser.add_argument(
        "--since", type=parse_since, help="failed within a duration (30m, 2h, 1d) or since RFC 3339"
    )


def register(subparsers: Any) -> None:
    """Add `choreo dlq …` to the CLI."""
    dlq = subparsers.add_parser("dlq", help="inspect, replay and purge dead letters (the DLQ stream)")
    sub = dlq.add_subparsers(dest="dlq_command", required=True)

    ls = sub.add_parser("ls", help="list entries as a table")
    _add_filters(ls)
    ls.add_argument("--limit", type=int, default=100, help="show the newest N (0: all)")
    ls.add_argument("--json", action="store_true", help="one JSON object per entry")
    ls.set_defaults(func=_ls)

    show = sub.add_parser("show", help="one entry: headers, decoded envelope, error")
    show.add_argument("seq", type=int)
    show.set_defaults(func=_show)

    rep = sub.add_parser("replay", help="re-publish original events to their subjects")
    rep.add_argument("seqs", nargs="*", type=int, metavar="SEQ")
    rep.add_argument("--all", action="store_true", help="every entry matching the filters")
    _add_filters(rep)
    rep.add_argument("--rate", type=parse_rate, help="at most N replays per second (N or N/s)")
    rep.add_argument("--dry-run", action="store_true", help="say what would be replayed")
    rep.add_argument("--force", action="store_true", help="replay entries already replayed")
    rep.set_defaults(func=_replay)

    pur = sub.add_parser("purge", help="delete matching entries")
    _add_filters(pur)
    pur.add_argument("--yes", action="store_true", help="really delete")
    pur.set_defaults(func=_purge)
