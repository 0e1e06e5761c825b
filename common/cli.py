"""The `choreo` command.

choreo serve <service>          run one service process (what a pod runs)
choreo provision                create/update streams and consumers from the declarations
choreo up                       the whole system locally (see common/up.py)
choreo graph                    the event flow as a Mermaid diagram
… and the commands registered by the modules in COMMAND_MODULES (dlq, projection, …)
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from common.app import load_app
from common.declarations import mermaid_graph

__all__ = ["main"]

# Modules that add sub-commands: each has `register(subparsers)`.
COMMAND_MODULES: Final[list[str]] = [
    "common.auth",
    "common.tracing",
    "common.projection",
    "common.dlqtool",
    "common.openapi",
]


def _serve(args: argparse.Namespace) -> int:
    from common.service import EXIT_USAGE, run_service

    app = load_app()
    if args.service not in app.SERVICES:
        print(f"unknown service {args.service!r}; one of: {', '.join(app.SERVICES)}", file=sys.stderr)
        return EXIT_USAGE
    return run_service(app.definition(args.service))


def _provision(args: argparse.Namespace) -> int:
    from common._nats import connect
    from common.correlation import configure_logging, get_logger
    from common.provision import provision
    from common.settings import ProvisionSettings

    configure_logging("provision")
    overrides = {
        k: v for k, v in (("partitions", args.partitions), ("view_replicas", args.view_replicas)) if v
    }
    settings = ProvisionSettings(**overrides)

    async def run() -> None:
        nc = await connect(settings, name="choreo-provision", attempts=args.attempts)
        try:
            report = await provision(nc.jetstream(), load_app().specs(), settings)
        finally:
            await nc.close()
        get_logger("choreo.provision").info(
            "provisioned", streams=report.streams, consumers=report.consumers, deleted=report.deleted
        )

    asyncio.run(run())
    return 0


def _graph(_args: argparse.Namespace) -> int:
    print(mermaid_graph(load_app().specs()))
    return 0


def _up(args: argparse.Namespace) -> int:
    from common.up import UpOptions, run_up

    return run_up(
        UpOptions(
            data_dir=Path(args.data_dir),
            nats_url=args.nats_url,
            nats_port=args.nats_port,
            partitions=args.partitions,
            view_replicas=args.view_replicas,
            order_port=args.order_port,
            status_port=args.status_port,
            demo=not args.no_demo,
            keep_data=args.keep_data,
            cluster=args.cluster,
            auth=args.auth,
        )
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="choreo", description="Choreography on NATS JetStream")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run one service process (configured by CHOREO_* env)")
    serve.add_argument("service")
    serve.set_defaults(func=_serve)

    prov = sub.add_parser("provision", help="create or update streams and consumers")
    prov.add_argument("--partitions", type=int, help="partitions P (default: CHOREO_PARTITIONS or 1)")
    prov.add_argument("--view-replicas", type=int, help="order-status replicas (default 1)")
    prov.add_argument("--attempts", type=int, default=30, help="NATS connection attempts")
    prov.set_defaults(func=_provision)

    graph = sub.add_parser("graph", help="print the event flow as a Mermaid diagram")
    graph.set_defaults(func=_graph)

    up = sub.add_parser("up", help="run the whole system locally on an embedded NATS server")
    up.add_argument("--no-demo", action="store_true", help="do not place the demo orders")
    up.add_argument("--nats-url", help="use this NATS instead of starting an embedded one")
    up.add_argument("--partitions", type=int, default=1, help="partitions (processes) per service")
    up.add_argument("--view-replicas", type=int, default=1, help="order-status replicas")
    up.add_argument("--data-dir", default=".data", help="NATS store, SQLite stores and logs")
    up.add_argument("--nats-port", type=int, default=4222)
    up.add_argument("--order-port", type=int, default=8080)
    up.add_argument("--status-port", type=int, default=8081)
    up.add_argument("--keep-data", action="store_true", help="keep the previous run's data")
    up.add_argument("--cluster", action="store_true", help="a 3-node NATS cluster, streams at R3")
    up.add_argument("--auth", action="store_true", help="one least-privilege NATS user per service")
    up.set_defaults(func=_up)

    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
