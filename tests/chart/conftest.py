"""Fixtures for the Helm chart tests: find helm, render the chart once per scenario.

helm comes from `.tools/bin/helm` (`make helm` builds it with `go install`) or PATH. A missing
helm fails the tests: the chart is part of the product and is never silently untested.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "choreo"
K8S = ROOT / "k8s"
RELEASE = "choreo"
NAMESPACE = "choreo-test"
# The Kubernetes version templates render for (Capabilities) and manifests are validated
# against; kubernetes-validate 1.37.0 ships schemas up to 1.37.
KUBE_VERSION = "1.33.0"


def sets(*assignments: str) -> list[str]:
    """`--set` arguments for helm."""
    return [arg for assignment in assignments for arg in ("--set", assignment)]


# Scenario name -> extra `helm template` arguments.
SCENARIOS: dict[str, list[str]] = {
    "defaults": [],
    "minimal": ["-f", str(K8S / "values-minimal.yaml")],
    "prod": ["-f", str(K8S / "values-prod.yaml")],
    # What `make e2e-kind` deploys.
    "e2e": ["-f", str(K8S / "values-minimal.yaml"), "-f", str(K8S / "values-e2e.yaml")],
    "secured": sets(
        "nats.auth.mode=password",
        "nats.auth.existingSecret=choreo-nats-users",
        "nats.tls.enabled=true",
        "nats.tls.existingSecret=choreo-nats-tls",
        "nats.tls.clientCert=true",
    ),
    "creds": sets(
        "nats.auth.mode=creds",
        "nats.auth.existingSecret=choreo-nats-creds",
        "provisioning.mode=nack",
    ),
}


def find_helm() -> str:
    local = ROOT / ".tools" / "bin" / "helm"
    if local.is_file():
        return str(local)
    on_path = shutil.which("helm")
    if on_path:
        return on_path
    pytest.fail("helm not found in .tools/bin or on PATH: run `make helm` first", pytrace=False)


@pytest.fixture(scope="session")
def helm() -> str:
    """Path of the helm binary."""
    return find_helm()


@dataclass
class Rendered:
    """All objects of one `helm template` run, hooks and tests included."""

    docs: list[dict[str, Any]]
    by_kind: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for doc in self.docs:
            self.by_kind.setdefault(doc["kind"], []).append(doc)

    def kind(self, kind: str) -> list[dict[str, Any]]:
        return self.by_kind.get(kind, [])

    def one(self, kind: str, name: str) -> dict[str, Any]:
        matches = [d for d in self.kind(kind) if d["metadata"]["name"] == name]
        assert len(matches) == 1, f"expected one {kind} {name}, found {len(matches)}"
        return matches[0]

    def pod_specs(self) -> list[tuple[str, dict[str, Any]]]:
        """(object name, pod spec) of every workload, the helm test pod included."""
        specs = []
        for kind in ("StatefulSet", "Deployment", "Job"):
            for doc in self.kind(kind):
                specs.append((doc["metadata"]["name"], doc["spec"]["template"]["spec"]))
        for doc in self.kind("Pod"):
            specs.append((doc["metadata"]["name"], doc["spec"]))
        return specs


def helm_template(helm: str, args: list[str], *, release: str = RELEASE) -> Rendered:
    result = subprocess.run(
        [helm, "template", release, str(CHART), "--namespace", NAMESPACE,
         "--kube-version", KUBE_VERSION, *args],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    return Rendered(docs)


@pytest.fixture(scope="session")
def rendered(helm: str) -> dict[str, Rendered]:
    """Every scenario rendered once for the whole session."""
    return {name: helm_template(helm, args) for name, args in SCENARIOS.items()}
