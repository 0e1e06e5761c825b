"""The two deployments the e2e scenario (scenario.py) runs against.

- `LocalTarget`: `choreo up --no-demo --partitions 2` in a subprocess, free ports, a temporary
  data dir. A payment process dies by SIGKILL (the `choreo up` supervisor restarts it, like a
  kubelet); logs are the JSON files in <data-dir>/logs; ledgers come from each payment
  process's `GET /ledger` (its port read from the process environment).
- `KindTarget`: the Helm release on the current kubectl context (`make e2e-kind` deploys it).
  The APIs through `kubectl port-forward` to the order and order-status Services; a payment pod
  dies by `kubectl delete pod` (the StatefulSet recreates it on the same claim); logs from
  `kubectl logs -l app.kubernetes.io/part-of=choreo --prefix`; ledgers through the API server's
  pod proxy to each payment pod's `GET /ledger`.
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Final

import httpx
import psutil

from common.natsserver import free_port
from tests.support import UpProcess

from .scenario import HttpApis

ROOT: Final = Path(__file__).resolve().parents[2]
START_SECONDS: Final = 60.0
STOP_SECONDS: Final = 40.0
# `kubectl logs --prefix` puts `[pod/<pod>/<container>] ` before each line.
KUBECTL_PREFIX: Final = re.compile(r"^\[[^\]]*\]\s*")


def lines_by_service(lines: list[str], correlation_id: str) -> dict[str, list[str]]:
    """JSON log lines containing the correlation id, grouped by their `service` field."""
    found: dict[str, list[str]] = {}
    for line in lines:
        if correlation_id not in line:
            continue
        try:
            record = json.loads(KUBECTL_PREFIX.sub("", line, count=1))
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and record.get("correlation_id") == correlation_id:
            found.setdefault(str(record.get("service")), []).append(line)
    return found


class LocalTarget(HttpApis):
    """`choreo up` on this machine: one OS process per (service, partition)."""

    name = "local"

    def __init__(self, data_dir: Path, *, partitions: int = 2, timeout: float = 30.0,
                 env: dict[str, str] | None = None) -> None:  # fmt: skip
        super().__init__()
        self.data_dir = data_dir
        self.partitions = partitions
        self.timeout = timeout
        self.up = UpProcess(data_dir, env=env or {}, partitions=partitions, ready_timeout=START_SECONDS)

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        return self.up.process

    @property
    def output(self) -> Path:
        return self.up.output_path

    def start(self) -> LocalTarget:
        self.up.start()
        self.order_url, self.status_url = self.up.urls["order"], self.up.urls["order-status"]
        return self

    def stop(self) -> None:
        """SIGTERM `choreo up` (it stops its children), SIGKILL whatever is left."""
        self.close_http()
        if self.process is None:
            return
        children = self._children()
        self.up.stop(grace=STOP_SECONDS)
        _gone, alive = psutil.wait_procs(children, timeout=5)
        for child in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()

    def _children(self) -> list[psutil.Process]:
        assert self.process is not None
        try:
            children: list[psutil.Process] = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        return children

    def _service_processes(self, service: str) -> dict[int, psutil.Process]:
        """Live `choreo serve <service>` children by partition (CHOREO_PARTITION)."""
        found = {}
        for child in self._children():
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                cmdline = child.cmdline()
                if cmdline[-2:] == ["serve", service] and child.status() != psutil.STATUS_ZOMBIE:
                    found[int(child.environ()["CHOREO_PARTITION"])] = child
        return found

    def kill_one_payment(self) -> str:
        """SIGKILL payment partition 0: no drain, no ack, its batch is redelivered."""
        victim = self._service_processes("payment")[0]
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        return f"payment-0 (pid {victim.pid}, SIGKILL)"

    def logs_for(self, correlation_id: str) -> dict[str, list[str]]:
        lines: list[str] = []
        for path in sorted((self.data_dir / "logs").glob("*.log")):
            lines += path.read_text(errors="replace").splitlines()
        return lines_by_service(lines, correlation_id)

    def payment_ledgers(self) -> dict[str, dict[str, int]]:
        """`GET /ledger` of every payment partition, waiting for restarted ones (bounded)."""
        deadline = time.monotonic() + self.timeout
        while True:
            ledgers = {}
            for partition, proc in self._service_processes("payment").items():
                with contextlib.suppress(httpx.HTTPError, psutil.NoSuchProcess, KeyError):
                    port = proc.environ()["CHOREO_HTTP_PORT"]
                    response = self.http.get(f"http://127.0.0.1:{port}/ledger")
                    if response.status_code == 200:
                        ledgers[f"payment-{partition}"] = response.json()
            if len(ledgers) == self.partitions:
                return ledgers
            assert time.monotonic() < deadline, f"payment ledgers unreachable: got {sorted(ledgers)}"
            time.sleep(0.2)


class KindTarget(HttpApis):
    """The Helm release `release` in `namespace` of the current kubectl context."""

    name = "kind"

    def __init__(self, *, namespace: str, release: str = "choreo", timeout: float = 120.0) -> None:
        super().__init__()
        self.namespace = namespace
        self.release = release
        self.timeout = timeout
        self.forwards: list[subprocess.Popen[bytes]] = []
        self.order_url = self._port_forward(f"svc/{release}-order")
        self.status_url = self._port_forward(f"svc/{release}-order-status")

    def kubectl(self, *args: str, timeout: float = 120.0) -> str:
        result = subprocess.run(
            ["kubectl", "--namespace", self.namespace, *args],
            capture_output=True, text=True, check=False, timeout=timeout,
        )  # fmt: skip
        assert result.returncode == 0, f"kubectl {' '.join(args)}: {result.stderr}"
        return result.stdout

    def _port_forward(self, resource: str) -> str:
        """`kubectl port-forward <svc> <free>:<service port>`, waiting until the local port accepts."""
        remote = self.kubectl("get", resource, "-o", "jsonpath={.spec.ports[0].port}").strip()
        port = free_port()
        forward = subprocess.Popen(
            ["kubectl", "--namespace", self.namespace, "port-forward", resource, f"{port}:{remote}",
             "--address", "127.0.0.1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.forwards.append(forward)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and forward.poll() is None:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                return f"http://127.0.0.1:{port}"
            time.sleep(0.2)
        self.stop()
        raise AssertionError(f"kubectl port-forward {resource} did not come up")

    def stop(self) -> None:
        self.close_http()
        for forward in self.forwards:
            forward.terminate()
            try:
                forward.wait(10)
            except subprocess.TimeoutExpired:
                forward.kill()
                forward.wait(5)

    def _payment_pods(self) -> list[dict[str, Any]]:
        selector = f"app.kubernetes.io/instance={self.release},app.kubernetes.io/component=payment"
        out = self.kubectl("get", "pods", "-l", selector, "-o", "json")
        pods: list[dict[str, Any]] = json.loads(out)["items"]
        return sorted(pods, key=lambda p: p["metadata"]["name"])

    def kill_one_payment(self) -> str:
        """Delete payment pod 0 (default grace: it drains); the StatefulSet recreates it."""
        name = f"{self.release}-payment-0"
        self.kubectl("delete", "pod", name, "--wait=false")
        return f"pod/{name} (deleted)"

    def logs_for(self, correlation_id: str) -> dict[str, list[str]]:
        out = self.kubectl(
            "logs", "-l", "app.kubernetes.io/part-of=choreo", "--prefix", "--tail=-1",
            "--max-log-requests=64", "--all-containers",
        )  # fmt: skip
        return lines_by_service(out.splitlines(), correlation_id)

    def payment_ledgers(self) -> dict[str, dict[str, int]]:
        """Each payment pod's `GET /ledger` through the API server's pod proxy; waits until every
        replica is Ready again after a deletion (bounded)."""
        deadline = time.monotonic() + self.timeout
        while True:
            pods = self._payment_pods()
            replicas = json.loads(self.kubectl("get", "statefulset", f"{self.release}-payment", "-o", "json"))
            ready = [p for p in pods if _ready(p) and not p["metadata"].get("deletionTimestamp")]
            if len(ready) == replicas["spec"]["replicas"]:
                ledgers = {}
                for pod in ready:
                    name = pod["metadata"]["name"]
                    raw = self.kubectl(
                        "get", "--raw", f"/api/v1/namespaces/{self.namespace}/pods/{name}:8080/proxy/ledger"
                    )
                    ledgers[name] = json.loads(raw)
                return ledgers
            assert time.monotonic() < deadline, (
                f"payment pods not ready: {[p['metadata']['name'] for p in pods]}"
            )
            time.sleep(2)


def _ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
