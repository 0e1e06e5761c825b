"""`choreo nats-auth`: the generated block loads in a real nats-server, `--password-env` keeps
every secret out of it, and `--env-dir` writes private per-user files."""

from __future__ import annotations

from pathlib import Path

import nats
import pytest

from common.app import load_app
from common.auth import authorization_block, password_env_var, read_env_file, users_for
from common.cli import main
from common.natsserver import NatsServer


async def test_password_env_block_holds_no_secret_and_authenticates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With --password-env the server resolves $CHOREO_NATS_PASSWORD_<USER> from its environment."""
    users = users_for(load_app().specs(), partitions=2)
    block = authorization_block(users, None)
    monkeypatch.setenv(password_env_var("order-status"), "from-the-secret")
    for user in users:
        if user.name != "order-status":
            monkeypatch.setenv(password_env_var(user.name), f"pw-{user.name}")
    assert "from-the-secret" not in block
    assert "$CHOREO_NATS_PASSWORD_ORDER_STATUS" in block
    server = NatsServer(store_dir=tmp_path / "js", extra_config=block, log_file=tmp_path / "nats.log").start()
    try:
        nc = await nats.connect(
            server.url, user="order-status", password="from-the-secret",
            inbox_prefix="_INBOX_order-status", max_reconnect_attempts=0,
        )  # fmt: skip
        assert nc.is_connected
        await nc.close()
    finally:
        server.stop()


def test_env_dir_files_are_private_and_stable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--env-dir writes 0600 <user>.env files; a second run keeps their passwords unless --rotate."""
    env_dir = tmp_path / "env"
    assert main(["nats-auth", "--partitions", "2", "--env-dir", str(env_dir)]) == 0
    first = capsys.readouterr().out
    payment = read_env_file(env_dir / "payment.env")
    assert payment["CHOREO_NATS_USER"] == "payment"
    assert payment["CHOREO_NATS_PASSWORD"] in first
    assert all(p.stat().st_mode & 0o077 == 0 for p in env_dir.glob("*.env"))
    assert main(["nats-auth", "--partitions", "2", "--env-dir", str(env_dir)]) == 0
    assert read_env_file(env_dir / "payment.env") == payment
    assert main(["nats-auth", "--partitions", "2", "--env-dir", str(env_dir), "--rotate"]) == 0
    assert read_env_file(env_dir / "payment.env")["CHOREO_NATS_PASSWORD"] != payment["CHOREO_NATS_PASSWORD"]


def test_service_permissions_follow_the_declarations() -> None:
    """payment publishes only its produced types and reaches only its own consumers."""
    payment = next(u for u in users_for(load_app().specs(), partitions=2) if u.name == "payment")
    events = sorted(s for s in payment.publish if s.startswith("events."))
    assert events == ["events.payment.failed.>", "events.payment.refunded.>", "events.payment.succeeded.>"]
    assert "$JS.API.CONSUMER.MSG.NEXT.EVENTS.payment-1" in payment.publish
    assert not [s for s in payment.publish if "shipping" in s or s.startswith(("$JS.API.STREAM.MSG", ">"))]
    assert payment.subscribe == ("_INBOX_payment.>",)
