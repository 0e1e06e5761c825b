"""Every PromQL expression of the Choreo dashboards and alerts, ready to evaluate.

`all_queries()` returns one `(source, expr, is_choreo_own_metric)` per dashboard panel
target and per alert rule, with Grafana's template variables replaced by concrete values
(`.*` for the regex variables, `1m` for the interval variables, `1h` for `$__range`), so
that a live test can send each one to a real Prometheus.

`is_choreo_own_metric` is true when the expression only needs what the Choreo services
themselves expose (`choreo_*`, plus Prometheus' own `up` for their scrape targets); false
when it needs the NATS exporter (`nats_*`). It says nothing about whether a series has
data yet: a DLQ counter only exists after a first dead letter.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Final

import yaml

__all__ = [
    "ALERTS",
    "DASHBOARDS",
    "REPO",
    "alert_rules",
    "all_queries",
    "dashboard_targets",
    "dashboards",
    "metric_names",
    "substitute",
]

REPO: Final = Path(__file__).resolve().parents[2]
DASHBOARDS: Final = REPO / "charts" / "choreo" / "files" / "dashboards"
ALERTS: Final = REPO / "charts" / "choreo" / "files" / "alerts.yaml"

# Values a live test can use for every template variable of the dashboards.
REGEX_VALUE: Final = ".*"
INTERVALS: Final = {"__rate_interval": "1m", "__interval": "1m", "__range": "1h"}

_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")
# A metric name: an identifier followed by `{`, `[`, `)`, whitespace or the end, that is
# neither a function call nor a keyword. Good enough for the expressions we write.
_IDENT = re.compile(r"(?<![\w.\"'])([a-zA-Z_:][\w:]*)\s*(?=[{\[)\s]|$)")
_NOT_METRICS: Final = frozenset(
    {
        "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
        "unless", "offset", "bool", "sum", "max", "min", "avg", "count", "vector",
        "rate", "increase", "deriv", "histogram_quantile", "le", "inf", "nan",
    }
)  # fmt: skip
_OWN_PREFIXES: Final = ("choreo_",)
_OWN_NAMES: Final = frozenset({"up"})


def substitute(expr: str) -> str:
    """Replace Grafana template variables with concrete values."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return INTERVALS.get(name, REGEX_VALUE)

    return _VARIABLE.sub(value, expr)


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (label names and strings excluded)."""
    without_labels = re.sub(r"\{[^}]*\}", "{}", expr)
    without_groupings = re.sub(
        r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", r"\1", without_labels
    )
    names = {m.group(1) for m in _IDENT.finditer(without_groupings)}
    return {n for n in names if n.lower() not in _NOT_METRICS and not n.isdigit()}


def dashboards() -> dict[str, dict[str, Any]]:
    """Every dashboard JSON under charts/choreo/files/dashboards, by file name."""
    return {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARDS.glob("*.json"))}


def _panels(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for panel in panels:
        out.append(panel)
        out.extend(_panels(panel.get("panels", [])))  # collapsed rows nest their panels
    return out


def dashboard_targets() -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(dashboard file, panel, target) for every target of every non-row panel."""
    return [
        (name, panel, target)
        for name, board in dashboards().items()
        for panel in _panels(board["panels"])
        if panel.get("type") != "row"
        for target in panel.get("targets", [])
    ]


def alert_rules() -> list[dict[str, Any]]:
    """Every rule of charts/choreo/files/alerts.yaml."""
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def _is_own(expr: str) -> bool:
    return all(n.startswith(_OWN_PREFIXES) or n in _OWN_NAMES for n in metric_names(expr))


def all_queries() -> list[tuple[str, str, bool]]:
    """(source, expr, is_choreo_own_metric) for every dashboard target and alert expr."""
    out: list[tuple[str, str, bool]] = []
    for name, panel, target in dashboard_targets():
        expr = substitute(target["expr"])
        out.append((f"{name}: {panel['title']} [{target['refId']}]", expr, _is_own(expr)))
    for rule in alert_rules():
        source = f"alerts.yaml: {rule.get('alert') or rule.get('record')}"
        out.append((source, rule["expr"], _is_own(rule["expr"])))
    return out
