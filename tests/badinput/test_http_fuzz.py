"""Both HTTP APIs fuzzed from their served OpenAPI documents with schemathesis (its CLI, a
bounded number of examples per operation) against a running system: no 5xx, and every
response conforms to its schema."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.cluster import RunningSystem, running_system

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(150)]

MAX_EXAMPLES = 50
CHECKS = "not_a_server_error,response_schema_conformance"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def system(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningSystem]:
    async with running_system(
        tmp_path_factory.mktemp("fuzz"), partitions=1, cluster=False, auth=False
    ) as running:
        yield running


async def schemathesis(url: str) -> tuple[int, str]:
    cli = Path(sys.executable).parent / "schemathesis"
    process = await asyncio.create_subprocess_exec(
        str(cli), "run", f"{url}/openapi.json", "--checks", CHECKS,
        "--max-examples", str(MAX_EXAMPLES), "--seed", "20260101", "--request-timeout", "10",
        "--phases", "examples,coverage,fuzzing",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        out, _ = await asyncio.wait_for(process.communicate(), 120)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    return process.returncode or 0, out.decode(errors="replace")


@pytest.mark.parametrize("service", ["order", "order-status"])
async def test_api_survives_schema_driven_fuzzing(system: RunningSystem, service: str) -> None:
    """schemathesis finds no server error and no response outside the documented schema."""
    code, output = await schemathesis(system.url(service))
    print(output[-3000:])
    assert code == 0, output[-6000:]
