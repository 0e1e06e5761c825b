"""`choreo dlq` on a real nats-server: entries are written as the runner writes them
(common.dlq.dead_letter), then listed, shown, replayed and purged through the CLI entry point."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import nats
import orjson
import pytest

from common.cli import main
from common.dlq import dead_letter
from common.dlqtool import parse_since, replay_subject
from common.natsserver import NatsServer
from common.provision import provision
from common.settings import ProvisionSettings

OLD = datetime.now(UTC) - timedelta(days=2)


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[NatsServer]:
    running = NatsServer(store_dir=tmp_path / "js", log_file=tmp_path / "nats.log").start()
    monkeypatch.setenv("CHOREO_NATS_URL", running.url)
    asyncio.run(_provision(running.url))
    yield running
    running.stop()


async def _provision(url: str) -> None:
    nc = await nats.connect(url)
    await provision(nc.jetstream(), [], ProvisionSettings(nats_url=url))
    await nc.close()


def _event(order_id: str) -> tuple[bytes, dict[str, str]]:
    event_id = str(uuid.uuid4())
    body = {
        "eventId": event_id, "eventType": "order.placed", "schemaVersion": "1.0.0",
        "occurredAt": "2026-01-01T00:00:00Z", "aggregateId": order_id, "correlationId": event_id,
        "causationId": None, "payload": {"orderId": order_id},
    }  # fmt: skip
    headers = {"Nats-Msg-Id": event_id, "Event-Type": "order.placed", "Correlation-Id": event_id}
    return orjson.dumps(body), headers


def _write(url: str, rows: list[dict[str, Any]]) -> list[int]:
    """Store events in EVENTS and their dead letters in DLQ; return the DLQ sequences."""

    async def run() -> list[int]:
        nc = await nats.connect(url)
        js = nc.jetstream()
        seqs = []
        for row in rows:
            ack = await js.publish(f"events.order.placed.{row['order']}", row["body"], headers=row["headers"])
            entry = dead_letter(
                body=row["body"], headers=row["headers"],
                original_subject=f"events.order.placed.{row['order']}.0", stream="EVENTS",
                stream_seq=ack.seq, consumer=row["consumer"], deliveries=row.get("deliveries", 1),
                reason=row["reason"], error=row["error"], failed_at=row.get("failed_at"),
            )  # fmt: skip
            seqs.append((await js.publish(entry.subject, entry.body, headers=entry.headers)).seq)
        await nc.close()
        return seqs

    return asyncio.run(run())


def _rows() -> list[dict[str, Any]]:
    body, headers = _event("o-1")
    return [
        {"order": "o-1", "body": body, "headers": headers, "consumer": "payment-0",
         "reason": "max_deliveries", "error": "ConnectionError: gateway down", "deliveries": 5},
        {"order": "o-2", "body": b"{broken", "headers": {"Nats-Msg-Id": "raw-2"}, "consumer": "payment-0",
         "reason": "invalid_json", "error": "body is not valid UTF-8 JSON", "failed_at": OLD},
        {"order": "o-3", "body": _event("o-3")[0], "headers": _event("o-3")[1], "consumer": "shipping-0",
         "reason": "permanent_error", "error": "no carrier for the address"},
    ]  # fmt: skip


def _events_on(url: str, subject: str) -> list[Any]:
    async def run() -> list[Any]:
        nc = await nats.connect(url)
        js = nc.jetstream()
        info = await js.stream_info("EVENTS")
        found = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            msg = await js.get_msg("EVENTS", seq)
            if msg.subject == subject:
                found.append(msg)
        await nc.close()
        return found

    return asyncio.run(run())


def test_ls_lists_entries_with_filters_and_since(
    server: NatsServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """`dlq ls` shows one row per entry with its columns; --consumer, --reason, --type, --since filter."""
    seqs = _write(server.url, _rows())
    assert main(["dlq", "ls"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == [
        "SEQ",
        "FAILED",
        "AT",
        "CONSUMER",
        "EVENT",
        "TYPE",
        "REASON",
        "DELIV",
        "REPLAYED",
        "ERROR",
    ]
    assert [int(line.split()[0]) for line in table[1:]] == seqs
    first = table[1].split()
    assert first[2:7] == ["payment-0", "order.placed", "max_deliveries", "5", "no"]
    assert "ConnectionError: gateway down" in table[1]

    def listed(*args: str) -> list[int]:
        assert main(["dlq", "ls", *args]) == 0
        return [int(line.split()[0]) for line in capsys.readouterr().out.splitlines()[1:]]

    assert listed("--consumer", "payment-0") == seqs[:2]
    assert listed("--reason", "permanent_error") == [seqs[2]]
    assert listed("--type", "order.placed", "--consumer", "shipping-0") == [seqs[2]]
    assert listed("--since", "1d") == [seqs[0], seqs[2]]  # o-2 failed two days ago
    assert listed("--since", (OLD - timedelta(hours=1)).isoformat()) == seqs
    assert listed("--limit", "1") == [seqs[2]]


def test_show_prints_headers_envelope_or_raw_body_and_error(
    server: NatsServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """`dlq show` pretty-prints a decodable envelope, and the raw body when it is not JSON."""
    seqs = _write(server.url, _rows())
    assert main(["dlq", "show", str(seqs[0])]) == 0
    out = capsys.readouterr().out
    assert "Dlq-Reason: max_deliveries" in out
    assert "ConnectionError: gateway down" in out
    assert 'Envelope:\n{\n  "eventId"' in out
    assert main(["dlq", "show", str(seqs[1])]) == 0
    out = capsys.readouterr().out
    assert "Body (raw, 7 bytes, not a JSON object):\n{broken" in out
    assert main(["dlq", "show", "999"]) == 1


def test_replay_republishes_to_the_original_subject_once(
    server: NatsServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """Replay publishes the unchanged body to events.<type>.<id> with a replay msg id and the
    original headers; the marker makes a second replay a no-op, and `ls` marks it replayed."""
    rows = _rows()
    seqs = _write(server.url, rows)
    assert main(["dlq", "replay", "--dry-run", str(seqs[0])]) == 0
    assert "would-replay" in capsys.readouterr().out
    assert len(_events_on(server.url, "events.order.placed.o-1.0")) == 1  # only the original

    assert main(["dlq", "replay", str(seqs[0])]) == 0
    assert "1 replayed" in capsys.readouterr().out
    assert main(["dlq", "replay", str(seqs[0])]) == 0
    assert "1 already-replayed" in capsys.readouterr().out
    _original, replayed = _events_on(server.url, "events.order.placed.o-1.0")
    assert replayed.data == rows[0]["body"]
    event_id = rows[0]["headers"]["Nats-Msg-Id"]
    assert replayed.headers["Nats-Msg-Id"] == f"{event_id}:replay:{seqs[0]}"
    assert replayed.headers["Correlation-Id"] == rows[0]["headers"]["Correlation-Id"]
    assert not any(name.startswith("Dlq-") for name in replayed.headers)

    assert main(["dlq", "ls"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4  # header + 3 entries: the marker is not an entry
    assert lines[1].split()[6] == "yes"


def test_replay_all_skips_replayed_and_old_entries(
    server: NatsServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--all` replays what matches and was not replayed; an entry older than the inbox
    retention is held back (consumers may have forgotten its id) unless forced."""
    seqs = _write(server.url, _rows())
    assert main(["dlq", "replay", str(seqs[2])]) == 0
    capsys.readouterr()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CHOREO_INBOX_RETENTION_HOURS", "24")
        assert main(["dlq", "replay", "--all", "--rate", "100/s"]) == 0
    out = capsys.readouterr().out
    assert "1 inbox-expired, 1 replayed" in out  # seqs[0] replayed, seqs[1] too old, seqs[2] skipped
    assert len(_events_on(server.url, "events.order.placed.o-3.0")) == 2
    assert main(["dlq", "replay", str(seqs[0]), "--all"]) == 1  # sequences or --all, not both


def test_purge_refuses_without_yes_and_deletes_matching_entries(
    server: NatsServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --yes purge only says how many would go; with it the matching entries are gone."""
    seqs = _write(server.url, _rows())
    assert main(["dlq", "purge", "--consumer", "payment-0"]) == 1
    assert "would delete 2 DLQ entries" in capsys.readouterr().err
    assert main(["dlq", "purge", "--consumer", "payment-0", "--yes"]) == 0
    assert "deleted 2 DLQ entries" in capsys.readouterr().out
    assert main(["dlq", "ls"]) == 0
    assert [int(line.split()[0]) for line in capsys.readouterr().out.splitlines()[1:]] == [seqs[2]]


def test_replay_subject_strips_partition_token_and_since_parses_durations() -> None:
    """The stored subject's partition token is dropped; --since takes durations and RFC 3339."""
    assert replay_subject("events.order.placed.o-1.3") == "events.order.placed.o-1"
    assert replay_subject("events.order.placed.o-1") == "events.order.placed.o-1"
    now = datetime(2026, 1, 2, tzinfo=UTC)
    assert parse_since("90m", now=now) == now - timedelta(minutes=90)
    assert parse_since("1d", now=now) == datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_since("2026-01-01T10:00:00Z") == datetime(2026, 1, 1, 10, tzinfo=UTC)
