"""`free_port` never hands out the same port twice in one process (the `choreo up` plan gives
every service process its own HTTP port from it)."""

import socket

from common.natsserver import free_port


def test_ports_are_distinct_and_bindable() -> None:
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", ports[-1]))  # and free when handed out
