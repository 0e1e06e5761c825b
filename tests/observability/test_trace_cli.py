"""`choreo trace` and `choreo logs` against a running `choreo up` (see conftest.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from .conftest import LocalRun
from .queries import REPO


def choreo(run: LocalRun, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CHOREO_NATS_URL": run.nats_url}
    return subprocess.run(
        [sys.executable, "-m", "common.cli", *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_trace_of_a_shipped_order_is_the_causation_chain(local_run: LocalRun) -> None:
    """The happy flow prints order.placed → payment → inventory → shipment, each under its cause."""
    _, cid = local_run.flows["happy"]
    result = choreo(local_run, "trace", cid, "--url", local_run.status_url)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"trace {cid}: 4 events")
    assert "0 dead-lettered; 0 missing links" in lines[0]
    assert lines[1].split()[:2] == ["order.placed", "order"]
    assert lines[2].split()[:3] == ["└─", "payment.succeeded", "payment"]
    assert lines[3].split()[:3] == ["└─", "inventory.reserved", "inventory"]
    assert lines[4].split()[:3] == ["└─", "shipment.scheduled", "shipping"]
    assert all(" ms" in line or " s" in line for line in lines[2:5])  # per-hop latency


def test_trace_marks_dead_letters_and_missing_links(local_run: LocalRun) -> None:
    """The poisoned flow shows order-status's DLQ entry under its cause and the orphan event."""
    _, cid = local_run.flows["poisoned"]
    result = choreo(local_run, "trace", cid, "--url", local_run.status_url)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "1 dead-lettered; 1 missing links" in lines[0]
    (dead,) = [line for line in lines if "dead-lettered:" in line]
    assert dead.lstrip(" │").startswith("└─ shipment.scheduled")
    assert "order-status-0" in dead
    assert "invalid_payload" in dead
    (missing,) = [line for line in lines[1:] if "missing link" in line]
    assert missing.startswith("shipment.scheduled")  # a root: its cause is not in the trace


def test_trace_shows_a_retried_event_dead_lettered_after_max_deliveries(local_run: LocalRun) -> None:
    """An event inventory could never handle is shown as dead-lettered with max_deliveries."""
    _, cid = local_run.flows["stuck"]
    result = choreo(local_run, "trace", cid, "--url", local_run.status_url)
    assert result.returncode == 0, result.stderr
    (dead,) = [line for line in result.stdout.splitlines() if "dead-lettered:" in line]
    assert "payment.succeeded" in dead
    assert "inventory-0" in dead
    assert "max_deliveries" in dead


def test_trace_of_an_unknown_flow_fails(local_run: LocalRun) -> None:
    """A correlation id nobody used prints "no events" and exits 1."""
    result = choreo(local_run, "trace", "obs-nobody", "--url", local_run.status_url)
    assert result.returncode == 1
    assert "trace obs-nobody: no events" in result.stdout


def test_logs_gather_one_flow_across_services_in_time_order(local_run: LocalRun) -> None:
    """Every line is this flow's, from order, payment, inventory, shipping and order-status, by ts."""
    _, cid = local_run.flows["happy"]
    result = choreo(local_run, "logs", cid, "--dir", str(local_run.log_dir))
    assert result.returncode == 0, result.stderr
    records = []
    for line in result.stdout.splitlines():
        prefix, _, raw = line.partition("] ")
        record = json.loads(raw)
        assert record["correlation_id"] == cid
        records.append((prefix.strip("["), record))
    names = {name for name, _ in records}
    assert {"order-0", "payment-0", "inventory-0", "shipping-0", "order-status-0"} <= names
    stamps = [record["ts"] for _, record in records]
    assert stamps == sorted(stamps)
    assert all(record["service"] == name.rsplit("-", 1)[0] for name, record in records)
