"""The chart lints, renders valid Kubernetes objects, and its names and labels follow the style.

Built-in kinds are validated offline with kubernetes-validate (strict: unknown fields fail).
CRD kinds (ServiceMonitor, PrometheusRule, NACK Stream and Consumer) are validated against the
small structural schemas vendored in tests/chart/schemas/, subsets of the upstream CRDs.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest

from .conftest import CHART, K8S, KUBE_VERSION, SCENARIOS, Rendered, helm_template

CRD_SCHEMAS = {
    kind: json.loads((Path(__file__).parent / "schemas" / f"{kind.lower()}.json").read_text())
    for kind in ("ServiceMonitor", "PrometheusRule", "Stream", "Consumer")
}
LINT_VALUES = {
    "defaults": [],
    "minimal": ["-f", str(K8S / "values-minimal.yaml")],
    "prod": ["-f", str(K8S / "values-prod.yaml")],
}
STANDARD_LABELS = {
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/component",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/part-of",
    "helm.sh/chart",
}


@pytest.mark.parametrize("scenario", list(LINT_VALUES))
def test_chart_passes_strict_lint(helm: str, scenario: str) -> None:
    """`helm lint --strict` passes with the default, minimal and prod values."""
    result = subprocess.run(
        [helm, "lint", "--strict", str(CHART), "--kube-version", KUBE_VERSION,
         *LINT_VALUES[scenario]],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_every_manifest_validates_offline(rendered: dict[str, Rendered], scenario: str) -> None:
    """Every rendered object is valid for its kind's schema, unknown fields rejected."""
    errors = []
    for doc in rendered[scenario].docs:
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        try:
            if doc["kind"] in CRD_SCHEMAS:
                jsonschema.validate(doc, CRD_SCHEMAS[doc["kind"]])
            else:
                kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        except (jsonschema.ValidationError, kubernetes_validate.ValidationError) as error:
            errors.append(f"{name}: {error.message}")
    assert not errors, "\n".join(errors)


def test_schema_rejects_unknown_values(helm: str) -> None:
    """A misspelt value fails the render instead of being ignored."""
    result = subprocess.run(
        [helm, "template", "x", str(CHART), "--set", "services.paymnet.replicas=2"],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert result.returncode != 0
    assert "additional properties" in result.stderr.lower()


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_every_object_carries_the_standard_labels(rendered: dict[str, Rendered], scenario: str) -> None:
    """Every object has app.kubernetes.io/* labels, part-of=choreo and helm.sh/chart."""
    for doc in rendered[scenario].docs:
        labels = doc["metadata"].get("labels", {})
        missing = STANDARD_LABELS - labels.keys()
        assert not missing, f"{doc['kind']}/{doc['metadata']['name']} lacks {missing}"
        assert labels["app.kubernetes.io/part-of"] == "choreo"


def test_selectors_use_only_the_immutable_labels(rendered: dict[str, Rendered]) -> None:
    """Selectors and claim templates carry name/instance/component, never version or chart."""
    selector_keys = {
        "app.kubernetes.io/name",
        "app.kubernetes.io/instance",
        "app.kubernetes.io/component",
    }
    prod = rendered["prod"]
    for sts in prod.kind("StatefulSet"):
        assert set(sts["spec"]["selector"]["matchLabels"]) == selector_keys
        template_labels = sts["spec"]["template"]["metadata"]["labels"]
        assert sts["spec"]["selector"]["matchLabels"].items() <= template_labels.items()
        for claim in sts["spec"].get("volumeClaimTemplates", []):
            assert set(claim["metadata"]["labels"]) == selector_keys
    for svc in prod.kind("Service"):
        assert set(svc["spec"]["selector"]) == selector_keys
    for pdb in prod.kind("PodDisruptionBudget"):
        assert set(pdb["spec"]["selector"]["matchLabels"]) == selector_keys


def test_long_release_names_still_fit_dns_labels(helm: str) -> None:
    """With a 53-character release name every name is at most 63 characters, StatefulSets 52."""
    long = helm_template(helm, ["-f", str(K8S / "values-prod.yaml")], release="r" * 53)
    for doc in long.docs:
        name = doc["metadata"]["name"]
        assert len(name) <= 63, name
        assert not name.endswith("-"), name
        if doc["kind"] == "StatefulSet":
            assert len(name) <= 52, name
    names = [(d["kind"], d["metadata"]["name"]) for d in long.docs]
    assert len(names) == len(set(names)), "truncation made two objects collide"
