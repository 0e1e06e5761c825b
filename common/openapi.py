"""`choreo openapi`: the OpenAPI documents of the app's HTTP APIs, written to files.

The document of a service is the one its running process serves at `/openapi.json`: the
same `build_app` builds it, from a ServiceContext without connections (building the schema
touches no connection, store or settings). `docs/openapi/` keeps them in the repo, and a
test fails when the committed documents differ from the generated ones.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Final, cast

from prometheus_client import CollectorRegistry

from common.metrics import Metrics

__all__ = ["document_text", "openapi_document", "register", "services_with_api"]

DEFAULT_OUT: Final = Path("docs/openapi")


def openapi_document(service: str) -> dict[str, Any]:
    """The OpenAPI document of one service of the app (as served at /openapi.json)."""
    from common.app import load_app
    from common.service import ServiceContext, build_app

    definition = load_app().definition(service)
    registry = CollectorRegistry()
    unused = cast(Any, None)  # no connection is opened to describe the API
    ctx = ServiceContext(
        definition=definition,
        settings=definition.settings_cls.model_construct(),
        nc=unused,
        js=unused,
        store=unused,
        publisher=unused,
        metrics=Metrics(registry, service=definition.spec.name),
        registry=registry,
    )
    return build_app(ctx).openapi()


def document_text(service: str) -> str:
    """The document as it is written to the repo: indented JSON, trailing newline."""
    return json.dumps(openapi_document(service), indent=2, ensure_ascii=False) + "\n"


def services_with_api() -> list[str]:
    from common.app import load_app

    app = load_app()
    return [name for name in app.SERVICES if app.definition(name).api is not None]


def _command(args: argparse.Namespace) -> int:
    services = args.services or services_with_api()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    for service in services:
        path = out / f"{service}.json"
        text = document_text(service)
        if args.check:
            if not path.exists() or path.read_text() != text:
                print(f"stale        {path}: run `choreo openapi --out {out}`", file=sys.stderr)
                return 1
            continue
        path.write_text(text)
        print(f"wrote        {path}")
    return 0


def register(subparsers: Any) -> None:
    cmd = subparsers.add_parser("openapi", help="write the OpenAPI documents of the HTTP APIs")
    cmd.add_argument("services", nargs="*", help="services (default: every service with an API)")
    cmd.add_argument("--out", type=Path, default=DEFAULT_OUT, help="directory (default docs/openapi)")
    cmd.add_argument("--check", action="store_true", help="exit 1 if a written document is stale")
    cmd.set_defaults(func=_command)
