"""Provisioning: the pre-install/pre-upgrade hook Job, or NACK Stream and Consumer objects."""

from __future__ import annotations

import re
from typing import Any

import pytest

from common.declarations import filter_subjects
from common.provision import DLQ_CONSUMER, consumer_configs, stream_configs
from common.settings import ProvisionSettings
from services.catalog import specs

from .conftest import K8S, RELEASE, Rendered, helm_template, sets

HOOK = "helm.sh/hook"
WEIGHT = "helm.sh/hook-weight"
# What each partitioned service consumes, from the services' own declarations (events.py).
CONSUMES = {s.name: set(s.consumes) for s in specs() if s.partitioned and s.consumes}
# NACK mode with every value that feeds a consumer or stream set away from its default, and the
# ProvisionSettings `choreo provision` would run with for the same values.
DRIFT_VALUES = sets(
    "provisioning.mode=nack",
    "partitions=3",
    "services.orderStatus.replicas=2",
    "config.ackWaitSeconds=7",
    "config.maxDeliver=4",
    "provisioning.maxAckPending=500",
    "provisioning.streamReplicas=3",
    "provisioning.eventsMaxAgeDays=3",
    "provisioning.duplicateWindowSeconds=90",
    "provisioning.dlqMaxAgeDays=10",
)
DRIFT_SETTINGS = ProvisionSettings(
    partitions=3,
    view_replicas=2,
    ack_wait_seconds=7,
    max_deliver=4,
    max_ack_pending=500,
    stream_replicas=3,
    events_max_age_days=3,
    duplicate_window_seconds=90,
    dlq_max_age_days=10,
)
DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def parse_go_span(text: str) -> float:
    """A Go duration as NACK takes it (`30s`, `168h`, `1h30m`), as a number of seconds."""
    match = DURATION.match(text)
    assert text, "empty Go time span"
    assert match, f"not a Go time span: {text!r}"
    hours, minutes, secs = (int(g or 0) for g in match.groups())
    return float(hours * 3600 + minutes * 60 + secs)


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


@pytest.fixture(scope="module")
def drift_chart(helm: str) -> Rendered:
    """NACK mode rendered with non-default consumer and stream values."""
    return helm_template(helm, DRIFT_VALUES)


def test_nack_consumers_equal_what_choreo_provision_creates(drift_chart: Rendered) -> None:
    """Every rendered Consumer has the name, stream, filters and delivery settings that
    common.provision.consumer_configs derives from the services' declarations, and no more."""
    expected = {c.durable_name: c for c in consumer_configs(specs(), DRIFT_SETTINGS)}
    declared = consumers(drift_chart)
    assert set(declared) == set(expected)
    for name, config in expected.items():
        spec = declared[name]
        assert spec["streamName"] == ("ADVISORIES" if name == DLQ_CONSUMER else "EVENTS"), name
        assert spec.get("filterSubjects", []) == list(config.filter_subjects or []), name
        assert spec["ackPolicy"] == "explicit", name
        assert spec["deliverPolicy"] == "all", name
        assert parse_go_span(spec["ackWait"]) == config.ack_wait, name
        assert [parse_go_span(d) for d in spec.get("backoff", [])] == list(config.backoff or []), name
        assert spec["maxDeliver"] == config.max_deliver, name
        assert spec["maxAckPending"] == config.max_ack_pending, name
        if config.description:
            assert spec["description"] == config.description, name


def test_nack_consumer_filters_equal_the_declarations_per_partition(drift_chart: Rendered) -> None:
    """`<service>-<k>` filters on exactly common.declarations.filter_subjects(spec, k)."""
    declared = consumers(drift_chart)
    for spec in specs():
        if spec.consumes_advisories:
            assert declared[DLQ_CONSUMER]["streamName"] == "ADVISORIES"
            continue
        count = DRIFT_SETTINGS.partitions if spec.partitioned else DRIFT_SETTINGS.view_replicas
        for k in range(count):
            assert declared[f"{spec.name}-{k}"]["filterSubjects"] == filter_subjects(spec, k)
        assert f"{spec.name}-{count}" not in declared


def test_nack_streams_equal_what_choreo_provision_creates(drift_chart: Rendered) -> None:
    """Stream subjects, retention, replicas, windows and the partition transform match
    common.provision.stream_configs for the same values."""
    rendered = {s["spec"]["name"]: s["spec"] for s in drift_chart.kind("Stream")}
    expected = {c.name: c for c in stream_configs(DRIFT_SETTINGS)}
    assert set(rendered) == set(expected)
    for name, config in expected.items():
        spec = rendered[name]
        assert spec["subjects"] == config.subjects, name
        assert spec["replicas"] == config.num_replicas, name
        assert parse_go_span(spec["maxAge"]) == config.max_age, name
        if config.duplicate_window:
            assert parse_go_span(spec["duplicateWindow"]) == config.duplicate_window, name
        transform = config.subject_transform
        if transform is None:
            assert "subjectTransform" not in spec, name
        else:
            assert spec["subjectTransform"] == {"source": transform.src, "dest": transform.dest}
