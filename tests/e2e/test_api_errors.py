"""The order API rejects bad input with a 4xx and a JSON body, before anything is published."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.system import System, item

pytestmark = pytest.mark.e2e


def post(client: httpx.Client, system: System, **kwargs: object) -> httpx.Response:
    return client.post(f"{system.order_url}/orders", **kwargs)  # type: ignore[arg-type]


def assert_error(response: httpx.Response, status: int, error: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"] == error


@pytest.mark.parametrize(
    ("case", "body"),
    [
        ("missing customerId", {"items": [item("sku-1")]}),
        ("missing items", {"customerId": "c"}),
        ("empty items", {"customerId": "c", "items": []}),
        ("negative quantity", {"customerId": "c", "items": [item("sku-1", -1)]}),
        ("zero quantity", {"customerId": "c", "items": [item("sku-1", 0)]}),
        ("negative price", {"customerId": "c", "items": [item("sku-1", 1, -5)]}),
        ("101 items", {"customerId": "c", "items": [item("sku-1")] * 101}),
        ("malformed sku", {"customerId": "c", "items": [item("sku 1; drop")]}),
        ("unknown field", {"customerId": "c", "items": [item("sku-1")], "coupon": "x"}),
        ("not an object", [1, 2, 3]),
    ],
)
def test_invalid_order_is_rejected_with_422_and_a_json_error(
    system: System, client: httpx.Client, case: str, body: object
) -> None:
    """Each invalid body gets 422 {"error": "invalid_request", "detail": …}."""
    response = post(client, system, json=body)
    assert_error(response, 422, "invalid_request")
    assert response.json()["detail"], case


def test_malformed_json_is_rejected_with_422(system: System, client: httpx.Client) -> None:
    """A body that is not JSON gets 422 with a JSON error."""
    truncated = b'{"customerId": "c", "items": ['
    response = post(client, system, content=truncated, headers={"content-type": "application/json"})
    assert_error(response, 422, "invalid_request")


def test_oversize_body_is_rejected_with_413(system: System, client: httpx.Client) -> None:
    """A body over 64 KiB gets 413 with a JSON error, announced or streamed without a length."""
    padding = "x" * (65 * 1024)
    response = post(client, system, json={"customerId": padding, "items": [item("sku-1")]})
    assert_error(response, 413, "payload_too_large")

    def chunks() -> Iterator[bytes]:
        yield b'{"customerId": "'
        for _ in range(80):
            yield b"y" * 1024
        yield b'", "items": []}'

    streamed = post(client, system, content=chunks(), headers={"content-type": "application/json"})
    assert_error(streamed, 413, "payload_too_large")


def test_a_body_just_under_the_limit_is_judged_on_its_content(system: System, client: httpx.Client) -> None:
    """A 60 KiB body is read and validated (422 for a too long customerId), not refused as too large."""
    response = post(client, system, json={"customerId": "z" * (60 * 1024), "items": [item("sku-1")]})
    assert_error(response, 422, "invalid_request")


def test_invalid_correlation_header_is_replaced_by_a_fresh_id(system: System, client: httpx.Client) -> None:
    """An X-Correlation-Id that is not a valid id is ignored: the order gets a new correlationId."""
    body = {"customerId": "c", "items": [item("sku-1")]}
    response = post(client, system, json=body, headers={"X-Correlation-Id": "a b"})
    assert response.status_code == 202, response.text
    assert response.json()["correlationId"] != "a b"
