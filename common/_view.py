"""Comparing two copies of a query view: a digest (for a copy behind HTTP) and a diff.

A view's `snapshot(db)` maps each key (an order id, say) to a tuple of the columns that must
match; the columns that may differ between copies (timestamps of processing) are left out.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiosqlite
import orjson

__all__ = ["Snapshot", "SnapshotFn", "ViewDiff", "diff_views", "view_digest"]

Snapshot = Mapping[str, tuple[Any, ...]]
SnapshotFn = Callable[[aiosqlite.Connection], Awaitable[Snapshot]]


def view_digest(view: Snapshot) -> dict[str, Any]:
    """`{"rows": n, "digest": sha256}` of a snapshot, independent of row order."""
    canonical = orjson.dumps({key: list(row) for key, row in view.items()}, option=orjson.OPT_SORT_KEYS)
    return {"rows": len(view), "digest": hashlib.sha256(canonical).hexdigest()}


@dataclass
class ViewDiff:
    """Keys only in the rebuilt copy, only in the live one, and in both with other values."""

    only_rebuilt: list[str] = field(default_factory=list)
    only_live: list[str] = field(default_factory=list)
    different: list[str] = field(default_factory=list)

    @property
    def equal(self) -> bool:
        return not (self.only_rebuilt or self.only_live or self.different)


def diff_views(rebuilt: Snapshot, live: Snapshot) -> ViewDiff:
    return ViewDiff(
        only_rebuilt=sorted(set(rebuilt) - set(live)),
        only_live=sorted(set(live) - set(rebuilt)),
        different=sorted(k for k in set(rebuilt) & set(live) if tuple(rebuilt[k]) != tuple(live[k])),
    )
