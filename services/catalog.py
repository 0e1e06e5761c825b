"""The reference application: its services by name, for `choreo serve` and the CLI."""

from __future__ import annotations

import importlib
from typing import Final

from common.declarations import ServiceSpec
from common.service import ServiceDefinition

# name -> package; each package has `events.SPEC` and `app.definition`.
SERVICES: Final = {
    "order": "services.order",
    "payment": "services.payment",
    "inventory": "services.inventory",
    "shipping": "services.shipping",
    "order-status": "services.order_status",
    "dlq": "services.dlq",
}


def spec(name: str) -> ServiceSpec:
    module = importlib.import_module(f"{SERVICES[name]}.events")
    return module.SPEC  # type: ignore[no-any-return]


def specs() -> list[ServiceSpec]:
    return [spec(name) for name in SERVICES]


def definition(name: str) -> ServiceDefinition:
    module = importlib.import_module(f"{SERVICES[name]}.app")
    return module.definition  # type: ignore[no-any-return]


from services.demo import run_demo  # noqa: E402  (the app's demo for `choreo up`)

__all__ = ["SERVICES", "definition", "run_demo", "spec", "specs"]
