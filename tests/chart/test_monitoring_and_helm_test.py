"""Monitoring objects (ServiceMonitor, PrometheusRule, dashboards) and the `helm test` pod."""

from __future__ import annotations

import json

import yaml

from .conftest import CHART, RELEASE, Rendered


def test_defaults_create_no_monitoring_objects(rendered: dict[str, Rendered]) -> None:
    """Without the Prometheus Operator nothing of monitoring.coreos.com is rendered."""
    chart = rendered["defaults"]
    assert not chart.kind("ServiceMonitor")
    assert not chart.kind("PrometheusRule")
    assert not [c for c in chart.kind("ConfigMap") if "grafana_dashboard" in c["metadata"]["labels"]]


def test_service_monitor_scrapes_every_pod_through_headless_services(
    rendered: dict[str, Rendered],
) -> None:
    """The ServiceMonitor selects exactly the headless Services and scrapes /metrics on http."""
    chart = rendered["prod"]
    (monitor,) = chart.kind("ServiceMonitor")
    selector = monitor["spec"]["selector"]["matchLabels"]
    selected = [
        s["metadata"]["name"]
        for s in chart.kind("Service")
        if selector.items() <= s["metadata"]["labels"].items()
    ]
    assert sorted(selected) == sorted(
        f"{RELEASE}-{s}-headless"
        for s in ("order", "payment", "inventory", "shipping", "order-status", "dlq")
    )
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "http"
    assert endpoint["path"] == "/metrics"


def test_service_monitor_job_and_service_labels_match_the_alerts(rendered: dict[str, Rendered]) -> None:
    """job comes from part-of ("choreo", as ChoreoServiceDown matches) and series keep `service`."""
    chart = rendered["prod"]
    (monitor,) = chart.kind("ServiceMonitor")
    job_label = monitor["spec"]["jobLabel"]
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["honorLabels"] is True
    selector = monitor["spec"]["selector"]["matchLabels"]
    jobs = {
        s["metadata"]["labels"][job_label]
        for s in chart.kind("Service")
        if selector.items() <= s["metadata"]["labels"].items()
    }
    assert jobs == {"choreo"}
    alerts = yaml.safe_load((CHART / "files" / "alerts.yaml").read_text())
    (down,) = [r for g in alerts["groups"] for r in g["rules"] if r.get("alert") == "ChoreoServiceDown"]
    assert 'job=~"choreo.*"' in down["expr"]


def test_prometheus_rule_embeds_the_alert_groups_verbatim(rendered: dict[str, Rendered]) -> None:
    """PrometheusRule spec.groups is files/alerts.yaml unchanged ({{ $labels }} untemplated)."""
    (rule,) = rendered["prod"].kind("PrometheusRule")
    alerts = yaml.safe_load((CHART / "files" / "alerts.yaml").read_text())
    assert rule["spec"] == {"groups": alerts["groups"]}
    assert rule["spec"]["groups"]


def test_each_dashboard_file_becomes_a_grafana_configmap(rendered: dict[str, Rendered]) -> None:
    """One ConfigMap per files/dashboards/*.json, labelled grafana_dashboard="1", JSON intact."""
    files = sorted((CHART / "files" / "dashboards").glob("*.json"))
    assert files
    dashboards = [
        c for c in rendered["prod"].kind("ConfigMap")
        if c["metadata"]["labels"].get("grafana_dashboard") == "1"
    ]  # fmt: skip
    data = {key: value for c in dashboards for key, value in c["data"].items()}
    assert sorted(data) == [f.name for f in files]
    for file in files:
        assert json.loads(data[file.name]) == json.loads(file.read_text())


def test_helm_test_pod_orders_and_waits_for_shipped(rendered: dict[str, Rendered]) -> None:
    """The test hook posts an order to the order Service and polls order-status for shipped."""
    (pod,) = rendered["defaults"].kind("Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    container = pod["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["ORDER_API"] == f"http://{RELEASE}-order:80"
    assert env["STATUS_API"] == f"http://{RELEASE}-order-status:80"
    script = container["args"][0]
    compile(script, "helm-test", "exec")
    assert "/orders" in script
    assert '"shipped"' in script
    assert pod["spec"]["restartPolicy"] == "Never"
