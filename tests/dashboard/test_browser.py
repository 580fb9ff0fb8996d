"""The dashboard in a real browser: Debian's Chromium driven by Playwright, against
``polku demo`` (the README's command) with live events flowing.

Every page is opened, checked by axe-core (loaded from the local npm copy, never
downloaded) and photographed (``build/screenshots/``; the best are kept in
``docs/screenshots/``); no page may log a console error. Then the stories: log in,
watch the live numbers move, follow the Sankey into a customer, pause a journey,
look a customer up by phone number, and read it all on a phone.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import free_port

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
NODE_DIR = Path(__file__).parent / "node"
AXE = NODE_DIR / "node_modules" / "axe-core" / "axe.min.js"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "build" / "screenshots"
DEMO_TOKEN = "demo-admin-token"
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"]


@dataclass
class LiveDemo:
    url: str
    data_dir: Path
    process: subprocess.Popen[str]
    output: list[str] = field(default_factory=list)

    def admin(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {DEMO_TOKEN}"}, timeout=30)


@pytest.fixture(scope="module")
def axe_source() -> str:
    """axe-core from ``node/`` (``npm ci`` once, if absent)."""
    if not AXE.exists():
        assert shutil.which("npm"), "the browser tests need npm to install axe-core"
        install = subprocess.run(
            ["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund"],
            cwd=NODE_DIR, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert install.returncode == 0, f"npm ci failed:\n{install.stdout}\n{install.stderr}"
    return AXE.read_text()


@pytest.fixture(scope="module")
def live_demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveDemo]:
    """``polku demo`` as a user runs it, with live events (5 per second)."""
    data_dir = tmp_path_factory.mktemp("browser") / "demo"
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "polku", "demo", "--data-dir", str(data_dir), "--port", str(port),
         "--customers", "400", "--days", "30", "--rate", "5"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    demo = LiveDemo(url=f"http://127.0.0.1:{port}", data_dir=data_dir, process=process)
    deadline = time.monotonic() + 240
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        demo.output.append(line)
        if "Live events are flowing" in line:
            break
    else:
        process.kill()
    assert any("Live events are flowing" in line for line in demo.output), "".join(demo.output)
    os.set_blocking(process.stdout.fileno(), False)
    yield demo
    os.killpg(process.pid, signal.SIGINT)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    process.stdout.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "the browser tests need Debian's Chromium: apt-get install chromium"
    with sync_playwright() as playwright:
        found = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield found
        found.close()


@dataclass
class Tab:
    """One logged-in browser page that records console errors."""

    page: Any
    errors: list[str]
    axe: str

    def open(self, url: str) -> None:
        self.page.goto(url)
        self.settle()

    def settle(self) -> None:
        """Until the fragments are in and the charts are drawn."""
        self.page.wait_for_load_state("load")
        self.page.wait_for_function(
            "() => !document.querySelector('[aria-busy=\"true\"]') && "
            "[...document.querySelectorAll('[data-chart]')].every(c => c.getAttribute('data-drawn') && "
            "!c.querySelector('.loading'))",
            timeout=30_000,
        )

    def check_accessibility(self, name: str) -> None:
        if not self.page.evaluate("() => !!window.axe"):
            self.page.evaluate(self.axe)
        result = self.page.evaluate(
            "tags => axe.run(document, {runOnly: {type: 'tag', values: tags}, resultTypes: ['violations']})",
            AXE_TAGS,
        )
        problems = [
            f"{violation['id']} ({violation['impact']}): {violation['help']} — "
            + "; ".join(node["target"][0] if node["target"] else "?" for node in violation["nodes"][:5])
            for violation in result["violations"]
        ]
        assert not problems, f"{name}: accessibility problems:\n" + "\n".join(problems)

    def photograph(self, name: str, *, full_page: bool = True) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=full_page)

    def no_errors(self) -> None:
        assert not self.errors, "console errors:\n" + "\n".join(self.errors)


def _tab(browser: Any, axe: str, demo: LiveDemo, **context: Any) -> Tab:
    page = browser.new_context(**context).new_page()
    errors: list[str] = []
    page.on(
        "console", lambda message: errors.append(f"{page.url}: {message.text}") if message.type == "error" else None
    )
    page.on("pageerror", lambda error: errors.append(f"{page.url}: {error}"))
    tab = Tab(page=page, errors=errors, axe=axe)
    page.goto(f"{demo.url}/ui/")
    assert "/ui/login" in page.url, "the dashboard must ask for a token first"
    page.get_by_label("Admin token").fill(DEMO_TOKEN)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(r"/ui/$"))
    tab.settle()
    return tab


@pytest.fixture(scope="module")
def tab(browser: Any, axe_source: str, live_demo: LiveDemo) -> Iterator[Tab]:
    found = _tab(browser, axe_source, live_demo, viewport={"width": 1440, "height": 900})
    yield found
    found.page.context.close()


def test_a_wrong_token_is_refused_with_a_message(browser: Any, live_demo: LiveDemo) -> None:
    page = browser.new_context().new_page()
    page.goto(f"{live_demo.url}/ui/")
    page.get_by_label("Admin token").fill("not-the-token")
    page.get_by_role("button", name="Log in").click()
    assert page.get_by_role("alert").inner_text() == "That admin token is not valid."
    assert "/ui/login" in page.url
    page.context.close()


def test_the_overview_updates_live_without_reloading(tab: Tab, live_demo: LiveDemo) -> None:
    tab.open(f"{live_demo.url}/ui/")
    tab.page.evaluate("() => { window.__notReloaded = true; }")
    stamp = tab.page.locator("[data-live-stamp]")
    before = stamp.inner_text()
    tab.page.wait_for_function(
        "before => document.querySelector('[data-live-stamp]').textContent !== before", arg=before, timeout=6_000
    )
    assert tab.page.evaluate("() => window.__notReloaded === true")
    rate = float(tab.page.locator("[data-live='events-per-s']").inner_text().replace("\u202f", ""))
    assert rate > 0, "live demo events flow at 5 per second"
    with live_demo.admin() as client:
        people = client.get("/v1/overview").json()["people"]
    customers = tab.page.locator("[data-live='customers']").inner_text()
    assert customers.replace("\u202f", "") == str(people["customers"])
    tab.check_accessibility("overview")
    tab.photograph("overview")
    tab.no_errors()
