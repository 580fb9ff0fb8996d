"""Shared fixtures: a real ``polku serve`` process on a free port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

WRITE_KEY = "test-write-key"
ADMIN_TOKEN = "test-admin-token"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServerProcess:
    """``polku serve`` as a child process; ``kill()`` is SIGKILL, ``start()`` restarts
    it on the same port and data directory."""

    data_dir: Path
    port: int
    extra_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "polku",
            "serve",
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
            "--write-key",
            WRITE_KEY,
            "--admin-token",
            ADMIN_TOKEN,
            *self.extra_args,
        ]

    def start(self, timeout: float = 20.0) -> None:
        self.log_path = self.data_dir.parent / f"server-{self.port}.log"
        with self.log_path.open("ab") as log:  # the child keeps its own descriptor
            self.process = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **self.env}
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"polku serve exited with {self.process.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.kill()  # not left running behind the failure
        raise RuntimeError(f"polku serve did not become ready in {timeout}s:\n{self.log()}")

    def kill(self) -> None:
        """SIGKILL: no shutdown hooks, no flushing."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def admin(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=10)

    def writer(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, auth=(WRITE_KEY, ""), timeout=10)

    def all_events(self) -> list[dict[str, object]]:
        """Every stored event of the default workspace, through the paged API."""
        events: list[dict[str, object]] = []
        cursor = 0
        with self.admin() as client:
            while True:
                page = client.get("/v1/events", params={"cursor": cursor, "limit": 1000}).json()
                events += page["events"]
                if page["next_cursor"] is None:
                    return events
                cursor = page["next_cursor"]


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Factory: ``start_server(extra_args=[...])`` starts a fresh server process."""
    started: list[ServerProcess] = []

    def start(extra_args: list[str] | None = None, env: dict[str, str] | None = None) -> ServerProcess:
        server = ServerProcess(
            data_dir=tmp_path / f"data-{len(started)}", port=free_port(), extra_args=extra_args or [], env=env or {}
        )
        started.append(server)
        server.start()
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def server(start_server: Callable[..., ServerProcess]) -> ServerProcess:
    return start_server()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
