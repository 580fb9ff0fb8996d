"""A real ``polku serve`` fed by the demo simulator (``polku demo --no-live``), shared
by the dashboard tests, and an HTTP client logged in to its dashboard."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ADMIN_TOKEN, ServerProcess, free_port

DEMO_CUSTOMERS = 400


def build_demo(data_dir: Path, customers: int = DEMO_CUSTOMERS) -> None:
    """The demo company's month of history, processed, in ``data_dir``."""
    result = subprocess.run(
        [sys.executable, "-m", "polku", "demo", "--data-dir", str(data_dir), "--port", str(free_port()),
         "--customers", str(customers), "--days", "30", "--no-live"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="session")
def demo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data_dir = tmp_path_factory.mktemp("dashboard") / "store"
    build_demo(data_dir)
    server = ServerProcess(data_dir=data_dir, port=free_port())
    server.start()
    yield server
    server.stop()


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "the page has no CSRF token"
    return found.group(1)


def log_in(client: httpx.Client, token: str = ADMIN_TOKEN) -> httpx.Response:
    page = client.get("/ui/login")
    check = re.search(r'name="check" value="([^"]+)"', page.text)
    assert check, page.text[:500]
    return client.post("/ui/login", data={"token": token, "check": check.group(1), "next": "/ui/"})


@pytest.fixture
def ui(demo_server: ServerProcess) -> Iterator[httpx.Client]:
    """An HTTP client with a dashboard session (no redirects followed)."""
    with httpx.Client(base_url=demo_server.url, timeout=30) as client:
        response = log_in(client)
        assert response.status_code == 303, response.text[:500]
        yield client
