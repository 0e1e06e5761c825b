"""The service workloads: partitions as StatefulSet replicas, hardening, probes, environment."""

from __future__ import annotations

import os
from typing import Any

import pytest

from .conftest import RELEASE, Rendered, helm_template, sets

PARTITIONED = ("order", "payment", "inventory", "shipping")
SERVICES = (*PARTITIONED, "order-status", "dlq")
DRAIN_DEADLINE = "CHOREO_DRAIN_TIMEOUT_SECONDS"
# Variables only one service may see, and variables only the provisioning job may see.
SERVICE_ONLY_PREFIXES = {
    "payment": "CHOREO_PAYMENT_",
    "inventory": "CHOREO_INVENTORY_",
    "shipping": "CHOREO_SHIPPING_",
}
PROVISION_ONLY = {
    "CHOREO_STREAM_REPLICAS",
    "CHOREO_EVENTS_MAX_AGE_DAYS",
    "CHOREO_DUPLICATE_WINDOW_SECONDS",
    "CHOREO_DLQ_MAX_AGE_DAYS",
}


def statefulset(rendered: Rendered, service: str) -> dict[str, Any]:
    return rendered.one("StatefulSet", f"{RELEASE}-{service}")


def container_env(rendered: Rendered, pod: dict[str, Any]) -> dict[str, Any]:
    """Name -> value (a string, or the valueFrom dict) of the first container's environment."""
    container = pod["containers"][0]
    env: dict[str, Any] = {}
    for source in container.get("envFrom", []):
        ref = source["configMapRef"]["name"]
        configmap = rendered.one("ConfigMap", ref)
        env.update(configmap.get("data", {}))
    for var in container.get("env", []):
        env[var["name"]] = var.get("value", var.get("valueFrom"))
    return env


@pytest.mark.parametrize(
    ("scenario", "partitions", "views"), [("defaults", 1, 1), ("minimal", 1, 1), ("prod", 3, 2)]
)
def test_partitioned_services_run_one_pod_per_partition(
    rendered: dict[str, Rendered], scenario: str, partitions: int, views: int
) -> None:
    """order/payment/inventory/shipping have replicas = partitions; order-status its own; dlq 1."""
    chart = rendered[scenario]
    for service in PARTITIONED:
        assert statefulset(chart, service)["spec"]["replicas"] == partitions
    assert statefulset(chart, "order-status")["spec"]["replicas"] == views
    assert statefulset(chart, "dlq")["spec"]["replicas"] == 1
    configmap = chart.one("ConfigMap", f"{RELEASE}-config")
    assert configmap["data"]["CHOREO_PARTITIONS"] == str(partitions)


@pytest.mark.parametrize("scenario", ["defaults", "prod"])
def test_each_pod_owns_the_partition_of_its_ordinal(rendered: dict[str, Rendered], scenario: str) -> None:
    """CHOREO_PARTITION=ordinal, the store on the pod's own claim at /data, /tmp an emptyDir."""
    chart = rendered[scenario]
    for service in SERVICES:
        sts = statefulset(chart, service)
        pod = sts["spec"]["template"]["spec"]
        env = container_env(chart, pod)
        assert env["CHOREO_PARTITION"] == "ordinal"
        assert env["CHOREO_DATA_DIR"] == "/data"
        assert pod["containers"][0]["args"] == ["serve", service]
        mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
        assert mounts["data"] == "/data"
        assert mounts["tmp"] == "/tmp"
        assert [c["metadata"]["name"] for c in sts["spec"]["volumeClaimTemplates"]] == ["data"]
        assert {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}} in pod["volumes"]


def test_minimal_values_keep_stores_on_empty_dirs(rendered: dict[str, Rendered]) -> None:
    """Without persistence there are no claims; /data is an emptyDir."""
    for service in SERVICES:
        sts = statefulset(rendered["minimal"], service)
        assert "volumeClaimTemplates" not in sts["spec"]
        volumes = {v["name"]: v for v in sts["spec"]["template"]["spec"]["volumes"]}
        assert "emptyDir" in volumes["data"]


@pytest.mark.parametrize("scenario", ["defaults", "prod", "secured"])
def test_every_container_runs_locked_down(rendered: dict[str, Rendered], scenario: str) -> None:
    """Non-root, read-only root, no privilege escalation, ALL dropped, RuntimeDefault seccomp."""
    specs = rendered[scenario].pod_specs()
    assert specs
    for name, pod in specs:
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        assert pod["automountServiceAccountToken"] is False, name
        for container in pod["containers"]:
            ctx = container["securityContext"]
            assert ctx["runAsNonRoot"] is True, name
            assert ctx["readOnlyRootFilesystem"] is True, name
            assert ctx["allowPrivilegeEscalation"] is False, name
            assert ctx["capabilities"]["drop"] == ["ALL"], name
            assert ctx["seccompProfile"]["type"] == "RuntimeDefault", name
            assert container["resources"]["requests"], name
            assert container["resources"]["limits"]["memory"], name


def test_service_accounts_never_mount_tokens(rendered: dict[str, Rendered]) -> None:
    """Each service has its own ServiceAccount and none mounts an API token."""
    chart = rendered["defaults"]
    accounts = {sa["metadata"]["name"]: sa for sa in chart.kind("ServiceAccount")}
    for service in SERVICES:
        assert accounts[f"{RELEASE}-{service}"]["automountServiceAccountToken"] is False
        pod = statefulset(chart, service)["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == f"{RELEASE}-{service}"


@pytest.mark.parametrize("scenario", ["defaults", "prod"])
def test_services_probe_healthz_and_readyz(rendered: dict[str, Rendered], scenario: str) -> None:
    """Liveness and startup hit /healthz, readiness /readyz, all on the http port 8080."""
    for service in SERVICES:
        pod = statefulset(rendered[scenario], service)["spec"]["template"]["spec"]
        container = pod["containers"][0]
        assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}


def test_grace_period_outlasts_the_drain_deadline(rendered: dict[str, Rendered]) -> None:
    """terminationGracePeriodSeconds is longer than CHOREO_DRAIN_TIMEOUT_SECONDS."""
    chart = rendered["defaults"]
    for service in SERVICES:
        pod = statefulset(chart, service)["spec"]["template"]["spec"]
        drain = int(container_env(chart, pod)[DRAIN_DEADLINE])
        assert pod["terminationGracePeriodSeconds"] > drain


@pytest.mark.parametrize("scenario", ["defaults", "prod"])
def test_every_service_has_a_disruption_budget_and_spread(
    rendered: dict[str, Rendered], scenario: str
) -> None:
    """One PDB per service, and pods spread over the topology key by their own selector."""
    chart = rendered[scenario]
    budgets = {p["metadata"]["name"]: p for p in chart.kind("PodDisruptionBudget")}
    for service in SERVICES:
        sts = statefulset(chart, service)
        selector = sts["spec"]["selector"]["matchLabels"]
        assert budgets[f"{RELEASE}-{service}"]["spec"]["selector"]["matchLabels"] == selector
        (spread,) = sts["spec"]["template"]["spec"]["topologySpreadConstraints"]
        assert spread["labelSelector"]["matchLabels"] == selector


def test_the_two_apis_have_load_balanced_services(rendered: dict[str, Rendered]) -> None:
    """order and order-status get a ClusterIP Service; every service a headless one."""
    chart = rendered["defaults"]
    services = {s["metadata"]["name"]: s for s in chart.kind("Service")}
    for api in ("order", "order-status"):
        svc = services[f"{RELEASE}-{api}"]
        assert svc["spec"]["type"] == "ClusterIP"
        assert svc["spec"]["ports"][0]["targetPort"] == "http"
    for service in SERVICES:
        headless = services[f"{RELEASE}-{service}-headless"]
        assert headless["spec"]["clusterIP"] == "None"
        assert statefulset(chart, service)["spec"]["serviceName"] == headless["metadata"]["name"]
    assert f"{RELEASE}-payment" not in services


@pytest.mark.parametrize("scenario", ["defaults", "prod", "secured", "creds"])
def test_each_service_sets_only_variables_it_reads(rendered: dict[str, Rendered], scenario: str) -> None:
    """Every CHOREO_* a service pod gets is one `env_var_names(service)` lists, and
    service-specific or provisioning-only settings reach only their owner."""
    from common.settings import env_var_names

    chart = rendered[scenario]
    for service in SERVICES:
        pod = statefulset(chart, service)["spec"]["template"]["spec"]
        names = set(container_env(chart, pod))
        unread = names - set(env_var_names(service))
        assert not unread, f"{service} is given variables it never reads: {sorted(unread)}"
        assert not names & PROVISION_ONLY, service
        for owner, prefix in SERVICE_ONLY_PREFIXES.items():
            if owner != service:
                assert not [n for n in names if n.startswith(prefix)], (service, prefix)


@pytest.mark.parametrize("scenario", ["defaults", "secured"])
def test_provisioning_job_gets_only_what_provision_reads(
    rendered: dict[str, Rendered], scenario: str
) -> None:
    """The hook Job's environment is within ProvisionSettings and has no service settings."""
    from common.settings import ProvisionSettings

    reads = {f"CHOREO_{name.upper()}" for name in ProvisionSettings.model_fields}
    chart = rendered[scenario]
    (job,) = chart.kind("Job")
    env = set(container_env(chart, job["spec"]["template"]["spec"]))
    assert not env - reads, sorted(env - reads)
    assert env >= PROVISION_ONLY | {"CHOREO_PARTITIONS", "CHOREO_NATS_URL"}


@pytest.mark.parametrize("scenario", ["defaults", "minimal", "prod", "secured", "creds"])
def test_no_secret_value_is_ever_rendered(rendered: dict[str, Rendered], scenario: str) -> None:
    """The chart creates no Secret; passwords only ever come from a secretKeyRef."""
    chart = rendered[scenario]
    assert not chart.kind("Secret")
    for name, pod in chart.pod_specs():
        env = container_env(chart, pod)
        if "CHOREO_NATS_PASSWORD" in env:
            assert isinstance(env["CHOREO_NATS_PASSWORD"], dict), name
            assert "secretKeyRef" in env["CHOREO_NATS_PASSWORD"], name
        if scenario == "defaults":
            assert not {"CHOREO_NATS_USER", "CHOREO_NATS_PASSWORD", "CHOREO_NATS_CREDS"} & set(env)
    for configmap in chart.kind("ConfigMap"):
        assert not {"CHOREO_NATS_PASSWORD", "CHOREO_NATS_USER"} & set(configmap.get("data", {}))


def test_each_service_connects_as_its_own_nats_user(rendered: dict[str, Rendered]) -> None:
    """Password mode: the service's own user, its password from `<user>-password`, TLS files."""
    chart = rendered["secured"]
    for service in SERVICES:
        pod = statefulset(chart, service)["spec"]["template"]["spec"]
        env = container_env(chart, pod)
        assert env["CHOREO_NATS_USER"] == service
        ref = env["CHOREO_NATS_PASSWORD"]["secretKeyRef"]
        assert ref == {"name": "choreo-nats-users", "key": f"{service}-password"}
        assert env["CHOREO_NATS_TLS_CA"] == "/etc/choreo/nats-tls/ca.crt"
        assert env["CHOREO_NATS_TLS_CERT"] == "/etc/choreo/nats-tls/tls.crt"
        assert env["CHOREO_NATS_TLS_KEY"] == "/etc/choreo/nats-tls/tls.key"
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["nats-tls"]["secret"]["secretName"] == "choreo-nats-tls"


def test_creds_mode_mounts_only_the_services_own_creds(rendered: dict[str, Rendered]) -> None:
    """Creds mode: each pod mounts just `<user>.creds` and points CHOREO_NATS_CREDS at it."""
    chart = rendered["creds"]
    for service in SERVICES:
        pod = statefulset(chart, service)["spec"]["template"]["spec"]
        env = container_env(chart, pod)
        assert env["CHOREO_NATS_CREDS"] == f"/etc/choreo/nats-creds/{service}.creds"
        assert "CHOREO_NATS_PASSWORD" not in env
        volumes = {v["name"]: v for v in pod["volumes"]}
        items = volumes["nats-creds"]["secret"]["items"]
        assert items == [{"key": f"{service}.creds", "path": f"{service}.creds"}]


@pytest.mark.parametrize("scenario", ["defaults", "prod", "secured", "creds"])
def test_each_service_gets_every_setting_of_its_own(rendered: dict[str, Rendered], scenario: str) -> None:
    """Each option a service adds to RunnerSettings (CHOREO_PAYMENT_*, ...) is set by the chart,
    so a values key never silently stops reaching its service."""
    from common.settings import RunnerSettings, env_var_names

    chart = rendered[scenario]
    for service in SERVICES:
        pod = statefulset(chart, service)["spec"]["template"]["spec"]
        own = env_var_names(service) - env_var_names(RunnerSettings)
        missing = own - set(container_env(chart, pod))
        assert not missing, f"{service} never gets {sorted(missing)}"


@pytest.mark.parametrize(
    "args",
    [[], sets("partitions=3", "services.orderStatus.replicas=2"),
     sets("partitions=1", "services.orderStatus.replicas=3", "services.dlq.replicas=2")],
    ids=["defaults", "p3-views2", "p1-views3"],
)  # fmt: skip
def test_every_pod_environment_loads_into_its_service_settings(
    helm: str, monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    """For every pod ordinal, the rendered environment parses into the service's settings class
    and passes its checks (the partition below CHOREO_PARTITIONS), as `choreo serve` would."""
    from common.app import load_app

    chart = helm_template(helm, args)
    app = load_app()
    for service in SERVICES:
        sts = statefulset(chart, service)
        env = container_env(chart, sts["spec"]["template"]["spec"])
        settings_cls = app.definition(service).settings_cls
        for ordinal in range(sts["spec"]["replicas"]):
            with monkeypatch.context() as patched:
                for name in [n for n in os.environ if n.startswith("CHOREO_")]:
                    patched.delenv(name)
                for name, value in env.items():
                    # Secret references are resolved by the kubelet: any string stands in.
                    patched.setenv(name, value if isinstance(value, str) else "from-secret")
                patched.setenv("HOSTNAME", f"{sts['metadata']['name']}-{ordinal}")
                settings = settings_cls()
                settings.check()
                assert settings.partition == ordinal, (service, ordinal)


def test_provisioning_job_environment_loads_into_provision_settings(
    helm: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hook Job's rendered environment parses into ProvisionSettings with the values given."""
    from common.settings import ProvisionSettings

    chart = helm_template(helm, sets("partitions=4", "services.orderStatus.replicas=2",
                                     "provisioning.maxAckPending=2000000"))  # fmt: skip
    (job,) = chart.kind("Job")
    for name in [n for n in os.environ if n.startswith("CHOREO_")]:
        monkeypatch.delenv(name)
    for name, value in container_env(chart, job["spec"]["template"]["spec"]).items():
        monkeypatch.setenv(name, value)
    settings = ProvisionSettings()
    assert (settings.partitions, settings.view_replicas) == (4, 2)
    assert settings.max_ack_pending == 2_000_000


def test_e2e_values_keep_every_store_on_a_claim(rendered: dict[str, Rendered]) -> None:
    """The kind e2e deletes a payment pod and reads its ledger after: with values-e2e.yaml
    every service has two partitions or replicas and its store on a PersistentVolumeClaim."""
    chart = rendered["e2e"]
    for service in SERVICES:
        sts = statefulset(chart, service)
        assert [c["metadata"]["name"] for c in sts["spec"]["volumeClaimTemplates"]] == ["data"]
        assert sts["spec"]["replicas"] == (1 if service == "dlq" else 2), service
