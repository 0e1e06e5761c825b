"""The benchmark harness still runs: tiny sizes, every benchmark, a report; no timing assertions."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from bench.report import load, markdown, targets
from bench.run import run_all, write

TINY = {
    "hop_events": 40, "hop_rounds": 1, "burst": 20, "bursts": 1, "rates": [40],
    "rate_seconds": 0.5, "partitions": [1], "scale_burst": 20, "log_sample": "1.0",
}  # fmt: skip


@pytest.mark.timeout(150)
async def test_every_benchmark_produces_numbers_and_a_report(tmp_path: Path) -> None:
    """Every hop contender, both chains, latency and memory give finite numbers; the report is written."""
    run = await run_all(TINY, say=lambda _line: None, timeout=60)
    assert {h.impl for h in run.hop} == {"choreo", "choreo-sampled", "raw", "faststream"}
    for hop in run.hop:
        assert len(hop.rates) == 1
        assert math.isfinite(hop.median_rate)
        assert hop.median_rate > 0
    assert {c.kind for c in run.chains} == {"choreo", "raw"}
    for chain in run.chains:
        assert chain.saturation
        assert all(math.isfinite(s) and s > 0 for s in chain.saturation)
        assert set(chain.latency) == {40}
        assert all(math.isfinite(v) for v in chain.latency[40].values())
        assert chain.rss_mb
        assert all(mb > 0 for mb in chain.rss_mb.values())
    choreo = next(c for c in run.chains if c.kind == "choreo")
    assert {"payment-0", "inventory-0", "shipping-0", "order-status-0"} <= set(choreo.rss_mb)
    written = write(run, tmp_path)
    assert {p.name for p in written} >= {"latest.md", "latest.json", "latency.png", "scaling.png"}
    report = (tmp_path / "latest.md").read_text()
    assert "| raw nats-py |" in report
    assert "FastStream" in report
    assert len(targets(run)) == 7  # hop vs raw and vs FastStream, for both log settings; e2e; p99; RSS
    assert markdown(load(tmp_path / "latest.json")) == report  # `python -m bench.report` re-renders it
