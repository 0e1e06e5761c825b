"""End-to-end fixtures: one whole system shared by the tests that need a single partition (each test uses its
own orders, so the scenarios stay independent); service logs are dumped when a test fails."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.system import System

_RUNNING: list[System] = []


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report: pytest.TestReport = yield
    if report.failed:
        for system in _RUNNING:
            report.sections.append((f"choreo system in {system.data_dir}", system.logs_tail()))
    return report


def start_system(tmp_path_factory: pytest.TempPathFactory, name: str, **kwargs: object) -> System:
    system = System(data_dir=Path(tmp_path_factory.mktemp(name)), **kwargs)  # type: ignore[arg-type]
    _RUNNING.append(system)
    try:
        system.start()
    except Exception:
        print(system.logs_tail() if system.data_dir.exists() else "")
        system.stop()
        _RUNNING.remove(system)
        raise
    return system


def stop_system(system: System) -> int:
    try:
        return system.stop()
    finally:
        _RUNNING.remove(system)


@pytest.fixture(scope="session")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    """One system (1 partition) shared by the flow and API tests; ack_wait 5 s so a killed process's
    in-flight messages come back quickly."""
    running = start_system(tmp_path_factory, "system", env={"CHOREO_ACK_WAIT_SECONDS": "5"})
    yield running
    stop_system(running)


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10.0) as http:
        yield http
