"""The status page in a real browser: Debian's chromium, driven by Playwright, against a daemon
probing the real registry with one repository's blob links removed."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from canary.testbed import start_registry
from tests.conftest import seed_images, write_config
from tests.daemon_fixtures import DaemonFactory, DaemonProcess, daemon_catalog, eventually

pytestmark = pytest.mark.registry

LOST = "canary/lost"
HEALTHY = ("canary/alpine", "canary/busybox")
IMAGES = [{"repository": r, "tag": "v1"} for r in (*HEALTHY, LOST)]
# Debian's chromium, not a browser Playwright would download; the launcher script comes first.
CHROMIUM = ("/usr/bin/chromium", "/usr/lib/chromium/chromium")
# Root needs --no-sandbox; the rest keep a closed network from stalling or refusing its start.
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium() -> str:
    for path in CHROMIUM:
        if shutil.which(path):
            return path
    pytest.fail("Debian's chromium is not installed: `make sysdeps` installs it")


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    """A daemon pulling 3 images every second, one of them with its blob links gone."""
    root = tmp_path_factory.mktemp("status-page")
    with contextlib.ExitStack() as stack:
        registry = stack.enter_context(start_registry(root / "registry"))
        environments = [{"name": "local", "url": registry.url}]
        seed_images(write_config(root, {"environments": environments, "images": IMAGES}))
        registry.remove_layer_links(LOST)
        (root / "daemon").mkdir()
        factory = DaemonFactory(root / "daemon")
        stack.callback(factory.stop_all)
        running = factory.start("canary", daemon_catalog(environments, IMAGES))

        def all_pulled() -> None:
            _, state = running.get_json("/status")
            assert all(image["ok"] is not None for image in state["images"]), state

        eventually(all_pulled, timeout=30)
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium(), headless=True, args=FLAGS)
        try:
            yield launched
        finally:
            launched.close()


def cell_state(page: Page, image: str) -> Any:
    return page.get_attribute(f'td.cell[data-image="local {image}:v1"]', "data-state")


def test_the_broken_image_stands_out_and_the_healthy_ones_are_green(
    daemon: DaemonProcess, browser: Browser, tmp_path: Path
) -> None:
    """In chromium the lost repository's cell says blob_unknown on a red background, the others
    are green, the failure is explained below the matrix, and a screenshot is saved."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(daemon.url + "/")
    assert cell_state(page, LOST) == "loss"
    lost_cell = page.locator(f'td.cell[data-image="local {LOST}:v1"]')
    assert "blob_unknown" in lost_cell.inner_text()
    background = lost_cell.evaluate("cell => getComputedStyle(cell).backgroundColor")
    red, green, _ = (int(x) for x in background.removeprefix("rgb(").rstrip(")").split(","))
    assert red > green, background
    for healthy in HEALTHY:
        assert cell_state(page, healthy) == "ok"
        color = page.locator(f'td.cell[data-image="local {healthy}:v1"]').evaluate(
            "cell => getComputedStyle(cell).backgroundColor"
        )
        red, green, _ = (int(x) for x in color.removeprefix("rgb(").rstrip(")").split(","))
        assert green > red, color
    failure = page.locator(f'section.failure[data-image="local · {LOST}:v1"]')
    assert failure.is_visible()
    text = failure.inner_text()
    for expected in ("blob_unknown", "404", "registry", "config", "missing"):
        assert expected in text, text
    assert "1 of 3 image pulls failing" in page.locator("div.summary").inner_text()
    screenshot = tmp_path / "status.png"
    page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.read_bytes().startswith(b"\x89PNG")
    page.close()


def test_it_reads_on_a_phone_with_javascript_off(
    daemon: DaemonProcess, browser: Browser, tmp_path: Path
) -> None:
    """On a 375 px wide screen with JavaScript disabled the page still shows the failure, and
    only the wide tables scroll sideways, not the page."""
    context = browser.new_context(
        viewport={"width": 375, "height": 812}, java_script_enabled=False, is_mobile=True
    )
    page = context.new_page()
    page.goto(daemon.url + "/")
    assert cell_state(page, LOST) == "loss"
    assert page.locator(f'section.failure[data-image="local · {LOST}:v1"]').is_visible()
    context.close()
    # Measured with script on: the page is wider than the screen only if something overflows.
    phone = browser.new_page(viewport={"width": 375, "height": 812})
    phone.goto(daemon.url + "/")
    overflow = phone.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page is {overflow} px wider than the phone"
    phone.screenshot(path=str(tmp_path / "status-phone.png"), full_page=True)
    phone.close()
