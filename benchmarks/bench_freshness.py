"""Freshness: from the acknowledgement of an event to the profile showing it.

Target (identity/profile/segments issue): p99 at most 100 ms at 1,000 events/s.

A real ``polku serve`` (with its processor child, as deployed; event log with
synchronous=FULL) on a data directory of seeded customers with
``bench_processor.CONFIG`` (20 attributes, 20 segments). Two loads at once:

* **Background**: an open-loop sender in a child process posts ``/v1/track``-style
  single events (``/v1/track``, ``/v1/page``, ``/v1/identify``, one event a request)
  at ``--rate`` requests/s, each at its scheduled time whether or not earlier ones
  were answered, with ``bench_processor``'s mix (70 % track with properties, 15 %
  page, 10 % identify, 5 % new visitors who log in: merges) for customers drawn
  uniformly from the store, except the probe customers.
* **Probes**: every ``--probe-interval`` s this process posts an ``Order Completed``
  for a probe customer (each probe customer is used once, so nothing else touches
  it), takes the moment the HTTP 200 arrives, then reads the customer's profile
  *straight from state.db* (a read-only SQLite connection, the API's own way of
  reading it, without HTTP) every ``--poll-ms`` until the computed ``orders_total``
  count has gone up. Freshness = that moment minus the acknowledgement; the
  resolution is the poll interval plus one read (~0.05 ms). Polling the HTTP
  lookup instead would add ~1.5 ms of HTTP per poll and load the server.

Prints p50/p95/p99/max over ``--probes`` probes (at least 300), the probes' own
acknowledgement latency, the background rate achieved and its errors, the
processor's lag at the end and how busy the machine was.

The data directory: ``--data-dir`` reuses (and appends to) one built by
``bench_processor.py --data-dir D --keep``; without it a temporary one of
``--customers`` seeded customers is built first (not timed). Note: the bench
configuration's segments read ``now``, so every customer has an hourly re-check
timer; run within the hour after building a directory, or the timers all fire at
once and the processor is busy with them.

Run (from the repository root, after ``scripts/install``)::

    .venv/bin/python benchmarks/bench_freshness.py --data-dir /tmp/polku-1m
    .venv/bin/python benchmarks/bench_freshness.py --customers 100000
    .venv/bin/python benchmarks/bench_freshness.py --customers 5000 --probes 100 --json   # smoke
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import multiprocessing
import random
import shutil
import sqlite3
import sys
import tempfile
import time
from multiprocessing.synchronize import Event as StopEvent
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx
import msgspec

import bench_processor
from harness import ADMIN_TOKEN, BASIC_AUTH, CpuMeter, machine, server, wait_for_quiet
from polku.adapters.sqlite.state_store import STATE_FILE
from polku.core.events import Event, format_millis
from polku.core.profile import Profile
from polku.engine.worker import wall_clock_ms

WORKSPACE = bench_processor.WORKSPACE
ATTRIBUTE = "orders_total"
PROBE_POOL = 2_000
_decode_profile = msgspec.msgpack.Decoder(Profile).decode
_encode = msgspec.json.encode


def message(event: Event) -> bytes:
    """The JSON an SDK would post for ``event``."""
    body: dict[str, Any] = {"messageId": event.message_id, "timestamp": event.timestamp}
    for name, value in (
        ("userId", event.user_id),
        ("anonymousId", event.anonymous_id),
        ("event", event.event),
        ("name", event.name),
        ("properties", event.properties),
        ("traits", event.traits),
        ("context", event.context),
    ):
        if value is not None:
            body[name] = value
    return _encode(body)


def request_bytes(port: int, path: str, body: bytes) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: {BASIC_AUTH}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


# -- the background load (a child process) ------------------------------------------------


async def _post(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length:
        await reader.readexactly(length)
    return int(head[9:12])


async def _send(port: int, rate: float, requests: list[bytes], stop: StopEvent, connections: int) -> dict[str, Any]:
    idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(connections):
        idle.put_nowait(await asyncio.open_connection("127.0.0.1", port))
    latencies: list[float] = []
    failures: list[str] = []
    tasks: set[asyncio.Task[None]] = set()

    async def one(request: bytes, scheduled: float) -> None:
        reader, writer = await idle.get()
        try:
            status = await _post(reader, writer, request)
        except (OSError, asyncio.IncompleteReadError) as error:
            failures.append(repr(error))
            return
        latencies.append(time.perf_counter() - scheduled)
        idle.put_nowait((reader, writer))
        if status != 200:
            failures.append(str(status))

    start = time.perf_counter() + 0.05
    sent = 0
    while sent < len(requests) and not stop.is_set():
        now = time.perf_counter()
        while sent < len(requests) and start + sent / rate <= now:
            task = asyncio.create_task(one(requests[sent], start + sent / rate))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            sent += 1
        await asyncio.sleep(max(0.0, start + sent / rate - time.perf_counter()))
    seconds = time.perf_counter() - start
    await asyncio.gather(*tasks)
    while not idle.empty():
        idle.get_nowait()[1].close()
    latencies.sort()
    return {
        "sent": sent,
        "seconds": seconds,
        "acknowledged": len(latencies) - len(failures),
        "failures": failures[:5],
        "failed": len(failures),
        "ack_p99_ms": latencies[int(0.99 * len(latencies))] * 1000 if latencies else None,
    }


def background(
    port: int, rate: float, seconds: float, customers: int, ready: StopEvent, stop: StopEvent, out: Any
) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    maker = bench_processor.Maker(17)
    count = int(rate * seconds)
    paths = {"track": "/v1/track", "page": "/v1/page", "identify": "/v1/identify"}
    requests = [
        request_bytes(port, paths[event.type], message(event))
        for event in bench_processor.mixed_events(maker, customers, count, wall_clock_ms())
    ]
    ready.set()
    out.put(asyncio.run(_send(port, rate, requests, stop, connections=32)))


# -- the probes ------------------------------------------------------------------------------


class StateReader:
    def __init__(self, data_dir: Path) -> None:
        self.connection = sqlite3.connect(f"file:{data_dir / STATE_FILE}?mode=ro", uri=True, isolation_level=None)

    def customer(self, user: str) -> str:
        row = self.connection.execute(
            "SELECT customer_id FROM identifiers WHERE workspace = ? AND identifier = ?", (WORKSPACE, "user_id:" + user)
        ).fetchone()
        if row is None:
            sys.exit(f"error: no customer has user_id {user}")
        return str(row[0])

    def count(self, customer_id: str) -> float:
        row = self.connection.execute(
            "SELECT body FROM profiles WHERE workspace = ? AND customer_id = ?", (WORKSPACE, customer_id)
        ).fetchone()
        if row is None:
            return -1
        value = _decode_profile(row[0]).attributes.get(ATTRIBUTE) or 0
        return float(value)


def probe_body(user: str, number: int) -> dict[str, Any]:
    return {
        "userId": user,
        "event": "Order Completed",
        "messageId": f"probe-{time.time_ns():x}-{number}",
        "timestamp": format_millis(wall_clock_ms()),
        "properties": {"orderId": f"probe-{number}", "revenue": 10.0, "currency": "EUR", "sku": "sku-1"},
        "context": bench_processor.CONTEXT,
    }


def probe(
    client: httpx.Client, state: StateReader, user: str, customer_id: str, number: int, poll_s: float, timeout: float
) -> tuple[float, float]:
    """(freshness, acknowledgement latency) in seconds."""
    before = state.count(customer_id)
    sent = time.perf_counter()
    response = client.post("/v1/track", json=probe_body(user, number))
    acknowledged = time.perf_counter()
    if response.status_code != 200:
        sys.exit(f"error: probe {number}: {response.status_code} {response.text[:300]}")
    deadline = acknowledged + timeout
    while True:
        if state.count(customer_id) > before:
            return time.perf_counter() - acknowledged, acknowledged - sent
        if time.perf_counter() > deadline:
            return math.inf, acknowledged - sent
        time.sleep(poll_s)


def percentile(ordered: list[float], fraction: float) -> float:
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def milliseconds(seconds: float) -> float | None:
    """Rounded milliseconds; ``None`` for a probe that was given up."""
    return None if math.isinf(seconds) else round(seconds * 1000, 2)


def lag(client: httpx.Client) -> dict[str, Any]:
    response = client.get("/v1/processor", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    found: dict[str, Any] = response.json()
    return found


def wait_caught_up(client: httpx.Client, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while lag(client)["lag"] > 0:
        if time.monotonic() > deadline:
            sys.exit(f"error: the processor did not catch up in {timeout:.0f} s: {lag(client)}")
        time.sleep(0.2)


def measure(data_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    customers = bench_processor.customers_in(data_dir)
    if customers < PROBE_POOL * 2 or args.probes > PROBE_POOL:
        sys.exit(f"error: need at least {PROBE_POOL * 2} customers and at most {PROBE_POOL} probes")
    background_customers = customers - PROBE_POOL  # probes use the last PROBE_POOL users
    state = StateReader(data_dir)
    picker = random.Random(args.seed)
    probe_users = [f"u{background_customers + k}" for k in picker.sample(range(PROBE_POOL), args.probes)]
    probe_ids = [state.customer(user) for user in probe_users]
    seconds = args.warmup + args.probes * (args.probe_interval + 0.1) + 10  # stopped when the probes end
    context = multiprocessing.get_context("fork")
    with server(data_dir) as running, httpx.Client(base_url=f"http://127.0.0.1:{running.port}", timeout=10) as client:
        client.headers["Authorization"] = BASIC_AUTH
        wait_caught_up(client, 600)
        wait_for_quiet(max_wait=20)
        stop, ready = context.Event(), context.Event()
        out = context.Queue()
        sender = context.Process(
            target=background,
            args=(running.port, args.rate, seconds, background_customers, ready, stop, out),
            daemon=True,
        )
        with CpuMeter(running.pid) as cpu:
            sender.start()
            if not ready.wait(timeout=120):
                sys.exit("error: the background sender did not start")
            time.sleep(args.warmup)
            freshness: list[float] = []
            acks: list[float] = []
            next_probe = time.perf_counter()
            for number, (user, customer_id) in enumerate(zip(probe_users, probe_ids, strict=True)):
                fresh, ack = probe(client, state, user, customer_id, number, args.poll_ms / 1000, args.timeout)
                freshness.append(fresh)
                acks.append(ack)
                if len(freshness) >= 5 and all(math.isinf(value) for value in freshness[-5:]):
                    bench_processor.progress(
                        "  5 probes in a row not reflected in time: the processor is behind; stopping"
                    )
                    break
                next_probe += args.probe_interval
                time.sleep(max(0.0, next_probe - time.perf_counter()))
            end_lag = lag(client)
            stop.set()
            sent = out.get(timeout=120)
            sender.join(timeout=30)
    if sent["failed"]:
        sys.exit(f"error: {sent['failed']} background requests failed, e.g. {sent['failures']}")
    freshness.sort()
    acks.sort()
    return {
        "benchmark": "freshness",
        "customers": customers,
        "probes": len(freshness),
        "probes_timed_out": sum(1 for value in freshness if math.isinf(value)),
        "timeout_s": args.timeout,
        "rate": args.rate,
        "poll_ms": args.poll_ms,
        "freshness_ms": {
            "p50": milliseconds(percentile(freshness, 0.5)),
            "p95": milliseconds(percentile(freshness, 0.95)),
            "p99": milliseconds(percentile(freshness, 0.99)),
            "max": milliseconds(freshness[-1]),
        },
        "probe_ack_ms": {"p50": round(percentile(acks, 0.5) * 1000, 2), "p99": round(percentile(acks, 0.99) * 1000, 2)},
        "background": {
            "sent": sent["sent"],
            "achieved_rate": round(sent["sent"] / sent["seconds"]),
            "acknowledged": sent["acknowledged"],
            "ack_p99_ms": round(sent["ack_p99_ms"], 2) if sent["ack_p99_ms"] is not None else None,
        },
        "processor_at_end": end_lag,
        "cpu": cpu.summary(),
        "machine": machine(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, help="a data directory bench_processor.py built (--keep); appended to")
    parser.add_argument("--customers", type=int, default=100_000, help="without --data-dir: customers to seed")
    parser.add_argument("--probes", type=int, default=400, help="probes (at least 300 for a p99)")
    parser.add_argument("--rate", type=float, default=1000.0, help="background events/s (open loop)")
    parser.add_argument("--probe-interval", type=float, default=0.05, help="seconds between probes")
    parser.add_argument("--poll-ms", type=float, default=1.0, help="pause between reads of state.db")
    parser.add_argument("--timeout", type=float, default=10.0, help="give a probe up after this many seconds")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of background load before probing")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--seed", type=int, default=9)
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="polku-bench-freshness-"))
    try:
        if args.data_dir is not None:
            data_dir = args.data_dir
            if not (data_dir / STATE_FILE).exists():
                parser.error(f"{data_dir} has no {STATE_FILE}; build it with bench_processor.py --data-dir D --keep")
        else:
            data_dir = scratch / "data"
            bench_processor.progress(f"building a data directory of {args.customers:,} customers")
            bench_processor.build(data_dir, args.customers)
        result = measure(data_dir, args)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    fresh = {name: "timed out" if value is None else value for name, value in result["freshness_ms"].items()}
    background_load = result["background"]
    print(
        f"freshness: {result['customers']:,} customers, {result['probes']} probes every {args.probe_interval * 1000:.0f} "
        f"ms under {args.rate:,.0f} events/s of background load (open loop); state.db read every {args.poll_ms} ms"
    )
    rows = [
        (
            "ack -> profile updated",
            f"p50 {fresh['p50']} ms, p95 {fresh['p95']} ms, p99 {fresh['p99']} ms, max {fresh['max']} ms",
        ),
        ("probes not reflected in time", f"{result['probes_timed_out']} (gave up after {args.timeout} s)"),
        ("probe acknowledgement", f"p50 {result['probe_ack_ms']['p50']} ms, p99 {result['probe_ack_ms']['p99']} ms"),
        (
            "background load",
            f"{background_load['sent']:,} sent at {background_load['achieved_rate']:,}/s, "
            f"{background_load['acknowledged']:,} acknowledged, ack p99 {background_load['ack_p99_ms']} ms",
        ),
        ("processor at the end", json.dumps(result["processor_at_end"])),
        ("CPU", result["cpu"]),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    print(
        f"RESULT freshness (ack -> profile, {args.rate:,.0f} events/s background, {result['customers']:,} customers): "
        f"p99 {fresh['p99']} ms (p50 {fresh['p50']}, p95 {fresh['p95']}; target <= 100 ms) | {result['machine']}"
    )


if __name__ == "__main__":
    main()
