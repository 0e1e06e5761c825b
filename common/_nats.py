"""Connecting to NATS from settings (user/password, creds file, TLS)."""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import nats
from nats.aio.client import Client as NATS

from common.auth import inbox_prefix
from common.correlation import get_logger
from common.settings import NatsSettings

log = get_logger("choreo.nats")


def connect_options(settings: NatsSettings, *, name: str) -> dict[str, Any]:
    options: dict[str, Any] = {
        "servers": [s.strip() for s in settings.nats_url.split(",") if s.strip()],
        "name": name,
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": 0.5,
        "connect_timeout": 2,
        "allow_reconnect": True,
    }
    if settings.nats_user:
        options["user"] = settings.nats_user
        options["password"] = settings.nats_password or ""
        # Replies to this user's requests (pull fetches, PubAcks) come to its own prefix, the
        # only one its permissions let it subscribe to (common/auth.py).
        options["inbox_prefix"] = inbox_prefix(settings.nats_user)
    if settings.nats_creds:
        options["user_credentials"] = str(settings.nats_creds)
    if settings.nats_tls_ca or settings.nats_tls_cert:
        context = ssl.create_default_context(
            cafile=str(settings.nats_tls_ca) if settings.nats_tls_ca else None
        )
        if settings.nats_tls_cert and settings.nats_tls_key:
            context.load_cert_chain(str(settings.nats_tls_cert), str(settings.nats_tls_key))
        options["tls"] = context
    return options


async def connect(
    settings: NatsSettings, *, name: str, attempts: int = 1, stop: asyncio.Event | None = None
) -> NATS:
    """Connect, retrying the first connection up to `attempts` times with a capped backoff."""
    delay = 0.2
    for attempt in range(1, attempts + 1):
        try:
            return await nats.connect(**connect_options(settings, name=name))
        except Exception as exc:
            if attempt == attempts or (stop is not None and stop.is_set()):
                raise
            log.warning("nats connect failed, retrying", error=str(exc), attempt=attempt)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
    raise AssertionError("unreachable")
