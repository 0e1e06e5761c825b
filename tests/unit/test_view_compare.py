"""Comparing two copies of a query view (common/_view.py) and the rebuild command's guards."""

from __future__ import annotations

import pytest

from common._view import diff_views, view_digest
from common.cli import main


def test_digest_ignores_row_order_and_sees_any_changed_column() -> None:
    """Two equal snapshots built in another order have one digest; one changed value changes it."""
    a = {"o1": ("c1", "shipped", None, "e1,e2"), "o2": ("c2", "cancelled", "out_of_stock", "e3")}
    b = dict(reversed(list(a.items())))
    assert view_digest(a) == view_digest(b)
    assert view_digest(a)["rows"] == 2
    changed = {**a, "o2": ("c2", "cancelled", "payment_declined", "e3")}
    assert view_digest(changed)["digest"] != view_digest(a)["digest"]


def test_diff_reports_missing_extra_and_different_keys() -> None:
    """Keys only in the rebuild, only in the live view, and in both with other values are listed."""
    rebuilt = {"o1": ("c", "shipped"), "o2": ("c", "refunding"), "o3": ("c", "shipped")}
    live = {"o1": ("c", "shipped"), "o2": ("c", "cancelled"), "o4": ("c", "shipped")}
    diff = diff_views(rebuilt, live)
    assert (diff.only_rebuilt, diff.only_live, diff.different) == (["o3"], ["o4"], ["o2"])
    assert not diff.equal
    assert diff_views(live, dict(live)).equal


@pytest.mark.parametrize("service", ["payment", "dlq", "nope"])
def test_rebuild_refuses_services_that_are_not_query_views(
    service: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Only a service that consumes events and produces none can be replayed (exit 2, no NATS needed)."""
    assert main(["projection", "rebuild", "--service", service]) == 2
    assert capsys.readouterr().err
