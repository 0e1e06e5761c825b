"""`make run` as a newcomer sees it: `choreo up` with its demo, an order over HTTP, Ctrl-C;
and `choreo graph`."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import psutil
import pytest

from tests.e2e.conftest import start_system, stop_system
from tests.e2e.system import ROOT, item, place_order, wait_terminal

pytestmark = pytest.mark.e2e

GONE_TIMEOUT = 10.0


def test_choreo_up_runs_the_demo_serves_an_order_and_stops_cleanly_on_ctrl_c(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """READY, the three demo orders reach a terminal status, an order ships; SIGINT exits 0
    and leaves no process behind."""
    system = start_system(tmp_path_factory, "up", demo=True)
    try:
        assert system.process is not None
        children = psutil.Process(system.process.pid).children(recursive=True)
        # nats-server and one process per service (6 services, 1 partition).
        assert len([c for c in children if "serve" in c.cmdline()]) == 6
        assert any("nats-server" in c.name() for c in children)
        system.wait_line("demo         every demo order reached a terminal status", timeout=60)
        with httpx.Client(timeout=10.0) as client:
            order_id, _ = place_order(client, system, [item("sku-1", 1, 999)])
            assert wait_terminal(client, system, order_id)["status"] == "shipped"
    finally:
        code = stop_system(system)
    assert code == 0, system.output_tail()
    assert any(line.startswith("stopped") for line in system.lines)
    deadline = time.monotonic() + GONE_TIMEOUT
    alive = children
    while alive and time.monotonic() < deadline:
        alive = [c for c in alive if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
        time.sleep(0.1)
    assert alive == [], [c.cmdline() for c in alive]


def test_choreo_graph_prints_the_event_flow_as_mermaid() -> None:
    """`choreo graph` prints a Mermaid flowchart with every edge of the choreography."""
    out = subprocess.run(
        [sys.executable, "-m", "common.cli", "graph"],
        cwd=ROOT, capture_output=True, text=True, timeout=30, check=True,
    ).stdout  # fmt: skip
    assert out.startswith("flowchart LR")
    for edge in (
        "order[order] -->|order.placed| payment[payment]",
        "order[order] -->|order.placed| inventory[inventory]",
        "order[order] -->|order.placed| order_status[order-status]",
        "payment[payment] -->|payment.succeeded| inventory[inventory]",
        "payment[payment] -->|payment.failed| order[order]",
        "payment[payment] -->|payment.refunded| order[order]",
        "inventory[inventory] -->|inventory.reserved| shipping[shipping]",
        "inventory[inventory] -->|inventory.reservation_failed| payment[payment]",
        "shipping[shipping] -->|shipment.scheduled| order_status[order-status]",
        "order[order] -->|order.cancelled| order_status[order-status]",
    ):
        assert edge in out, edge
