"""The trace page of order-status in headless Chromium, against a running `choreo up`.

Debian's chromium (`make chromium`, a dependency of `make pytest`) is driven by the `playwright`
package through `executable_path`: Playwright's own browser download is never used. A missing
chromium fails the test, with the fix. The screenshot goes to test-artifacts/trace-page.png.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, Page, expect, sync_playwright

from .conftest import LocalRun
from .queries import REPO

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
ARTIFACT = REPO / "test-artifacts" / "trace-page.png"
UI_TIMEOUT_MS = 15_000


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserContext]:
    """Headless Debian chromium with a fresh profile directory (--user-data-dir)."""
    executable = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
    if executable is None:
        pytest.fail("chromium is not installed: run `make chromium` (`make pytest` does it)", pytrace=False)
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            profile,
            executable_path=executable,
            args=ARGS,
            headless=True,
            viewport={"width": 1400, "height": 820},
            timeout=30_000,
        )
        yield context
        context.close()


@pytest.fixture
def page(browser: BrowserContext) -> Iterator[Page]:
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("requestfailed", lambda req: errors.append(f"request failed: {req.url}"))
    page.set_default_timeout(UI_TIMEOUT_MS)
    yield page
    assert errors == [], errors  # before closing: closing may abort a poll in flight
    page.close()


def test_page_lists_a_new_order_live_and_opens_its_trace(local_run: LocalRun, page: Page) -> None:
    """An order placed after the page loaded appears; clicking it draws lanes, events and arrows."""
    page.goto(local_run.status_url + "/")
    expect(page.locator("#live")).to_contain_text("live")
    order_id, cid = local_run.place("page", [{"sku": "sku-5", "quantity": 1, "unitPriceCents": 990}])
    row = page.locator(f'#orders tbody tr[data-correlation-id="{cid}"]')
    expect(row).to_be_visible()  # arrived by polling GET /orders, no reload
    expect(row.locator(".status")).to_have_text("shipped")
    assert row.get_attribute("data-order-id") == order_id
    row.click()
    expect(page.locator("#trace-cid")).to_have_text(cid)
    lanes = page.locator("#timeline svg g.lane")
    expect(lanes).to_have_count(4)
    assert lanes.evaluate_all("gs => gs.map(g => g.dataset.service)") == [
        "order", "payment", "inventory", "shipping",
    ]  # fmt: skip
    events = page.locator("#timeline svg g.event")
    expect(events).to_have_count(4)
    assert events.evaluate_all("gs => gs.map(g => g.dataset.eventType)") == [
        "order.placed", "payment.succeeded", "inventory.reserved", "shipment.scheduled",
    ]  # fmt: skip
    expect(page.locator("#timeline svg path.arrow")).to_have_count(3)
    expect(page.locator("#trace-events tbody tr")).to_have_count(4)


def test_trace_page_highlights_dead_letters_and_missing_links(local_run: LocalRun, page: Page) -> None:
    """The poisoned flow, opened by its link, shows a DLQ mark with a red arrow and a missing link."""
    _, cid = local_run.flows["poisoned"]
    page.goto(f"{local_run.status_url}/#cid={cid}")
    expect(page.locator("#trace-cid")).to_have_text(cid)
    dlq = page.locator('#timeline svg g.event[data-kind="dlq"]')
    expect(dlq).to_have_count(1)
    expect(dlq).to_contain_text("invalid_payload")
    expect(page.locator("#timeline svg path.arrow.dlq")).to_have_count(1)
    expect(page.locator("#timeline svg g.event.missing")).to_have_count(1)
    expect(page.locator('#timeline svg g.lane[data-service="order-status"]')).to_have_count(1)
    expect(page.locator("#trace-summary")).to_contain_text("1 dead-lettered · 1 missing links")
    page.locator(f'#orders tbody tr[data-correlation-id="{cid}"]').wait_for()
    ARTIFACT.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACT), full_page=True)
    assert ARTIFACT.stat().st_size > 10_000
