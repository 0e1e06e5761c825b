"""Every dashboard query and alert expression, evaluated by a real Prometheus over a live run.

Debian's `prometheus` (installed with promtool by `make promtool`) scrapes every service
process of the shared `choreo up` run (conftest.py) each second, with job="choreo" and
honor_labels (a series keeps its own `service` label, as on Kubernetes with the ServiceMonitor).
Orders are placed while it scrapes, so rates are not all zero. Then, through the HTTP API:
- every expression of tests/observability/queries.py all_queries() evaluates without error;
- every expression over Choreo's own metrics returns data. An alert expression is evaluated
  with its threshold comparisons turned into `bool` ones (`> 5` becomes `> bool 5`), so a quiet
  alert still shows that its series exist;
- exporter (nats_*) expressions only have to evaluate: no exporter runs here.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from common.natsserver import free_port

from .conftest import ORDERS, LocalRun
from .queries import all_queries

SCRAPE_INTERVAL = "1s"
START_TIMEOUT = 30.0
SCRAPES_WANTED = 3
SCRAPE_TIMEOUT = 30.0
# A comparison with a number, outside label matchers (which compare with strings).
_THRESHOLD = re.compile(r"(==|!=|>=|<=|>|<)\s*(?=-?\d)")


def as_bool(expr: str) -> str:
    """The expression with every threshold comparison returning 0/1 instead of filtering."""
    return _THRESHOLD.sub(lambda m: f"{m.group(1)} bool ", expr)


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def query(self, expr: str) -> dict[str, Any]:
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        return dict(response.json())

    def series_count(self, expr: str) -> int:
        body = self.query(expr)
        return len(body["data"]["result"]) if body.get("status") == "success" else -1


@pytest.fixture(scope="module")
def prometheus(local_run: LocalRun, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    """Debian's prometheus on a free port, scraping every service process of the run."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is not installed: run `make promtool` (Debian's `prometheus`)", pytrace=False)
    urls = local_run.service_urls()
    assert len(urls) >= 6, urls  # order, payment, inventory, shipping, order-status, dlq
    work = tmp_path_factory.mktemp("prometheus")
    config = {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
        "scrape_configs": [
            {
                "job_name": "choreo",
                "honor_labels": True,
                "static_configs": [
                    {"targets": [u.removeprefix("http://") for u in urls.values()]},
                ],
            }
        ],
    }
    (work / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = (work / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [binary, f"--config.file={work / 'prometheus.yml'}", f"--storage.tsdb.path={work / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        prom = Prometheus(f"http://127.0.0.1:{port}")
        _wait_ready(prom, process, work / "prometheus.log")
        yield prom
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.close()


def _wait_ready(prom: Prometheus, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(f"{prom.url}/-/ready", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"prometheus not ready after {START_TIMEOUT}s:\n{log.read_text()[-3000:]}")


def _wait_scrapes(prom: Prometheus, targets: int, scrapes: int) -> None:
    """Until every target has been scraped successfully at least `scrapes` times."""
    expr = f'count(sum_over_time(up{{job="choreo"}}[1m]) >= {scrapes})'
    deadline = time.monotonic() + SCRAPE_TIMEOUT
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        body = prom.query(expr)
        result = body.get("data", {}).get("result", [])
        if result and int(float(result[0]["value"][1])) >= targets:
            return
        time.sleep(0.5)
    raise AssertionError(f"{targets} targets not scraped {scrapes} times in {SCRAPE_TIMEOUT}s: {body}")


@pytest.fixture(scope="module")
def scraped(prometheus: Prometheus, local_run: LocalRun) -> Prometheus:
    """Scraped before and after a new round of orders (one of each outcome)."""
    targets = len(local_run.service_urls())
    _wait_scrapes(prometheus, targets, 2)
    for label, items in ORDERS.items():
        local_run.place(f"prom-{label}", items)
    _wait_scrapes(prometheus, targets, 2 + SCRAPES_WANTED)
    return prometheus


def test_every_service_process_is_a_healthy_target(scraped: Prometheus, local_run: LocalRun) -> None:
    """up == 1 for each process, and its metrics keep their own `service` label (honor_labels)."""
    assert scraped.series_count('up{job="choreo"} == 1') == len(local_run.service_urls())
    body = scraped.query('count by (service) (choreo_ready{job="choreo"} == 1)')
    services = {r["metric"]["service"] for r in body["data"]["result"]}
    assert services == {"order", "payment", "inventory", "shipping", "order-status", "dlq"}


@pytest.mark.parametrize(("source", "expr", "own"), all_queries(), ids=[q[0] for q in all_queries()])
def test_query_evaluates_on_live_prometheus(scraped: Prometheus, source: str, expr: str, own: bool) -> None:
    """The expression evaluates without error; over Choreo's own metrics it returns data."""
    body = scraped.query(expr)
    assert body.get("status") == "success", f"{source}: {body}"
    if not own:
        return  # nats_* needs the NATS exporter, absent here: syntax and evaluation only
    probe = as_bool(expr) if source.startswith("alerts.yaml") else expr
    probed = scraped.query(probe)
    assert probed.get("status") == "success", f"{source}: {probe}: {probed}"
    assert probed["data"]["result"], f"{source}: no data for {probe}"


def test_bool_rewrite_leaves_label_matchers_alone() -> None:
    """Only numeric comparisons get `bool`: label matchers and offsets are unchanged."""
    expr = 'sum(rate(x{outcome!="processed", le="0.5"}[5m] offset 10m)) > 0.1 and up == 0'
    want = 'sum(rate(x{outcome!="processed", le="0.5"}[5m] offset 10m)) > bool 0.1 and up == bool 0'
    assert as_bool(expr) == want
