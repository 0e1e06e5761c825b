"""The causation tree of `choreo trace`, built and rendered from plain data (no broker)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from common.tracing import DeadLetter, TraceEvent, build_tree, gather_logs, render

T0 = datetime(2026, 1, 2, 3, 4, 5, 0, tzinfo=UTC)


def event(eid: str, cause: str | None, etype: str, service: str, ms: float) -> TraceEvent:
    return TraceEvent(eid, cause, etype, service, T0 + timedelta(milliseconds=ms))


HAPPY = [
    event("e1", None, "order.placed", "order", 0),
    event("e2", "e1", "payment.succeeded", "payment", 10),
    event("e3", "e2", "inventory.reserved", "inventory", 15.5),
    event("e4", "e3", "shipment.scheduled", "shipping", 27),
]


def lines_of(text: str) -> list[str]:
    return text.splitlines()[1:]  # without the header


def test_happy_flow_renders_as_a_chain_with_per_hop_latency() -> None:
    """Each event sits under its cause, with type, service, time and the delay since its cause."""
    text = render("cid-1", build_tree(reversed(HAPPY)))
    lines = lines_of(text)
    assert [line.split()[0:2] for line in lines] == [
        ["order.placed", "order"],
        ["└─", "payment.succeeded"],
        ["└─", "inventory.reserved"],
        ["└─", "shipment.scheduled"],
    ]
    assert lines[1].startswith("└─ payment.succeeded")
    assert "payment" in lines[1]
    assert lines[2].startswith("   └─ inventory.reserved")
    assert lines[3].startswith("      └─ shipment.scheduled")
    assert "+10.0 ms" in lines[1]
    assert "+5.5 ms" in lines[2]
    assert "+11.5 ms" in lines[3]
    assert "03:04:05.000" in lines[0]
    assert "03:04:05.027" in lines[3]
    assert "ms" not in lines[0].split("order")[-1]  # the root has no cause, so no hop latency
    assert text.splitlines()[0].startswith("trace cid-1: 4 events, 27.0 ms from first to last")
    assert "0 dead-lettered; 0 missing links" in text.splitlines()[0]


def test_branches_are_drawn_in_time_order() -> None:
    """Two reactions to one event are siblings: the earlier one first, with a ├─ branch."""
    events = [
        event("e1", None, "order.placed", "order", 0),
        event("b", "e1", "payment.failed", "payment", 9),
        event("a", "e1", "payment.succeeded", "payment", 4),
        event("c", "b", "order.cancelled", "order", 12),
    ]
    lines = lines_of(render("cid", build_tree(events)))
    assert lines[1].startswith("├─ payment.succeeded")
    assert lines[2].startswith("└─ payment.failed")
    assert lines[3].startswith("   └─ order.cancelled")
    assert "+3.0 ms" in lines[3]


def test_event_whose_cause_is_not_in_the_trace_is_a_marked_missing_link() -> None:
    """An event with an unknown causationId becomes a root marked as a missing link."""
    events = [*HAPPY[:2], event("e9", "gone", "payment.refunded", "payment", 40)]
    roots = build_tree(events)
    assert [r.event.event_id for r in roots if r.event] == ["e1", "e9"]
    text = render("cid", roots)
    marked = [line for line in lines_of(text) if "missing link" in line]
    assert len(marked) == 1
    assert marked[0].startswith("payment.refunded")
    assert "cause gone not in trace" in marked[0]
    assert "1 missing links" in text.splitlines()[0]


def test_dead_letter_is_shown_under_the_event_it_holds_with_its_reason() -> None:
    """A DLQ entry of a traced event hangs under that event, with consumer and reason."""
    letter = DeadLetter(
        consumer="shipping-0", reason="max_deliveries", error="boom", event_type="inventory.reserved",
        event_id="e3", causation_id="e2", failed_at=T0 + timedelta(seconds=2),
    )  # fmt: skip
    text = render("cid", build_tree(HAPPY[:3], [letter]))
    lines = lines_of(text)
    assert len(lines) == 4
    assert lines[3].startswith("      └─ inventory.reserved")
    assert "shipping-0" in lines[3]
    assert "dead-lettered: max_deliveries (boom)" in lines[3]
    assert "+1.98 s" in lines[3]  # failed_at minus the held event's occurredAt
    assert "1 dead-lettered" in text.splitlines()[0]


def test_dead_letter_of_an_untraced_event_hangs_under_its_cause() -> None:
    """A dead-lettered event the view never stored is placed under its causation event."""
    letter = DeadLetter("order-status-0", "invalid_payload", "", "shipment.scheduled", "x1", "e3", None)
    lines = lines_of(render("cid", build_tree(HAPPY[:3], [letter])))
    assert lines[-1].startswith("      └─ shipment.scheduled")
    assert "dead-lettered: invalid_payload" in lines[-1]


def test_dead_letter_with_no_known_event_is_a_root() -> None:
    """A dead letter whose body did not parse and whose cause is unknown is still shown."""
    headers = {"Dlq-Consumer": "payment-0", "Dlq-Reason": "invalid_json"}
    letter = DeadLetter.from_message(headers, b"{not json")
    roots = build_tree([], [letter])
    assert len(roots) == 1
    text = render("cid", roots)
    assert "payment-0" in text
    assert "dead-lettered: invalid_json" in text


def test_dead_letter_reads_event_fields_from_the_original_body() -> None:
    """eventId, type and cause come from the envelope; reason, error and time from Dlq-* headers."""
    body = json.dumps({"eventId": "e7", "eventType": "payment.succeeded", "causationId": "e1"}).encode()
    headers = {
        "Dlq-Consumer": "inventory-0", "Dlq-Reason": "permanent_error", "Dlq-Error": "no",
        "Dlq-Failed-At": "2026-01-02T03:04:06Z", "Correlation-Id": "cid",
    }  # fmt: skip
    letter = DeadLetter.from_message(headers, body)
    assert (letter.event_id, letter.event_type, letter.causation_id) == ("e7", "payment.succeeded", "e1")
    assert (letter.consumer, letter.reason, letter.error) == ("inventory-0", "permanent_error", "no")
    one_second_after = T0 + timedelta(seconds=1)
    assert letter.failed_at == one_second_after


def test_causation_cycle_is_still_rendered() -> None:
    """Events that cause each other (corrupt data) are shown as missing links, not dropped."""
    events = [event("a", "b", "order.placed", "order", 0), event("b", "a", "payment.failed", "payment", 1)]
    text = render("cid", build_tree(events))
    assert len(lines_of(text)) == 2
    assert "order.placed" in text
    assert "payment.failed" in text
    assert "missing link" in text


def test_empty_trace_says_so() -> None:
    """No events and no dead letters: one line saying the flow is unknown."""
    assert render("nope", build_tree([])) == "trace nope: no events"


def test_logs_are_gathered_across_files_in_time_order(tmp_path: Path) -> None:
    """Only JSON lines of this correlation id, from every file, sorted by ts, named by file."""
    (tmp_path / "payment-0.log").write_text(
        '{"correlation_id":"c1","event":"b","ts":"2026-01-01T00:00:02Z"}\n'
        '{"correlation_id":"c2","event":"other","ts":"2026-01-01T00:00:01Z"}\n'
        "Traceback mentioning c1\n"
    )
    (tmp_path / "order-0.log").write_text(
        '{"correlation_id":"c1","event":"a","ts":"2026-01-01T00:00:01Z"}\n'
        '{"correlation_id":"c1","event":"c","ts":"2026-01-01T00:00:03Z"}\n'
    )
    (tmp_path / "nats-server.log").write_text("[1] c1 not json\n")
    found = gather_logs(tmp_path, "c1")
    assert [(name, json.loads(line)["event"]) for name, line in found] == [
        ("order-0", "a"),
        ("payment-0", "b"),
        ("order-0", "c"),
    ]
