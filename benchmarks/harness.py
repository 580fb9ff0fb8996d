"""Shared pieces of the benchmarks: a real ``polku serve`` in a temporary data
directory, prerequisite checks, ``wrk`` with unique messageIds, counting what the
store holds, how busy the machine was, and the machine line every benchmark prints
with its figure.

Not a benchmark itself; ``bench_*.py`` import it (run them from the repository root
or from ``benchmarks/``; both work).
"""

from __future__ import annotations

import base64
import os
import platform
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"
WRITE_KEY = "bench-write-key"
ADMIN_TOKEN = "bench-admin-token"
BASIC_AUTH = "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def polku_command() -> list[str]:
    """The installed ``polku`` entry point (the venv's, else the one on PATH), or
    ``$POLKU_COMMAND`` (split on spaces) to measure another build, e.g.
    ``POLKU_COMMAND="env PYTHONPATH=/tmp/old/src .venv/bin/python -m polku"``."""
    override = os.environ.get("POLKU_COMMAND")
    if override:
        return override.split()
    candidate = VENV_BIN / "polku"
    if candidate.exists():
        return [str(candidate)]
    found = shutil.which("polku")
    if found is None:
        fail("`polku` is not installed: run `scripts/install` (or `pip install -e .`) first")
    return [str(found)]


def require_program(name: str, install_hint: str) -> str:
    found = shutil.which(name)
    if found is None:
        fail(f"`{name}` is not installed; install it with: {install_hint}")
    return str(found)


def cpu_speed() -> float:
    """Millions of iterations per second of a plain Python loop (best of three). On a
    shared host the same machine ran up to 1.6x slower some hours than others, so
    figures taken at different times compare only alongside this number."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        total = 0
        for number in range(2_000_000):
            total += number
        best = min(best, time.perf_counter() - started)
    return 2.0 / best


def machine() -> str:
    """nproc, CPU model and Python version, for the line that carries the figure."""
    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"nproc={os.cpu_count()}, cpu={model!r}, python={platform.python_version()}, {platform.system()}, "
        f"pyloop={cpu_speed():.1f} M/s"
    )


def median(values: list[float]) -> float:
    return statistics.median(values)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def count_events(data_dir: Path) -> int:
    """Rows in the event log, read straight from the SQLite file."""
    connection = sqlite3.connect(f"file:{data_dir / 'polku.db'}?mode=ro", uri=True)
    try:
        (count,) = connection.execute("SELECT count(*) FROM events").fetchone()
        return int(count)
    finally:
        connection.close()


def count_quarantined(data_dir: Path) -> int:
    connection = sqlite3.connect(f"file:{data_dir / 'polku.db'}?mode=ro", uri=True)
    try:
        (count,) = connection.execute("SELECT count(*) FROM quarantine").fetchone()
        return int(count)
    finally:
        connection.close()


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    data_dir: Path

    @property
    def pid(self) -> int:
        return self.process.pid


def _wait_ready(port: int, process: subprocess.Popen[bytes], log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            fail(f"polku serve exited with {process.returncode}:\n{log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    fail(f"polku serve did not become ready within {timeout:.0f} s:\n{log.read_text()[-2000:]}")


@contextmanager
def server(data_dir: Path | None = None, *, extra: list[str] | None = None) -> Iterator[Server]:
    """A fresh ``polku serve`` on a free loopback port; stopped (SIGTERM, then SIGKILL)
    on exit. With no ``data_dir`` it gets a temporary one, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="polku-bench-") as scratch:
        directory = data_dir or Path(scratch) / "data"
        port = free_port()
        log = Path(scratch) / "server.log"
        with log.open("wb") as log_file:
            process = subprocess.Popen(
                [
                    *polku_command(),
                    "serve",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--data-dir",
                    str(directory),
                    "--write-key",
                    WRITE_KEY,
                    "--admin-token",
                    ADMIN_TOKEN,
                    "--log-level",
                    "warning",
                    *(extra or []),
                ],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
            try:
                _wait_ready(port, process, log)
                yield Server(process=process, port=port, data_dir=directory)
            finally:
                process.terminate()
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def message_id_prefix() -> str:
    """Distinct per run, so no two runs (or repetitions) share a messageId."""
    return f"{os.getpid():x}{time.time_ns() % 10**12:x}"


WRK_TEMPLATE = Path(__file__).resolve().parent / "wrk_ingest.lua.in"


def require_wrk() -> str:
    return require_program("wrk", "apt-get install -y wrk")


def run_wrk(
    port: int, *, path: str, items: int, connections: int, threads: int, seconds: float, prefix: str
) -> dict[str, int]:
    """wrk against ``path`` with unique messageIds; the counters its Lua ``done`` prints."""
    script = WRK_TEMPLATE.read_text()
    for name, value in (("PATH", path), ("ITEMS", str(items)), ("PREFIX", prefix), ("AUTH", BASIC_AUTH)):
        script = script.replace(f"@{name}@", value)
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(script)
        script_path = handle.name
    try:
        completed = subprocess.run(
            [
                require_wrk(),
                f"-t{threads}",
                f"-c{connections}",
                f"-d{round(seconds)}s",
                "--timeout",
                "10s",
                "-s",
                script_path,
                f"http://127.0.0.1:{port}",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
    finally:
        os.unlink(script_path)
    for line in completed.stdout.splitlines():
        if line.startswith("POLKU_RESULT "):
            return {key: int(value) for key, value in (pair.split("=") for pair in line.split()[1:])}
    fail(f"wrk printed no result (exit {completed.returncode}):\n{completed.stdout}\n{completed.stderr}")
    raise AssertionError  # unreachable


def check_stored(data_dir: Path, *, acknowledged: int, in_flight_bound: int) -> int:
    """The store must hold every acknowledged event; it may hold up to ``in_flight_bound``
    more (requests committed when the load generator stopped before reading the 200)."""
    stored = count_events(data_dir)
    if stored < acknowledged or stored > acknowledged + in_flight_bound:
        fail(f"the store holds {stored} events but the server acknowledged {acknowledged}")
    return stored


def _cpu_times() -> tuple[int, int]:
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def wait_for_quiet(*, busy_below: float = 0.15, max_wait: float = 90.0) -> float:
    """Wait (up to ``max_wait`` s) until the machine's other load is below ``busy_below``
    of its CPUs, so that a run measures polku and not a neighbour; returns the load
    seen last and says so when it gave up waiting. (Linux only; elsewhere a no-op.)"""
    if not Path("/proc/stat").exists():
        return 0.0
    deadline = time.monotonic() + max_wait
    while True:
        busy0, total0 = _cpu_times()
        time.sleep(1.0)
        busy1, total1 = _cpu_times()
        busy = (busy1 - busy0) / max(1, total1 - total0)
        if busy < busy_below:
            return busy
        if time.monotonic() > deadline:
            print(f"  note: the machine stayed {busy:.0%} busy with other work; measuring anyway", file=sys.stderr)
            return busy


def _process_cpu(pid: int) -> float:
    """CPU seconds of ``pid`` and of its live child processes (the writer process)."""
    total = 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                total += _process_cpu(int(child))
    except (OSError, IndexError, ValueError):
        pass
    return total


class CpuMeter:
    """How busy the machine was during a run, and how much of that was not the
    benchmark (server tree, load generator): a neighbour's load makes a run noisy."""

    def __init__(self, server_pid: int | None = None) -> None:
        self.server_pid = server_pid

    def __enter__(self) -> CpuMeter:
        import resource

        self._resource = resource
        self._busy0, self._total0 = _cpu_times()
        self._server0 = _process_cpu(self.server_pid) if self.server_pid else 0.0
        self._children0 = self._children()
        self._wall0 = time.monotonic()
        return self

    def _children(self) -> float:
        usage = self._resource.getrusage(self._resource.RUSAGE_CHILDREN)
        own = self._resource.getrusage(self._resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime + own.ru_utime + own.ru_stime

    def __exit__(self, *exc: object) -> None:
        busy1, total1 = _cpu_times()
        wall = time.monotonic() - self._wall0
        cpus = os.cpu_count() or 1
        ticks = max(1, total1 - self._total0)
        self.machine = (busy1 - self._busy0) / ticks  # fraction of all CPUs
        self.server = (_process_cpu(self.server_pid) - self._server0) / wall if self.server_pid else 0.0
        self.generator = (self._children() - self._children0) / wall
        self.other = max(0.0, self.machine * cpus - self.server - self.generator) / cpus

    def summary(self) -> str:
        if self.server_pid:
            text = f"server {self.server:.2f} CPUs, load generator {self.generator:.2f} CPUs"
        else:
            text = f"polku import used {self.generator:.2f} CPUs"
        if self.other > 0.05:
            text += f"; NOISY: other processes used {self.other:.0%} of the machine"
        return text
