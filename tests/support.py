"""Helpers shared by the test suites: small payload models for test apps, bounded waits,
stopping a subprocess, and `choreo up` in a subprocess."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field

from common import Payload, PayloadRegistry
from common.natsserver import free_port


class Item(Payload):
    sku: str
    quantity: int = Field(ge=1)
    unit_price_cents: int = Field(ge=0)


class OrderPlaced(Payload):
    order_id: str
    customer_id: str
    items: list[Item] = Field(min_length=1, max_length=100)
    total_cents: int = Field(ge=0)


class PaymentSucceeded(Payload):
    order_id: str
    payment_id: str
    amount_cents: int


def payload_registry() -> PayloadRegistry:
    """v1 models of `order.placed` and `payment.succeeded`, for the test apps."""
    registry = PayloadRegistry()
    registry.register("order.placed", 1, OrderPlaced)
    registry.register("payment.succeeded", 1, PaymentSucceeded)
    return registry


async def wait_until(
    predicate: Callable[[], Awaitable[bool]], *, timeout: float = 20.0, interval: float = 0.05, what: str = ""
) -> None:
    """Poll `predicate` until true; bounded in attempts and in time."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / interval) + 1):
        if await predicate():
            return
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s: {what}")


def stop_process(process: subprocess.Popen[Any], *, grace: float = 40.0) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


REPO = Path(__file__).resolve().parents[1]


@dataclass
class UpProcess:
    """`choreo up` in a subprocess on free loopback ports, its output in a file: the one way
    the suites start a whole local system (the chaos/security cluster uses the Supervisor)."""

    data_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    partitions: int = 1
    demo: bool = False
    ready_timeout: float = 90.0
    process: subprocess.Popen[bytes] | None = None
    urls: dict[str, str] = field(default_factory=dict)

    @property
    def output_path(self) -> Path:
        return self.data_dir.parent / f"{self.data_dir.name}-up.out"

    @property
    def lines(self) -> list[str]:
        if not self.output_path.exists():
            return []
        return self.output_path.read_text(errors="replace").splitlines()

    def start(self) -> UpProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            sys.executable, "-m", "common.cli", "up", "--data-dir", str(self.data_dir),
            "--nats-port", str(free_port()), "--order-port", str(free_port()),
            "--status-port", str(free_port()), "--partitions", str(self.partitions),
        ]  # fmt: skip
        if not self.demo:
            args.append("--no-demo")
        with self.output_path.open("wb") as out:
            self.process = subprocess.Popen(
                args,
                cwd=REPO,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C in the terminal reaches pytest, not the system
            )
        try:
            ready = self.wait_line("READY ", timeout=self.ready_timeout)
        except BaseException:
            self.stop(sig=signal.SIGTERM)
            raise
        self.urls = dict(part.split("=", 1) for part in ready.split()[1:])
        return self

    def wait_line(self, prefix: str, *, timeout: float, after: int = 0) -> str:
        """The first output line (from index `after`) starting with `prefix`; bounded."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines[after:]:
                if line.startswith(prefix):
                    return line
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"choreo up exited with {self.process.returncode}:\n{self.output_tail()}")
            time.sleep(0.1)
        raise TimeoutError(f"no line starting with {prefix!r} after {timeout}s:\n{self.output_tail()}")

    def output_tail(self, n: int = 40) -> str:
        return "\n".join(self.lines[-n:])

    def stop(self, *, sig: int = signal.SIGTERM, grace: float = 45.0) -> int:
        """Stop `choreo up` (it stops its children); SIGKILL its group after `grace`."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        return self.process.returncode
