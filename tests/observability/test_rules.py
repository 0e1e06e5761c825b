"""The alert rules and dashboards of charts/choreo/files, checked offline.

promtool (Debian's `prometheus` package, installed by `make promtool`, a dependency of
`make pytest`) validates the rule file, runs tests/observability/alerts_test.yaml and
parses every dashboard query. A missing promtool fails these tests: it is never a skip.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from .queries import (
    ALERTS,
    REPO,
    alert_rules,
    all_queries,
    dashboard_targets,
    dashboards,
    metric_names,
)

UNIT_TESTS = Path(__file__).with_name("alerts_test.yaml")

REQUIRED_ALERTS = {
    "ChoreoDLQReceiving",
    "ChoreoConsumerLagGrowing",
    "ChoreoHighRedeliveryRatio",
    "ChoreoServiceDown",
    "ChoreoServiceNotReady",
    "ChoreoEndToEndLagHigh",
}
REQUIRED_METRICS = {
    "choreo_events_published_total",
    "choreo_events_consumed_total",
    "choreo_handler_duration_seconds_bucket",
    "choreo_event_lag_seconds_bucket",
    "choreo_dlq_events_total",
    "choreo_orders_by_status",
    "nats_consumer_num_pending",
    "nats_consumer_num_ack_pending",
}
NAMESPACE = 'namespace=~"$namespace"'
SERVICE = 'service=~"$service"'
# Filtered by namespace only: the order-status gauge is a business view that should not
# vanish when other services are selected, and on NATS exporter metrics `service` names
# the exporter's Kubernetes Service, not a Choreo service.
NAMESPACE_ONLY = re.compile(r"^(nats_.*|choreo_orders_by_status)$")


@pytest.fixture(scope="module")
def promtool() -> str:
    """The promtool binary; the test fails, with the fix, when it is not installed."""
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool is not installed: run `make promtool` (installs Debian's `prometheus` "
            "package); `make pytest` does it for you",
            pytrace=False,
        )
    return path


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, cwd=REPO, timeout=120, check=False)


def test_alert_rules_pass_promtool_check(promtool: str) -> None:
    """`promtool check rules` accepts charts/choreo/files/alerts.yaml as is."""
    result = run(promtool, "check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_alert_unit_tests_pass(promtool: str) -> None:
    """Every case of alerts_test.yaml passes under `promtool test rules`."""
    result = run(promtool, "test", "rules", str(UNIT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_and_alert_queries_are_valid_promql(promtool: str, tmp_path: Path) -> None:
    """Every dashboard expression, its variables substituted, parses as PromQL."""
    rules = [{"record": f"choreo_check:q{i}", "expr": expr} for i, (_, expr, _) in enumerate(all_queries())]
    rule_file = tmp_path / "queries.yaml"
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": "queries", "rules": rules}]}))
    result = run(promtool, "check", "rules", str(rule_file))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "$" not in "".join(expr for _, expr, _ in all_queries())


def test_every_required_alert_is_complete() -> None:
    """Each alert has a `for`, a severity and summary, description and runbook annotations."""
    rules = {rule["alert"]: rule for rule in alert_rules() if "alert" in rule}
    assert rules.keys() >= REQUIRED_ALERTS
    for name, rule in rules.items():
        assert rule.get("for"), name
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, name
        annotations = rule["annotations"]
        assert {"summary", "description", "runbook_url"} <= annotations.keys(), name
        assert annotations["runbook_url"] == f"docs/OPERATIONS.md#{name.lower()}", name


def test_every_alert_has_firing_and_quiet_unit_tests() -> None:
    """alerts_test.yaml expects each alert to fire somewhere and to stay quiet somewhere."""
    doc = yaml.safe_load(UNIT_TESTS.read_text())
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in doc["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in alert_rules() if "alert" in rule}
    assert names - firing == set(), "alerts never expected to fire"
    assert names - quiet == set(), "alerts never expected to stay quiet"


@pytest.mark.parametrize("name", ["choreo-overview.json", "choreo-flow.json"])
def test_dashboard_variables(name: str) -> None:
    """datasource, namespace and service variables exist; queries use the datasource one."""
    board = dashboards()[name]
    assert board["schemaVersion"] >= 36
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for var in ("namespace", "service"):
        assert variables[var]["type"] == "query"
        assert variables[var]["query"]["query"].startswith("label_values(")
        assert variables[var]["allValue"] == ".*"
    for _, panel, target in dashboard_targets():
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert target["datasource"]["uid"] == "${datasource}", panel["title"]


def test_every_panel_has_queries() -> None:
    """Every non-row panel has at least one target, each with an expression and a refId."""
    for name, board in dashboards().items():
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)), name
        for panel in board["panels"]:
            if panel["type"] == "row":
                continue
            assert panel.get("targets"), f"{name}: {panel['title']} has no targets"
            for target in panel["targets"]:
                assert target.get("expr", "").strip(), f"{name}: {panel['title']}"
                assert target.get("refId"), f"{name}: {panel['title']}"
    assert len({b["uid"] for b in dashboards().values()}) == len(dashboards())


def test_required_metrics_are_charted() -> None:
    """Each contract metric (and the NATS pending gauges) appears in some panel."""
    charted = set().union(*(metric_names(t["expr"]) for _, _, t in dashboard_targets()))
    assert REQUIRED_METRICS - charted == set()


def selectors(expr: str) -> list[tuple[str, str]]:
    """(metric, label matchers) for every metric selected in expr; bare names included."""
    found = []
    for metric in metric_names(expr):
        for match in re.finditer(rf"(?<![\w:]){re.escape(metric)}(\{{[^}}]*\}})?", expr):
            found.append((metric, match.group(1) or ""))
    return found


def test_every_selector_filters_by_namespace_and_service() -> None:
    """Each selector filters by $namespace, and by $service where that label is Choreo's."""
    for name, panel, target in dashboard_targets():
        for metric, matchers in selectors(target["expr"]):
            where = f"{name}: {panel['title']} [{target['refId']}] {metric}"
            assert NAMESPACE in matchers, where
            if not NAMESPACE_ONLY.match(metric):
                assert SERVICE in matchers, where
