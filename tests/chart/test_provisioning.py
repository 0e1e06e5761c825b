"""Provisioning: the pre-install/pre-upgrade hook Job, or NACK Stream and Consumer objects."""

from __future__ import annotations

from typing import Any

from .conftest import K8S, RELEASE, Rendered, helm_template

HOOK = "helm.sh/hook"
WEIGHT = "helm.sh/hook-weight"
# What each partitioned service consumes (CONTRACT.md's flow); order-status consumes all.
CONSUMES = {
    "order": {"payment.failed", "payment.refunded"},
    "payment": {"order.placed", "inventory.reservation_failed"},
    "inventory": {"payment.succeeded"},
    "shipping": {"inventory.reserved"},
}


def hooks(chart: Rendered) -> list[dict[str, Any]]:
    return [d for d in chart.docs if HOOK in d["metadata"].get("annotations", {})]


def consumers(chart: Rendered) -> dict[str, dict[str, Any]]:
    return {c["spec"]["durableName"]: c["spec"] for c in chart.kind("Consumer")}


def test_provision_job_runs_before_install_and_upgrade(rendered: dict[str, Rendered]) -> None:
    """The Job runs `choreo provision` as a pre-install,pre-upgrade hook."""
    (job,) = rendered["defaults"].kind("Job")
    assert job["metadata"]["annotations"][HOOK] == "pre-install,pre-upgrade"
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["provision"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"


def test_hook_job_dependencies_are_hooks_with_lower_weights(
    rendered: dict[str, Rendered],
) -> None:
    """The Job's ServiceAccount and ConfigMap are hooks of the same phases, created first."""
    chart = rendered["defaults"]
    (job,) = chart.kind("Job")
    pod = job["spec"]["template"]["spec"]
    by_kind = {d["kind"]: d for d in hooks(chart) if d["kind"] != "Pod"}
    assert set(by_kind) == {"ServiceAccount", "ConfigMap", "Job"}
    assert by_kind["ServiceAccount"]["metadata"]["name"] == pod["serviceAccountName"]
    configmap_ref = pod["containers"][0]["envFrom"][0]["configMapRef"]["name"]
    assert by_kind["ConfigMap"]["metadata"]["name"] == configmap_ref
    weights = {kind: int(d["metadata"]["annotations"][WEIGHT]) for kind, d in by_kind.items()}
    assert weights["ServiceAccount"] < weights["ConfigMap"] < weights["Job"]
    for doc in by_kind.values():
        annotations = doc["metadata"]["annotations"]
        assert annotations[HOOK] == "pre-install,pre-upgrade"
        assert "before-hook-creation" in annotations["helm.sh/hook-delete-policy"]


def test_provision_job_knows_partitions_and_view_replicas(helm: str) -> None:
    """The Job is told P and the order-status replica count it creates consumers for."""
    chart = helm_template(helm, ["-f", str(K8S / "values-prod.yaml"), "--set", "provisioning.mode=job"])
    data = chart.one("ConfigMap", f"{RELEASE}-provision")["data"]
    assert data["CHOREO_PARTITIONS"] == "3"
    assert data["CHOREO_VIEW_REPLICAS"] == "2"
    assert data["CHOREO_STREAM_REPLICAS"] == "3"
    assert not chart.kind("Stream")
    assert not chart.kind("Consumer")


def test_nack_mode_renders_no_hook_job(rendered: dict[str, Rendered]) -> None:
    """With provisioning.mode=nack there is no provisioning Job and no hook besides the test."""
    prod = rendered["prod"]
    assert not prod.kind("Job")
    assert [d["kind"] for d in hooks(prod)] == ["Pod"]


def test_events_stream_partitions_by_aggregate_id(rendered: dict[str, Rendered]) -> None:
    """EVENTS maps events.*.*.* to a 4th partition token over the aggregate id, P=3, R3."""
    streams = {s["spec"]["name"]: s for s in rendered["prod"].kind("Stream")}
    assert set(streams) == {"EVENTS", "DLQ", "ADVISORIES"}
    events = streams["EVENTS"]["spec"]
    assert events["subjects"] == ["events.>"]
    assert events["subjectTransform"] == {
        "source": "events.*.*.*",
        "dest": "events.{{wildcard(1)}}.{{wildcard(2)}}.{{wildcard(3)}}.{{partition(3,3)}}",
    }
    assert events["duplicateWindow"] == "120s"
    assert events["maxAge"] == "168h"
    assert streams["ADVISORIES"]["spec"]["subjects"] == [
        "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.EVENTS.>",
        "$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.EVENTS.>",
    ]
    for stream in streams.values():
        assert stream["spec"]["replicas"] == 3
        assert stream["spec"]["storage"] == "file"
        assert stream["spec"]["retention"] == "limits"
        # Deleting a Stream object deletes the stream's messages: uninstall keeps them.
        assert stream["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


def test_nack_mode_declares_one_consumer_per_service_partition(
    rendered: dict[str, Rendered],
) -> None:
    """prod: 4 partitioned services x 3 partitions + 2 order-status replicas + dlq = 15."""
    declared = consumers(rendered["prod"])
    expected = {f"{s}-{k}" for s in CONSUMES for k in range(3)}
    expected |= {"order-status-0", "order-status-1", "dlq"}
    assert set(declared) == expected
    assert len(rendered["prod"].kind("Consumer")) == 15


def test_partition_consumers_filter_on_their_partition_token(
    rendered: dict[str, Rendered],
) -> None:
    """`<service>-<k>` receives exactly its event types on partition k."""
    declared = consumers(rendered["prod"])
    for service, event_types in CONSUMES.items():
        for k in range(3):
            spec = declared[f"{service}-{k}"]
            assert spec["streamName"] == "EVENTS"
            assert set(spec["filterSubjects"]) == {f"events.{t}.*.{k}" for t in event_types}
            assert spec["ackPolicy"] == "explicit"
            assert spec["maxDeliver"] == 5
            assert len(spec["backoff"]) == 4
            assert spec["ackWait"] == spec["backoff"][0]


def test_view_and_dlq_consumers_cover_everything(rendered: dict[str, Rendered]) -> None:
    """order-status replicas read every partition; the dlq durable reads ADVISORIES forever."""
    declared = consumers(rendered["prod"])
    for replica in range(2):
        filters = declared[f"order-status-{replica}"]["filterSubjects"]
        assert all(f.endswith(".*.*") for f in filters)
        assert len(filters) == 8
    assert declared["dlq"]["streamName"] == "ADVISORIES"
    assert declared["dlq"]["maxDeliver"] == -1
    assert "filterSubjects" not in declared["dlq"]


def test_default_values_provision_with_a_job(rendered: dict[str, Rendered]) -> None:
    """Defaults need no NACK: a Job and no Stream or Consumer objects."""
    chart = rendered["defaults"]
    assert len(chart.kind("Job")) == 1
    assert not chart.kind("Stream")
    assert not chart.kind("Consumer")
