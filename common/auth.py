"""`choreo nats-auth`: least-privilege NATS users generated from the service declarations.

One user per service (named after it), one for provisioning and one admin for operators:

    service   publish   events.<each produced type>.>
                        $JS.API.INFO, $JS.API.STREAM.INFO.EVENTS
                        $JS.API.CONSUMER.{INFO,MSG.NEXT}.EVENTS.<service>-<k>   (its consumers)
                        $JS.ACK.EVENTS.<service>-<k>.>                         (ack/nak/+WPI/+TERM)
                        dlq.<service>-<k>.>                                     (its dead letters)
              subscribe _INBOX_<service>.>   (its own reply inboxes: fetches, PubAcks, API replies)
    dlq       the `dlq` consumer on ADVISORIES, $JS.API.STREAM.MSG.GET.EVENTS, publish dlq.>
    provision stream/consumer create, update, info, list and consumer delete; no stream delete
    admin     everything (the operator CLI: dlq tool, rebuild, tests' checks)

Each user's reply inbox is its own prefix (`_INBOX_<user>`, set by common._nats.connect), so
no user can subscribe to another's replies, which would leak the messages its pull
fetches receive. A service's permissions name its consumers one by one, so they depend on P
(`--partitions`) and on the order-status replicas: regenerate when either changes.

Secrets: passwords are generated at run time (never written into the repository), or with
`--password-env` the block references environment variables (`$CHOREO_NATS_PASSWORD_<USER>`)
that nats-server resolves at start-up, so the block itself holds no secret.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from common.declarations import ADVISORIES_STREAM, DLQ_STREAM, EVENTS_STREAM, ServiceSpec, consumer_name
from common.provision import DLQ_CONSUMER

__all__ = [
    "ADMIN_USER",
    "PROVISION_USER",
    "NatsUser",
    "authorization_block",
    "env_file_text",
    "generate_passwords",
    "inbox_prefix",
    "password_env_var",
    "register",
    "users_for",
]

ADMIN_USER: Final = "admin"
PROVISION_USER: Final = "provision"
API: Final = "$JS.API"


@dataclass(frozen=True)
class NatsUser:
    """A NATS user and the subjects it may publish to and subscribe to (allow lists)."""

    name: str
    publish: tuple[str, ...]
    subscribe: tuple[str, ...]


def inbox_prefix(user: str) -> str:
    """The reply-inbox prefix of a user's connections (`_INBOX_<user>`)."""
    return f"_INBOX_{user}"


def _consumer_rights(stream: str, consumer: str) -> list[str]:
    return [
        f"{API}.CONSUMER.INFO.{stream}.{consumer}",
        f"{API}.CONSUMER.MSG.NEXT.{stream}.{consumer}",
        f"$JS.ACK.{stream}.{consumer}.>",
    ]


def _service_user(spec: ServiceSpec, *, partitions: int, view_replicas: int) -> NatsUser:
    publish = [f"events.{t}.>" for t in sorted(spec.produces)]
    publish += [f"{API}.INFO"]
    if spec.consumes_advisories:
        publish += [f"{API}.STREAM.INFO.{ADVISORIES_STREAM}"]
        publish += _consumer_rights(ADVISORIES_STREAM, DLQ_CONSUMER)
        publish += [f"{API}.STREAM.MSG.GET.{EVENTS_STREAM}", "dlq.>"]
    elif spec.consumes:
        publish += [f"{API}.STREAM.INFO.{EVENTS_STREAM}"]
        count = partitions if spec.partitioned else view_replicas
        for index in range(count):
            consumer = consumer_name(spec.name, index)
            publish += _consumer_rights(EVENTS_STREAM, consumer)
            publish.append(f"dlq.{consumer}.>")
    if not spec.partitioned and spec.consumes:
        # A query view shows dead letters beside its traces: read-only DLQ access through an
        # ordered (ephemeral, flow-controlled) consumer. It can neither write nor ack them.
        publish += [
            f"{API}.STREAM.INFO.{DLQ_STREAM}",
            f"{API}.CONSUMER.CREATE.{DLQ_STREAM}",
            f"{API}.CONSUMER.CREATE.{DLQ_STREAM}.>",
            f"{API}.CONSUMER.DELETE.{DLQ_STREAM}.>",
            f"$JS.FC.{DLQ_STREAM}.>",
        ]
    return NatsUser(spec.name, tuple(publish), (f"{inbox_prefix(spec.name)}.>",))


def _provision_user() -> NatsUser:
    publish = [
        f"{API}.INFO",
        f"{API}.STREAM.CREATE.*",
        f"{API}.STREAM.UPDATE.*",
        f"{API}.STREAM.INFO.*",
        f"{API}.STREAM.NAMES",
        f"{API}.STREAM.LIST",
        f"{API}.CONSUMER.CREATE.>",
        f"{API}.CONSUMER.DURABLE.CREATE.>",
        f"{API}.CONSUMER.INFO.>",
        f"{API}.CONSUMER.NAMES.*",
        f"{API}.CONSUMER.LIST.*",
        f"{API}.CONSUMER.DELETE.{EVENTS_STREAM}.*",  # consumers of partitions that are gone
    ]
    return NatsUser(PROVISION_USER, tuple(publish), (f"{inbox_prefix(PROVISION_USER)}.>",))


def users_for(specs: Iterable[ServiceSpec], *, partitions: int = 1, view_replicas: int = 1) -> list[NatsUser]:
    """Every service's user, then `provision` and `admin`."""
    users = [_service_user(s, partitions=partitions, view_replicas=view_replicas) for s in specs]
    names = {u.name for u in users}
    for reserved in (PROVISION_USER, ADMIN_USER):
        if reserved in names:
            raise ValueError(f"a service may not be called {reserved!r}: that NATS user is reserved")
    users.append(_provision_user())
    # The admin keeps the default _INBOX prefix: operator tools (the nats CLI) use it.
    users.append(NatsUser(ADMIN_USER, (">",), (">",)))
    return users


def password_env_var(user: str) -> str:
    """`CHOREO_NATS_PASSWORD_<USER>`: the variable a `--password-env` block references."""
    return "CHOREO_NATS_PASSWORD_" + user.upper().replace("-", "_")


def generate_passwords(
    users: Iterable[NatsUser], existing: Mapping[str, str] | None = None
) -> dict[str, str]:
    """A fresh random password (32 bytes, URL-safe) per user, keeping any in `existing`."""
    existing = existing or {}
    return {u.name: existing.get(u.name) or secrets.token_urlsafe(32) for u in users}


def _quoted(items: Iterable[str]) -> str:
    return "[" + ", ".join(f'"{item}"' for item in items) + "]"


def authorization_block(users: Iterable[NatsUser], passwords: Mapping[str, str] | None) -> str:
    """The nats-server `authorization { users = [...] }` block. With `passwords` None each
    password is the environment variable `$CHOREO_NATS_PASSWORD_<USER>` (no secret inside)."""
    lines = ["authorization {", "  users = ["]
    for user in users:
        password = f'"{passwords[user.name]}"' if passwords is not None else f"${password_env_var(user.name)}"
        lines += [
            f'    {{user: "{user.name}", password: {password}, permissions: {{',
            f"      publish: {{allow: {_quoted(user.publish)}}}",
            f"      subscribe: {{allow: {_quoted(user.subscribe)}}}",
            "    }}",
        ]
    lines += ["  ]", "}"]
    return "\n".join(lines) + "\n"


def env_file_text(user: str, password: str) -> str:
    return f"CHOREO_NATS_USER={user}\nCHOREO_NATS_PASSWORD={password}\n"


def read_env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.lstrip().startswith("#"):
            values[key.strip()] = value.strip()
    return values


def _write_secret(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


def _existing_passwords(env_dir: Path | None) -> dict[str, str]:
    """Passwords already in `<env-dir>/<user>.env` (kept unless --rotate)."""
    if env_dir is None or not env_dir.is_dir():
        return {}
    found = {}
    for path in env_dir.glob("*.env"):
        values = read_env_file(path)
        if values.get("CHOREO_NATS_USER") and values.get("CHOREO_NATS_PASSWORD"):
            found[values["CHOREO_NATS_USER"]] = values["CHOREO_NATS_PASSWORD"]
    return found


def _command(args: argparse.Namespace) -> int:
    from common.app import load_app

    users = users_for(load_app().specs(), partitions=args.partitions, view_replicas=args.view_replicas)
    env_dir = Path(args.env_dir) if args.env_dir else None
    secret_dir = Path(args.secret_dir) if args.secret_dir else None
    if args.password_env and (env_dir or secret_dir):
        print("--password-env emits no passwords: drop --env-dir/--secret-dir", file=sys.stderr)
        return 2
    passwords: dict[str, str] | None = None
    if not args.password_env:
        passwords = generate_passwords(users, None if args.rotate else _existing_passwords(env_dir))
    block = authorization_block(users, passwords)
    if args.out:
        _write_secret(Path(args.out), block)
    else:
        sys.stdout.write(block)
    if passwords is not None:
        for name, password in passwords.items():
            if env_dir is not None:
                _write_secret(env_dir / f"{name}.env", env_file_text(name, password))
            if secret_dir is not None:  # kubectl create secret generic … --from-file=<dir>
                _write_secret(secret_dir / f"{name}-password", password)
    return 0


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "nats-auth",
        help="print the NATS authorization block (one least-privilege user per service)",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument("--partitions", type=int, default=int(os.environ.get("CHOREO_PARTITIONS", "1")))
    parser.add_argument("--view-replicas", type=int, default=1, help="order-status replicas")
    parser.add_argument(
        "--password-env", action="store_true",
        help="reference $CHOREO_NATS_PASSWORD_<USER> in the block instead of generating passwords",
    )  # fmt: skip
    parser.add_argument("--env-dir", help="write <user>.env (CHOREO_NATS_USER/PASSWORD), mode 0600")
    parser.add_argument("--secret-dir", help="write <user>-password files (the chart's Secret keys)")
    parser.add_argument("--out", help="write the block to this file (mode 0600) instead of stdout")
    parser.add_argument("--rotate", action="store_true", help="new passwords even if --env-dir has some")
    parser.set_defaults(func=_command)
