"""Acknowledgement latency of ``/v1/track`` at a constant 1,000 requests/s.

Target (issue 2): p99 at most 20 ms on a 2-core machine, load generator on the same
machine, real server over loopback.

An open-loop generator (this process, asyncio with keep-alive sockets) sends request
``i`` at ``start + i / rate`` whether or not earlier ones were answered, and measures
each latency from that *scheduled* time to the end of the 200 response. A slow
answer therefore cannot hide the requests queued behind it (no coordinated
omission), and the generator's own lateness counts against the server. A closed-loop
tool such as wrk would under-report this figure.

Each repetition starts a fresh ``polku serve`` (SQLite, synchronous=FULL), warms up
for 2 s, then measures for ``--seconds``; every request carries a new, unique
``messageId`` (64 random bits first, like an SDK's UUID). After the run the
benchmark counts the rows in ``polku.db`` and fails unless the store holds exactly
the events the server acknowledged. It prints each run and the median p99 on the
final RESULT line.

Run (from the repository root, after ``scripts/install``; needs no extra tools)::

    .venv/bin/python benchmarks/bench_track_latency.py
    .venv/bin/python benchmarks/bench_track_latency.py --rate 1000 --seconds 15 --runs 5
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import BASIC_AUTH, CpuMeter, count_events, machine, median, message_id_prefix, server, wait_for_quiet

BODY = (
    '{{"type":"track","messageId":"{id}","userId":"user-{user}","event":"Order Completed",'
    '"properties":{{"orderId":"o-{id}","revenue":42.5,"currency":"EUR",'
    '"products":[{{"sku":"sku-17","quantity":2,"price":21.25}}]}},'
    '"context":{{"library":{{"name":"analytics-python","version":"2.3.2"}},"ip":"203.0.113.7",'
    '"userAgent":"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36",'
    '"locale":"en-US"}},"timestamp":"{timestamp}","sentAt":"2026-01-15T10:59:59.999Z"}}'
)


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def post(self, request: bytes) -> tuple[int, bytes]:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        body = await self.reader.readexactly(length) if length else b""
        return status, body


def request_bytes(port: int, message_id: str, user: int) -> bytes:
    moment = random.randrange(3_600_000)  # when the event happened, within the hour before sentAt
    timestamp = f"2026-01-15T10:{moment // 60_000:02d}:{moment // 1000 % 60:02d}.{moment % 1000:03d}Z"
    body = BODY.format(id=message_id, user=user, timestamp=timestamp).encode()
    return (
        f"POST /v1/track HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: {BASIC_AUTH}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def drive(port: int, rate: float, seconds: float, warmup: float, pool_size: int) -> tuple[list[float], int]:
    """Send at ``rate`` for ``warmup + seconds``; latencies (s) of the measured part,
    and how many requests got a 200 in all."""
    idle: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(pool_size):
        idle.put_nowait(Connection(*await asyncio.open_connection("127.0.0.1", port)))
    prefix = message_id_prefix()
    latencies: list[float] = []
    acknowledged = 0
    failures: list[str] = []

    async def one(index: int, scheduled: float, measured: bool) -> None:
        nonlocal acknowledged
        request = request_bytes(port, f"{random.getrandbits(64):016x}-{prefix}-{index}", index % 10007)
        connection = await idle.get()
        try:
            status, body = await connection.post(request)
        except (OSError, asyncio.IncompleteReadError) as error:
            failures.append(repr(error))
            return
        finished = time.perf_counter()
        idle.put_nowait(connection)
        if status != 200 or b'"accepted":1' not in body:
            failures.append(f"{status} {body[:200]!r}")
            return
        acknowledged += 1
        if measured:
            latencies.append(finished - scheduled)

    total = int((warmup + seconds) * rate)
    first_measured = int(warmup * rate)
    tasks: set[asyncio.Task[None]] = set()
    start = time.perf_counter() + 0.05
    sent = 0
    while sent < total:
        now = time.perf_counter()
        while sent < total and start + sent / rate <= now:
            task = asyncio.create_task(one(sent, start + sent / rate, sent >= first_measured))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            sent += 1
        # Until the next send is due (the loop's timers round to a millisecond, so a
        # send may leave up to 1 ms late; that lateness counts against the server).
        await asyncio.sleep(max(0.0, start + sent / rate - time.perf_counter()))
    await asyncio.gather(*tasks)
    while not idle.empty():
        idle.get_nowait().writer.close()
    if failures:
        sys.exit(f"error: {len(failures)} requests failed, e.g. {failures[:3]}")
    return latencies, acknowledged


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def one_run(args: argparse.Namespace, scratch: Path, run: int) -> float:
    data_dir = scratch / f"run{run}"
    wait_for_quiet()
    with server(data_dir, extra=["--synchronous", args.synchronous]) as running:
        with CpuMeter(running.pid) as cpu:
            latencies, acknowledged = asyncio.run(
                drive(running.port, args.rate, args.seconds, args.warmup, args.connections)
            )
        stored = count_events(data_dir)
    if stored != acknowledged:
        sys.exit(f"error: the store holds {stored} events but the server acknowledged {acknowledged}")
    p50, p99, p999 = (percentile(latencies, q) * 1000 for q in (0.5, 0.99, 0.999))
    print(
        f"  run {run}: p50 {p50:.2f} ms, p99 {p99:.2f} ms, p99.9 {p999:.2f} ms, max {max(latencies) * 1000:.1f} ms "
        f"({len(latencies)} measured requests at {args.rate:,.0f}/s; {acknowledged} acknowledged, {stored} stored; "
        f"{cpu.summary()})",
        flush=True,
    )
    return p99


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rate", type=float, default=1000.0, help="requests per second (open loop)")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--connections", type=int, default=64, help="keep-alive connections in the pool")
    parser.add_argument("--synchronous", choices=["FULL", "NORMAL"], default="FULL")
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    print(
        f"track latency: {args.runs} runs x {args.seconds:.0f} s at {args.rate:,.0f} requests/s (open loop), "
        f"synchronous={args.synchronous}",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="polku-bench-latency-") as scratch:
        p99s = [one_run(args, Path(scratch), run) for run in range(1, args.runs + 1)]
    print(
        f"RESULT track latency (/v1/track at {args.rate:,.0f} requests/s, open loop, synchronous={args.synchronous}): "
        f"median p99 {median(p99s):.2f} ms over {args.runs} runs (min {min(p99s):.2f}, max {max(p99s):.2f}; "
        f"target <= 20 ms) | {machine()}"
    )


if __name__ == "__main__":
    main()
