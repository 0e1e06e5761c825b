"""The e2e scenario (scenario.py) on a real Kubernetes: a kind cluster with NATS from the
official chart and Choreo from charts/choreo, the image built from the Dockerfile.

`make e2e-kind` builds the image, creates the cluster, loads the image, installs NATS and
Choreo (`helm test` included) and runs this module with CHOREO_E2E=kind. Run without
CHOREO_E2E=kind on a machine with a Docker engine, the module does those steps itself first
(`make e2e-kind-setup`). Without a Docker engine, kind cannot run: the module is skipped and says so.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from . import scenario
from .targets import KindTarget

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
NAMESPACE = os.environ.get("K8S_NAMESPACE", "choreo")
DEPLOY_SECONDS = 45 * 60


def docker_engine_problem() -> str | None:
    """Why no Docker engine is usable here, or None if `docker info` reaches one."""
    if shutil.which("docker") is None:
        return "no Docker engine: the `docker` command is not installed"
    try:
        result = subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"],
            capture_output=True, text=True, check=False, timeout=30,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return "no Docker engine: `docker info` did not answer in 30 s"
    if result.returncode != 0:
        error = (result.stderr or result.stdout).strip().splitlines()
        return f"no Docker engine: `docker info` failed ({error[-1] if error else result.returncode})"
    return None


@pytest.fixture(scope="module")
def kind() -> Iterator[KindTarget]:
    """The Choreo release on the kind cluster, deployed first unless CHOREO_E2E=kind says
    `make e2e-kind` already did."""
    problem = docker_engine_problem()
    if problem is not None:
        pytest.skip(f"{problem}; kind needs one. The kind e2e runs in GitHub Actions "
                    "(.github/workflows/e2e-kind.yml, `make e2e-kind`).")  # fmt: skip
    if os.environ.get("CHOREO_E2E") != "kind":
        subprocess.run(
            ["make", "e2e-kind-setup", f"K8S_NAMESPACE={NAMESPACE}"],
            cwd=ROOT, check=True, timeout=DEPLOY_SECONDS,
        )  # fmt: skip
    assert shutil.which("kubectl"), "kubectl is needed to reach the kind cluster"
    target = KindTarget(namespace=NAMESPACE)
    try:
        yield target
    finally:
        target.stop()


def test_kind_order_reaches_shipped(kind: KindTarget) -> None:
    """A valid order placed through the order Service ends `shipped` in order-status."""
    scenario.order_reaches_shipped(kind)


def test_kind_declined_and_out_of_stock_orders_are_cancelled(kind: KindTarget) -> None:
    """An order above the payment limit and one beyond the stock end `cancelled` with their
    reasons; the payment ledgers show one decline and one refund."""
    scenario.declined_and_out_of_stock_orders_are_cancelled(kind)


def test_kind_payment_pod_deleted_mid_load_loses_and_double_charges_nothing(kind: KindTarget) -> None:
    """200 orders with payment pod 0 deleted halfway: all ship, exactly 200 new charges over
    the payment pods' ledgers (the recreated pod keeps its store on its claim)."""
    scenario.payment_death_mid_load_loses_and_double_charges_nothing(kind, orders=200)


def test_kind_correlation_id_is_in_every_service_log(kind: KindTarget) -> None:
    """`kubectl logs -l app.kubernetes.io/part-of=choreo --prefix` has one order's correlation
    id in lines of order, payment, inventory, shipping and order-status."""
    scenario.correlation_id_is_logged_by_every_service(kind)
