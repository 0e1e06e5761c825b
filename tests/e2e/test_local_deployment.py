"""The e2e scenario (scenario.py) against the local multi-process deployment: `choreo up
--no-demo --partitions 2`, every service its own OS process, an embedded nats-server.

The same steps run on a kind cluster in test_kind.py. One `choreo up` serves the whole module.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from . import scenario
from .targets import LocalTarget

pytestmark = pytest.mark.e2e

# A SIGKILLed payment process never acks its batch: with a 3 s ack wait its messages are
# redelivered within seconds instead of the default 30.
FAST_REDELIVERY = {"CHOREO_ACK_WAIT_SECONDS": "3"}


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalTarget]:
    """`choreo up` with two partitions on free ports and a temporary data dir."""
    target = LocalTarget(tmp_path_factory.mktemp("choreo-up"), partitions=2, env=FAST_REDELIVERY)
    target.start()
    try:
        yield target
    finally:
        target.stop()


def test_local_order_reaches_shipped(local: LocalTarget) -> None:
    """A valid order placed on the order API ends `shipped` in the order-status view."""
    scenario.order_reaches_shipped(local)


def test_local_declined_and_out_of_stock_orders_are_cancelled(local: LocalTarget) -> None:
    """An order above the payment limit and one beyond the stock end `cancelled` with their
    reasons; the ledger shows one decline and one refund."""
    scenario.declined_and_out_of_stock_orders_are_cancelled(local)


def test_local_payment_kill_mid_load_loses_and_double_charges_nothing(local: LocalTarget) -> None:
    """200 orders with a payment process SIGKILLed halfway: all ship, exactly 200 charges."""
    killed = scenario.payment_death_mid_load_loses_and_double_charges_nothing(local, orders=200)
    restarts = local.output.read_text(errors="replace")
    assert "restart      payment-0" in restarts, f"{killed} was not restarted by choreo up"


def test_local_correlation_id_is_in_every_service_log(local: LocalTarget) -> None:
    """One order's correlation id is in the logs of order, payment, inventory, shipping and
    order-status (<data-dir>/logs)."""
    scenario.correlation_id_is_logged_by_every_service(local)
