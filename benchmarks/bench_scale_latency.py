"""Event-to-action latency on the scale-out deployment (issue 9: p99 under 1,000
events/s): from the API's acknowledgement of an event to the email it causes
reaching the SMTP server, through NATS JetStream, a worker's commit in PostgreSQL
and a dispatcher.

The deployment, as real processes on a fresh PostgreSQL database and a fresh
stream: one ``polku serve --store --bus`` (the API), ``--workers`` workers and one
``polku dispatch --store --bus``. An aiosmtpd server runs in a child process of
this one. A journey enters on ``Latency Probe`` and sends an email at once, its
subject the probe's id.

Two loads at once, from this process:

* **Background**: ``--rate`` events/s, open loop (a batch of ``--batch`` events
  every ``batch / rate`` seconds, never waiting for the previous answer), tracks and
  pages of ``--customers`` people.
* **Probes**: every ``--probe-interval`` s a ``Latency Probe`` (``/v1/track``) of a
  probe customer (identified with an email address before the run). Latency = the
  SMTP DATA's end (receiver) − the HTTP 200 of the probe (here): one clock, one
  machine.

Run (PostgreSQL and NATS up, e.g. ``scripts/services``)::

    .venv/bin/python benchmarks/bench_scale_latency.py
    .venv/bin/python benchmarks/bench_scale_latency.py --rate 1000 --probes 600 --workers 2 --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
WRITE_KEY, ADMIN_TOKEN = "bench-write-key", "bench-admin-token"
JOURNEY = """
id: latency-probe
entry: {event: Latency Probe}
steps:
  - id: tell
    action: {channel: email, purpose: service, subject: "probe {{ trigger.properties.probe }}", body: "hi"}
"""
_subject = re.compile(rb"Subject: probe (p\d+)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def receiver(port: int, ready: Any, out: Any) -> None:
    """aiosmtpd in its own process: (probe id, arrival ns) per message."""
    from aiosmtpd.controller import Controller

    class Inbox:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            arrived = time.time_ns()
            found = _subject.search(envelope.content)
            out.put((found.group(1).decode() if found else None, arrived))
            return "250 OK"

    controller = Controller(Inbox(), hostname="127.0.0.1", port=port)
    controller.start()
    ready.set()
    while True:
        time.sleep(3600)


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"p50": pick(0.5), "p90": pick(0.9), "p99": pick(0.99), "max": ordered[-1], "n": len(ordered)}


async def run(args: argparse.Namespace, api_url: str, probes_users: list[str]) -> dict[str, Any]:
    rng = random.Random(args.seed)
    acked: dict[str, int] = {}
    errors = 0
    sent = 0
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(base_url=api_url, auth=(WRITE_KEY, ""), timeout=30, limits=limits) as client:

        async def background(stop: asyncio.Event) -> None:
            nonlocal errors, sent
            interval = args.batch / args.rate
            tasks: set[asyncio.Task[None]] = set()
            next_at = time.monotonic()
            number = 0

            async def post(batch: list[dict[str, Any]]) -> None:
                nonlocal errors, sent
                try:
                    response = await client.post("/v1/batch", json={"batch": batch})
                    if response.status_code == 200:
                        sent += len(batch)
                    else:
                        errors += 1
                except httpx.HTTPError:
                    errors += 1

            while not stop.is_set():
                batch = []
                for _ in range(args.batch):
                    number += 1
                    user = f"bg-{rng.randrange(args.customers)}"
                    kind = "page" if number % 5 == 0 else "track"
                    event: dict[str, Any] = {"type": kind, "userId": user, "messageId": f"bg-{uuid.uuid4().hex}"}
                    if kind == "track":
                        event["event"] = "Product Viewed"
                        event["properties"] = {"sku": f"sku-{rng.randrange(500)}", "price": rng.randrange(5, 200)}
                    else:
                        event["name"] = "Home"
                    batch.append(event)
                task = asyncio.create_task(post(batch))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                next_at += interval
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            await asyncio.gather(*tasks)

        stop = asyncio.Event()
        started = time.monotonic()
        loader = asyncio.create_task(background(stop))
        await asyncio.sleep(args.warmup)
        for number in range(args.probes):
            probe = f"p{number}"
            user = probes_users[number % len(probes_users)]
            body = {"userId": user, "event": "Latency Probe", "messageId": f"probe-{uuid.uuid4().hex}"}
            body["properties"] = {"probe": probe}
            response = await client.post("/v1/track", json=body)
            if response.status_code == 200:
                acked[probe] = time.time_ns()
            await asyncio.sleep(args.probe_interval)
        stop.set()
        await loader
        elapsed = time.monotonic() - started
    return {"acked": acked, "background_rate": sent / elapsed, "background_errors": errors}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="background events/s (open loop)")
    parser.add_argument("--batch", type=int, default=20, help="events per background batch")
    parser.add_argument("--customers", type=int, default=20_000, help="background customers")
    parser.add_argument("--probes", type=int, default=600, help="probes (at least 500 for a p99)")
    parser.add_argument("--probe-interval", type=float, default=0.05, help="seconds between probes")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of background load before probing")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--partitions", type=int, default=16)
    parser.add_argument("--store", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--bus", default="nats://127.0.0.1:4222")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()

    database = f"polku_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.store, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    store = args.store.rsplit("/", 1)[0] + f"/{database}"
    token = uuid.uuid4().hex[:8]
    common = [
        *["--store", store, "--bus", args.bus, "--stream", f"BENCH_{token}"],
        *["--subject-prefix", f"bench_{token}.ev", "--partitions", str(args.partitions)],
    ]
    smtp_port, api_port = free_port(), free_port()
    ready, out = multiprocessing.Event(), multiprocessing.Queue()
    inbox = multiprocessing.Process(target=receiver, args=(smtp_port, ready, out), daemon=True)
    inbox.start()
    ready.wait(10)
    python = [sys.executable, "-m", "polku"]
    logs = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-scale-latency-{token}"
    logs.mkdir(parents=True)
    processes: list[subprocess.Popen[bytes]] = []

    def spawn(name: str, command: list[str]) -> None:
        with (logs / f"{name}.log").open("ab") as output:
            processes.append(subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT))

    try:
        spawn("api", [*python, "serve", *common, "--port", str(api_port), "--write-key", WRITE_KEY,
                      "--admin-token", ADMIN_TOKEN])  # fmt: skip
        api_url = f"http://127.0.0.1:{api_port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{api_url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, (logs / "api.log").read_text()
            time.sleep(0.1)
        admin = httpx.Client(base_url=api_url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30)
        config = f"channels:\n  email: {{type: smtp, port: {smtp_port}, sender: bench@example.com, concurrency: 8}}\n"
        assert admin.put("/v1/workspace/config", content=config).status_code == 200
        assert admin.put("/v1/journeys/latency-probe", content=JOURNEY).status_code == 201
        for number in range(args.workers):
            spawn(f"worker-{number}", [*python, "worker", *common, "--batch-size", "500"])
        spawn("dispatcher", [*python, "dispatch", *common])
        # One customer per probe: a journey enters a customer once.
        probe_users = [f"probe-{n}" for n in range(args.probes)]
        writer = httpx.Client(base_url=api_url, auth=(WRITE_KEY, ""), timeout=30)
        for start in range(0, len(probe_users), 100):
            users = probe_users[start : start + 100]
            batch = [{"type": "identify", "userId": u, "traits": {"email": f"{u}@example.com"}} for u in users]
            assert writer.post("/v1/batch", json={"batch": batch}).status_code == 200
        time.sleep(3)  # the workers lease their partitions and apply the identifies
        result = asyncio.run(run(args, api_url, probe_users))
        acked: dict[str, int] = result.pop("acked")
        arrived: dict[str, int] = {}
        deadline = time.monotonic() + 60
        while len(arrived) < len(acked) and time.monotonic() < deadline:
            try:
                probe, at = out.get(timeout=1)
            except Exception:
                continue
            if probe is not None:
                arrived.setdefault(probe, at)
        latencies = [(arrived[p] - acked[p]) / 1e6 for p in acked if p in arrived]
        summary = {
            **{k: round(v, 1) for k, v in percentiles(latencies).items()},
            "lost": len(acked) - len(latencies),
            "background_events_per_s": round(result["background_rate"]),
            "background_errors": result["background_errors"],
            "workers": args.workers,
            "rate": args.rate,
        }
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        inbox.kill()
        with psycopg.connect(args.store, autocommit=True) as admin_db:
            admin_db.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))
    if args.json:
        print(json.dumps(summary))
    else:
        print(
            f"event → email at {summary['background_events_per_s']} events/s background, {args.workers} workers: "
            f"p50 {summary['p50']} ms, p90 {summary['p90']} ms, p99 {summary['p99']} ms, max {summary['max']} ms "
            f"({summary['n']} probes, {summary['lost']} lost, {summary['background_errors']} background errors)"
        )


if __name__ == "__main__":
    main()
