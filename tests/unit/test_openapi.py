"""The OpenAPI documents kept in docs/openapi/ are exactly what the services serve."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from common.openapi import document_text, services_with_api

DOCS = Path(__file__).resolve().parents[2] / "docs" / "openapi"


@pytest.mark.parametrize("service", services_with_api())
def test_committed_openapi_document_matches_the_generated_one(service: str) -> None:
    """docs/openapi/<service>.json equals the generated document (regenerate with `choreo openapi`)."""
    path = DOCS / f"{service}.json"
    assert path.exists(), f"{path} missing: run `choreo openapi --out docs/openapi`"
    assert path.read_text() == document_text(service), f"{path} is stale: run `choreo openapi`"


def test_order_and_order_status_documents_describe_the_contract_routes() -> None:
    """order documents POST /orders with 202/413/422; order-status its three query routes."""
    order = json.loads((DOCS / "order.json").read_text())
    responses = order["paths"]["/orders"]["post"]["responses"]
    assert {"202", "413", "422"} <= set(responses)
    status = json.loads((DOCS / "order-status.json").read_text())
    assert {"/orders/{order_id}", "/orders", "/traces/{correlation_id}"} <= set(status["paths"])


def test_no_stale_document_is_left_in_docs_openapi() -> None:
    """Every file in docs/openapi/ belongs to a service that still has an API."""
    assert {p.stem for p in DOCS.glob("*.json")} == set(services_with_api())
