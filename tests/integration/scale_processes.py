"""The scale-out deployment's processes as the tests run them: API servers, workers
and dispatchers as real ``polku`` processes, and a NATS server of the test's own
(so that a test may kill and restart it without touching the shared one)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.conftest import ServerProcess, free_port
from tests.contract.conftest import NATS_URL, fresh_stream

from polku.adapters.nats import NatsEventLog
from polku.engine.scale_worker import ScaleOut

NATS_SERVER = "/usr/sbin/nats-server"


@contextlib.asynccontextmanager
async def fresh_deployment(database: str, partitions: int) -> AsyncIterator[ScaleOut]:
    """A deployment no other test uses: a new schema in ``database`` and a new stream
    (deleted afterwards) on the shared NATS server."""
    async with fresh_stream() as (stream, prefix):
        yield ScaleOut(
            store_url=database,
            bus_url=NATS_URL,
            schema=f"scale_{uuid.uuid4().hex[:12]}",
            stream=stream,
            subject_prefix=prefix,
            partitions=partitions,
        )


def api_log(deployment: ScaleOut, **options: Any) -> NatsEventLog:
    """The event log as an API process appends to it: the workers index; the stream
    deduplicates resends within 10 minutes unless ``duplicate_window_s`` says else."""
    options.setdefault("duplicate_window_s", 600.0)
    return deployment.event_log(**options)


def scale_args(deployment: ScaleOut) -> list[str]:
    """The options that name the deployment, as every role takes them."""
    return [
        *["--store", deployment.store_url, "--bus", deployment.bus_url, "--schema", deployment.schema],
        *["--stream", deployment.stream, "--subject-prefix", deployment.subject_prefix],
        *["--partitions", str(deployment.partitions)],
    ]


def api_server(deployment: ScaleOut, directory: Path, *extra: str) -> ServerProcess:
    """An API process of the deployment (not started). Its data directory stays
    empty: the scale-out API keeps nothing on its disk."""
    directory.mkdir(parents=True, exist_ok=True)
    return ServerProcess(data_dir=directory / "unused", port=free_port(), extra_args=[*scale_args(deployment), *extra])


@dataclass
class Role:
    """``polku worker`` or ``polku dispatch`` of the deployment, restartable;
    ``kill()`` is SIGKILL."""

    command: list[str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    started: int = 0

    def start(self) -> None:
        self.started += 1
        with self.log_path.open("ab") as output:
            self.process = subprocess.Popen(
                self.command, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT
            )

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> int | None:
        """SIGTERM and wait; the exit status (``None`` if it had to be killed)."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
                return None
        return self.process.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def worker(deployment: ScaleOut, log_path: Path, batch_size: int = 200) -> Role:
    command = [sys.executable, "-m", "polku", "worker", *scale_args(deployment), "--batch-size", str(batch_size)]
    return Role(command, log_path)


def dispatcher(deployment: ScaleOut, log_path: Path, claim_s: float = 3.0) -> Role:
    command = [sys.executable, "-m", "polku", "dispatch", *scale_args(deployment), "--claim-lease", str(claim_s)]
    return Role(command, log_path)


@dataclass
class NatsServer:
    """``nats-server -js`` on a free port with its file store in ``store_dir``."""

    store_dir: Path
    log_path: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 20.0) -> None:
        command = [NATS_SERVER, "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd", str(self.store_dir)]
        with self.log_path.open("ab") as output:
            self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"nats-server exited: {self.log_path.read_text(errors='replace')}"
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            time.sleep(0.05)
        self.kill()
        raise AssertionError(f"nats-server did not start in {timeout_s} s")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()


@contextlib.contextmanager
def nats_server(directory: Path) -> Iterator[NatsServer]:
    assert os.path.exists(NATS_SERVER), f"{NATS_SERVER} is missing (apt-get install nats-server)"
    server = NatsServer(store_dir=directory / "nats-store", log_path=directory / "nats.log")
    try:
        server.start()
        yield server
    finally:
        server.kill()
