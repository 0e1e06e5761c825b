"""The application the CLI runs: a module with `SERVICES`, `spec(name)`, `specs()` and
`definition(name)`. `CHOREO_APP` names it; the default is the reference order choreography."""

from __future__ import annotations

import importlib
import os
from types import ModuleType

__all__ = ["load_app"]

DEFAULT_APP = "services.catalog"


def load_app() -> ModuleType:
    return importlib.import_module(os.environ.get("CHOREO_APP", DEFAULT_APP))
