"""The dashboard in a real browser: Debian's Chromium driven by Playwright, against
``polku demo`` (the README's command) with live events flowing.

Every page is opened, checked by axe-core (loaded from the local npm copy, never
downloaded) and photographed (``build/screenshots/``; the best are kept in
``docs/screenshots/``); no page may log a console error. Then the stories: log in,
watch the live numbers move, follow the Sankey into a customer, pause a journey,
look a customer up by phone number, and read it all on a phone.
"""

from __future__ import annotations

import contextlib
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
    try:
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            demo.output.append(line)
            if "Live events are flowing" in line:
                break
        assert any("Live events are flowing" in line for line in demo.output), "".join(demo.output)
        os.set_blocking(process.stdout.fileno(), False)
        yield demo
    finally:  # also when the demo did not start: no process or pipe left behind
        with contextlib.suppress(ProcessLookupError):
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


def _first(client: httpx.Client, path: str, key: str) -> str:
    items = client.get(path).json()[key]
    assert items, f"the demo has no {key}"
    return str(items[0]["id"])


def test_every_page_opens_passes_the_accessibility_check_and_logs_no_error(tab: Tab, live_demo: LiveDemo) -> None:
    with live_demo.admin() as client:
        journey = _first(client, "/v1/journeys", "journeys")
        survey = _first(client, "/v1/surveys", "surveys")
        customer = client.get("/v1/profiles/lookup", params={"user_id": "cust-00007"}).json()["customer_id"]
    pages = {
        "journeys": "/ui/journeys",
        "journey": "/ui/journeys/password-help" if journey else "/ui/journeys",
        "paths": "/ui/paths?start=app%3APassword+Reset+Failed&granularity=channel%3Aevent",
        "variants-by-channel": "/ui/paths?start=web&granularity=channel",
        "feedback": "/ui/feedback?metric=csat",
        "customers": "/ui/customers",
        "customer": f"/ui/customers/{customer}",
        "surveys": "/ui/surveys",
        "survey": f"/ui/surveys/{survey}",
        "channels": "/ui/channels",
        "sources": "/ui/sources",
    }
    for name, path in pages.items():
        tab.open(live_demo.url + path)
        assert tab.page.locator("h1").count() == 1, f"{name}: one heading of level 1"
        assert not tab.page.locator(".flash.error").count(), (
            f"{name}: {tab.page.locator('.flash.error').all_inner_texts()}"
        )
        tab.check_accessibility(name)
        tab.photograph(name)
    tab.no_errors()


def test_the_sankey_leads_to_a_customer(tab: Tab, live_demo: LiveDemo) -> None:
    tab.open(f"{live_demo.url}/ui/paths?start=app%3APassword+Reset+Failed&granularity=channel%3Aevent")
    nodes = tab.page.locator("#paths-sankey .sankey-node")
    assert nodes.count() > 2, "the Sankey has its nodes"
    # Follow the second column's first node: the page opens again from that step.
    label = nodes.nth(1).locator(".node-label").text_content() or ""
    nodes.nth(1).locator(".node-rect").click(force=True)
    tab.page.wait_for_url(re.compile(r"start="), timeout=10_000)
    tab.settle()
    assert "Password+Reset+Failed" not in tab.page.url or label in tab.page.url.replace("+", " ")
    # Its top paths name example customers; open one.
    example = tab.page.locator("a[href^='/ui/customers/c_']").first
    example.click()
    tab.page.wait_for_url(re.compile(r"/ui/customers/c_"))
    tab.settle()
    assert tab.page.locator("h1").count() == 1
    assert tab.page.get_by_text("Likely reason", exact=False).count() >= 1
    tab.no_errors()


def test_a_journey_is_paused_and_resumed_from_its_page(tab: Tab, live_demo: LiveDemo) -> None:
    tab.open(f"{live_demo.url}/ui/journeys/password-help")
    tab.page.get_by_role("button", name="Pause", exact=True).click()
    tab.page.wait_for_load_state("load")
    assert "Paused journey password-help" in tab.page.get_by_role("status").first.inner_text()
    with live_demo.admin() as client:
        assert client.get("/v1/journeys/password-help").json()["status"] == "paused"
    tab.photograph("journey-paused", full_page=False)
    tab.page.get_by_role("button", name="Resume", exact=True).click()
    tab.page.wait_for_load_state("load")
    with live_demo.admin() as client:
        assert client.get("/v1/journeys/password-help").json()["status"] == "active"
    tab.no_errors()


def test_a_customer_is_found_by_phone_number(tab: Tab, live_demo: LiveDemo) -> None:
    with live_demo.admin() as client:
        profile = client.get("/v1/profiles/lookup", params={"user_id": "cust-00011"}).json()
    phone = profile["identifiers"]["phone"][0]
    # Typed as people type it: spaces between the groups.
    typed = f"{phone[:4]} {phone[4:6]} {phone[6:9]} {phone[9:]}"
    tab.open(f"{live_demo.url}/ui/customers")
    tab.page.get_by_label("Email, phone, user id or anonymous id").fill(typed)
    tab.page.get_by_label("Email, phone, user id or anonymous id").press("Enter")
    tab.page.wait_for_url(re.compile(r"/ui/customers/c_"))
    tab.settle()
    assert profile["customer_id"] in tab.page.url
    assert phone in tab.page.locator("main").inner_text().replace(" ", "")
    tab.no_errors()


def test_the_pages_are_readable_on_a_phone(browser: Any, axe_source: str, live_demo: LiveDemo) -> None:
    phone = _tab(browser, axe_source, live_demo, viewport={"width": 360, "height": 780}, is_mobile=True)
    with live_demo.admin() as client:
        customer = client.get("/v1/profiles/lookup", params={"user_id": "cust-00007"}).json()["customer_id"]
    for name, path in {
        "overview": "/ui/",
        "journey": "/ui/journeys/password-help",
        "customer": f"/ui/customers/{customer}",
        "feedback": "/ui/feedback?metric=csat",
    }.items():
        phone.open(live_demo.url + path)
        width = phone.page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= 360, f"{name}: the page scrolls sideways on a phone ({width} px)"
        phone.photograph(f"phone-{name}", full_page=False)
    phone.check_accessibility("customer on a phone")
    phone.no_errors()
    phone.page.context.close()


def test_the_keyboard_reaches_the_content_with_a_visible_focus(tab: Tab, live_demo: LiveDemo) -> None:
    tab.open(f"{live_demo.url}/ui/")
    tab.page.keyboard.press("Tab")
    focused = tab.page.evaluate("() => document.activeElement.textContent.trim()")
    assert focused == "Skip to content"
    outline = tab.page.evaluate("() => getComputedStyle(document.activeElement).outlineStyle")
    assert outline not in ("none", ""), "the focused link shows a focus ring"
    tab.page.keyboard.press("Enter")
    assert tab.page.evaluate("() => document.activeElement.id") == "main"


def test_a_write_key_is_created_copied_and_revoked_in_the_browser(tab: Tab, live_demo: LiveDemo) -> None:
    tab.page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    tab.open(f"{live_demo.url}/ui/sources")
    tab.page.get_by_label("Label").fill("browser test")
    tab.page.get_by_role("button", name="Create key").click()
    tab.page.wait_for_load_state("load")
    key = tab.page.get_by_label(re.compile("Write key of source")).input_value()
    tab.page.get_by_role("button", name="Copy to the clipboard").click()
    tab.page.wait_for_function("() => document.querySelector('[data-copy-done]').textContent !== ''")
    assert tab.page.evaluate("() => navigator.clipboard.readText()") == key
    with httpx.Client(base_url=live_demo.url, auth=(key, ""), timeout=10) as writer:
        assert writer.post("/v1/track", json={"userId": "u-browser", "event": "Tried"}).status_code == 200
    # Revoking asks first (a confirm dialog), then the key stops working.
    tab.open(f"{live_demo.url}/ui/sources")
    tab.page.once("dialog", lambda dialog: dialog.accept())
    row = tab.page.locator("tr", has_text="browser test")
    row.get_by_role("button", name="Revoke").click()
    tab.page.wait_for_load_state("load")
    with httpx.Client(base_url=live_demo.url, auth=(key, ""), timeout=10) as writer:
        assert writer.post("/v1/track", json={"userId": "u-browser", "event": "Tried"}).status_code == 401
    tab.no_errors()
