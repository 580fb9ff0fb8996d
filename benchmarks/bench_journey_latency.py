"""Event-to-action latency: from the acknowledgement of an event to the message it
causes reaching the SMTP server / the webhook receiver.

Target (journeys issue): p50 at most 10 ms and p99 at most 50 ms, at 1,000 events/s
sustained, with 100,000 customers, 50 live journeys and 1,000,000 pending timers
(waiting instances).

A real ``polku serve`` (processor and dispatcher children, as deployed) on a data
directory built by ``bench_journeys.py`` (its ``CONFIG`` and 50 journeys; every
customer waiting in the 10 long journeys). Through the admin API this benchmark adds
two channels to the workspace's configuration (read with ``GET /v1/workspace``, so
the rest of it stays as it was): ``latency_email`` (SMTP) and ``latency_hook``
(webhook), both to receivers in a separate process (an aiosmtpd server and a small
asyncio HTTP server), and deploys two journeys: entry on ``Latency Probe`` when
``event.properties.kind`` is ``email`` / ``webhook``, then at once an action (purpose
``service``) on that channel whose subject / JSON payload carries
``{{ trigger.properties.probe }}``.

Two loads at once:

* **Background**: ``bench_freshness``'s open-loop sender (a child process) at
  ``--rate`` requests/s with ``bench_processor``'s event mix, for customers other than
  the probe customers.
* **Probes**: every ``--probe-interval`` s this process posts a ``Latency Probe``
  (``/v1/track``) for a probe customer (each a distinct, existing customer; email and
  webhook alternate) and takes the moment the HTTP 200 arrives (``time.time_ns``).
  The receivers record ``time.time_ns`` when a message has arrived whole (the end of
  the SMTP DATA, the end of the webhook request's body) and the probe id in it, and
  hand them back through a queue. Latency = arrival − acknowledgement (one clock:
  both processes read CLOCK_REALTIME on one machine).

The split, per probe: the message's ``created_ms`` in ``state.db``'s ``messages``
(the processor's clock when it decided the message, before its batch commits) cuts
the latency into ack → processor decision and decision → receiver (the dispatcher's
poll, its ledger, the connection and the protocol). Both have a resolution of 1 ms.

Prints p50/p90/p99/max per channel and overall, the split, the probes' own
acknowledgement latency, the background rate achieved and its errors, the processor's
lag at the end, the dispatcher's attempts and how busy the machine was.

The data directory: ``--data-dir`` reuses one built by ``bench_journeys.py --data-dir
D --keep`` (copied to a temporary directory first, unless ``--in-place``); without it
one of ``--customers`` customers is built first (not timed; ~3-4 minutes for 100,000).

Run (from the repository root, after ``scripts/install``)::

    .venv/bin/python benchmarks/bench_journeys.py --data-dir /tmp/polku-journeys --keep --no-baseline \\
        --events 1000 --chunks 1
    .venv/bin/python benchmarks/bench_journey_latency.py --data-dir /tmp/polku-journeys
    .venv/bin/python benchmarks/bench_journey_latency.py --customers 5000 --probes 100 --rate 300   # smoke
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import queue
import random
import re
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

import bench_freshness
import bench_journeys
import bench_processor
from harness import ADMIN_TOKEN, BASIC_AUTH, CpuMeter, free_port, machine, server
from polku.adapters.sqlite.deliveries import DELIVERIES_FILE
from polku.adapters.sqlite.state_store import STATE_FILE
from polku.core.events import format_millis
from polku.engine.worker import wall_clock_ms

WORKSPACE = bench_journeys.WORKSPACE
EVENT = "Latency Probe"
KINDS = ("email", "webhook")
JOURNEY_IDS = {"email": "latency-email", "webhook": "latency-webhook"}
CHANNELS = {"email": "latency_email", "webhook": "latency_hook"}
SUBJECT_PREFIX = "polku-probe "
_subject = re.compile(rb"^Subject: polku-probe (\S+)\r?$", re.MULTILINE | re.IGNORECASE)

JOURNEY_EMAIL = """
id: latency-email
name: Latency probe (e-mail)
entry:
  event: Latency Probe
  when: event.properties.kind == 'email'
  reentry: always
steps:
  - id: send
    action:
      channel: latency_email
      purpose: service
      subject: "polku-probe {{ trigger.properties.probe }}"
      body: "Probe {{ trigger.properties.probe }} for {{ traits.first_name or 'you' }}"
"""

JOURNEY_WEBHOOK = """
id: latency-webhook
name: Latency probe (webhook)
entry:
  event: Latency Probe
  when: event.properties.kind == 'webhook'
  reentry: always
steps:
  - id: send
    action:
      channel: latency_hook
      purpose: service
      payload: {probe: "{{ trigger.properties.probe }}", customer: "{{ customer_id }}"}
"""


def note(text: str) -> None:
    bench_processor.progress(text)


# -- the receivers (a child process) --------------------------------------------------------


class _Inbox:
    """aiosmtpd handler: records (kind, probe, arrival ns) for every message."""

    def __init__(self, out: Any) -> None:
        self.out = out

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        arrived = time.time_ns()
        content = envelope.content if isinstance(envelope.content, bytes) else str(envelope.content).encode()
        found = _subject.search(content)
        self.out.put(("email", found.group(1).decode() if found else None, arrived))
        return "250 OK"


async def _http_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, out: Any) -> None:
    """A minimal HTTP/1.1 server (keep-alive, Content-Length bodies): 200 to every POST."""
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            body = await reader.readexactly(length) if length else b""
            arrived = time.time_ns()
            probe = None
            with contextlib.suppress(ValueError, AttributeError, TypeError):
                probe = json.loads(body).get("probe")
            out.put(("webhook", probe, arrived))
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
        pass  # the dispatcher closed the connection, or the receivers are stopping
    finally:
        writer.close()


def receivers(smtp_port: int, http_port: int, ready: StopEvent, stop: StopEvent, out: Any) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    from aiosmtpd.smtp import SMTP

    async def run() -> None:
        loop = asyncio.get_running_loop()
        inbox = _Inbox(out)
        smtp = await loop.create_server(
            lambda: SMTP(inbox, hostname="receiver.bench", ident="bench receiver"), "127.0.0.1", smtp_port
        )
        http = await asyncio.start_server(lambda r, w: _http_client(r, w, out), "127.0.0.1", http_port)
        ready.set()
        await loop.run_in_executor(None, stop.wait)  # a thread waits; the loop stays free
        smtp.close()
        http.close()

    asyncio.run(run())


# -- the data directory ------------------------------------------------------------------------


def build(data_dir: Path, customers: int) -> None:
    """bench_journeys' setup: its configuration and 50 journeys, one identify per
    customer, every customer enrolled in the 10 long-waiting journeys, processed."""
    maker = bench_journeys.JourneyMaker(1)
    asyncio.run(bench_journeys.configure(data_dir, False))
    now = wall_clock_ms()
    asyncio.run(bench_processor.append(data_dir, bench_journeys.seed_events(maker, customers, now), customers, "seed"))
    enrolments = customers * bench_journeys.LONG_JOURNEYS
    asyncio.run(
        bench_processor.append(data_dir, bench_journeys.enrol_events(maker, customers, now), enrolments, "enrol")
    )
    bench_processor.process_log(data_dir)


def store_counts(data_dir: Path) -> dict[str, int]:
    connection = sqlite3.connect(f"file:{data_dir / STATE_FILE}?mode=ro", uri=True)
    try:
        counts = {
            table: int(connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
            for table in ("timers", "journey_states")
        }
        live = 0
        for metric, count in connection.execute("SELECT metric, sum(count) FROM journey_stats GROUP BY metric"):
            live += count if metric in ("entered", "entered:holdout") else -count if metric.startswith("ended:") else 0
        counts["live_instances"] = int(live)
        (max_id,) = connection.execute("SELECT max(id) FROM messages").fetchone()
        counts["messages_max_id"] = int(max_id or 0)
        return counts
    finally:
        connection.close()


def customer_ids(data_dir: Path, users: list[str]) -> list[str]:
    connection = sqlite3.connect(f"file:{data_dir / STATE_FILE}?mode=ro", uri=True)
    try:
        found = []
        for user in users:
            row = connection.execute(
                "SELECT customer_id FROM identifiers WHERE workspace = ? AND identifier = ?",
                (WORKSPACE, "user_id:" + user),
            ).fetchone()
            if row is None:
                sys.exit(f"error: no customer has user_id {user}")
            found.append(str(row[0]))
        return found
    finally:
        connection.close()


def dispatcher_cursor(data_dir: Path) -> int:
    path = data_dir / DELIVERIES_FILE
    if not path.exists():
        return 0
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        row = connection.execute("SELECT message_id FROM cursor WHERE id = 1").fetchone()
        return int(row[0]) if row else 0
    except sqlite3.OperationalError:
        return 0
    finally:
        connection.close()


def wait_dispatcher(data_dir: Path, target: int, timeout: float) -> None:
    """Until the dispatcher has taken the outbox's old messages into its ledger."""
    deadline = time.monotonic() + timeout
    while dispatcher_cursor(data_dir) < target:
        if time.monotonic() > deadline:
            sys.exit(f"error: the dispatcher did not take the {target:,} old messages in {timeout:.0f} s")
        time.sleep(0.2)


def decisions(data_dir: Path, by_customer: dict[str, int]) -> dict[int, int]:
    """Probe number → ``messages.created_ms`` of its message."""
    connection = sqlite3.connect(f"file:{data_dir / STATE_FILE}?mode=ro", uri=True)
    try:
        rows = connection.execute(
            "SELECT customer_id, created_ms FROM messages WHERE workspace = ? AND journey IN (?, ?)",
            (WORKSPACE, *JOURNEY_IDS.values()),
        ).fetchall()
    finally:
        connection.close()
    return {by_customer[customer]: int(created) for customer, created in rows if customer in by_customer}


def ledger(data_dir: Path) -> dict[str, Any]:
    connection = sqlite3.connect(f"file:{data_dir / DELIVERIES_FILE}?mode=ro", uri=True)
    try:
        rows = connection.execute(
            "SELECT channel, status, count(*), max(attempts) FROM deliveries GROUP BY channel, status"
        ).fetchall()
    finally:
        connection.close()
    return {f"{channel}:{status}": {"count": count, "max_attempts": top} for channel, status, count, top in rows}


# -- configuring through the API ------------------------------------------------------------


def configure(admin: httpx.Client, smtp_port: int, http_port: int) -> None:
    response = admin.get("/v1/workspace")
    if response.status_code != 200:
        sys.exit(f"error: GET /v1/workspace: {response.status_code} {response.text[:300]}")
    config = response.json()["config"] or {}
    channels = dict(config.get("channels") or {})
    channels[CHANNELS["email"]] = {
        "type": "smtp",
        "host": "127.0.0.1",
        "port": smtp_port,
        "sender": "latency@bench.example",
    }
    channels[CHANNELS["webhook"]] = {
        "type": "webhook",
        "url": f"http://127.0.0.1:{http_port}/hook",
        "allow_private_network": True,
    }
    config["channels"] = channels
    response = admin.put("/v1/workspace/config", json=config)
    if response.status_code != 200:
        sys.exit(f"error: PUT /v1/workspace/config: {response.status_code} {response.text[:500]}")
    for kind, document in (("email", JOURNEY_EMAIL), ("webhook", JOURNEY_WEBHOOK)):
        response = admin.put(
            f"/v1/journeys/{JOURNEY_IDS[kind]}", content=document, headers={"content-type": "application/yaml"}
        )
        if response.status_code not in (200, 201):
            sys.exit(f"error: deploying {JOURNEY_IDS[kind]}: {response.status_code} {response.text[:500]}")


# -- measuring ---------------------------------------------------------------------------------


def probe_body(user: str, number: int, kind: str) -> dict[str, Any]:
    return {
        "userId": user,
        "event": EVENT,
        "messageId": f"latency-{time.time_ns():x}-{number}",
        "timestamp": format_millis(wall_clock_ms()),
        "properties": {"kind": kind, "probe": f"p{number}"},
        "context": bench_processor.CONTEXT,
    }


def stats_ms(values: list[float]) -> dict[str, float | None]:
    """p50/p90/p99/max of millisecond values."""
    if not values:
        return {"p50": None, "p90": None, "p99": None, "max": None, "n": 0}
    ordered = sorted(values)
    pick = bench_freshness.percentile
    return {
        "p50": round(pick(ordered, 0.5), 2),
        "p90": round(pick(ordered, 0.9), 2),
        "p99": round(pick(ordered, 0.99), 2),
        "max": round(ordered[-1], 2),
        "n": len(ordered),
    }


def measure(data_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    customers = bench_processor.customers_in(data_dir)
    total = 2 * args.probes
    pool = max(total, 1000)
    if customers < pool * 2:
        sys.exit(f"error: {customers:,} customers; {2 * args.probes} probes need at least {pool * 2:,}")
    background_customers = customers - pool  # the probes use the last `pool` users, each once
    picker = random.Random(args.seed)
    probe_users = [f"u{background_customers + k}" for k in picker.sample(range(pool), total)]
    probe_ids = customer_ids(data_dir, probe_users)
    by_customer = {customer: number for number, customer in enumerate(probe_ids)}
    before = store_counts(data_dir)
    note(
        f"store: {customers:,} customers, {before['live_instances']:,} live instances, {before['timers']:,} timer rows"
    )

    context = multiprocessing.get_context("fork")
    smtp_port, http_port = free_port(), free_port()
    receiver_stop, receiver_ready = context.Event(), context.Event()
    arrivals_queue = context.Queue()
    receiver = context.Process(
        target=receivers, args=(smtp_port, http_port, receiver_ready, receiver_stop, arrivals_queue), daemon=True
    )
    receiver.start()
    if not receiver_ready.wait(timeout=30):
        sys.exit("error: the receivers did not start")
    arrivals: dict[str, tuple[str, int]] = {}
    strays = 0

    def drain(block_s: float = 0.0) -> None:
        nonlocal strays
        deadline = time.monotonic() + block_s
        while True:
            left = deadline - time.monotonic()
            try:
                kind, probe, arrived = arrivals_queue.get(timeout=left) if left > 0 else arrivals_queue.get_nowait()
            except queue.Empty:
                return
            if probe is None or probe in arrivals:
                strays += 1  # another journey's message, or a repeat
            else:
                arrivals[probe] = (kind, arrived)

    seconds = args.warmup + total * (args.probe_interval + 0.1) + 30  # stopped when the probes end
    acks_ns: list[int] = [0] * total
    ack_ms: list[float] = []
    try:
        with (
            server(data_dir) as running,
            httpx.Client(base_url=f"http://127.0.0.1:{running.port}", timeout=10) as client,
            httpx.Client(
                base_url=f"http://127.0.0.1:{running.port}",
                timeout=30,
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            ) as admin,
        ):
            client.headers["Authorization"] = BASIC_AUTH
            configure(admin, smtp_port, http_port)
            bench_freshness.wait_caught_up(admin, 600)
            wait_dispatcher(data_dir, before["messages_max_id"], 300)
            time.sleep(1.5)  # the processor and the dispatcher pick up configuration within a second
            bench_journeys.quiet()
            stop, ready = context.Event(), context.Event()
            out = context.Queue()
            sender = context.Process(
                target=bench_freshness.background,
                args=(running.port, args.rate, seconds, background_customers, ready, stop, out),
                daemon=True,
            )
            with CpuMeter(running.pid) as cpu:
                sender.start()
                if not ready.wait(timeout=300):
                    sys.exit("error: the background sender did not start")
                time.sleep(args.warmup)
                started = time.perf_counter()
                next_probe = started
                for number, user in enumerate(probe_users):
                    kind = KINDS[number % 2]
                    body = probe_body(user, number, kind)
                    sent = time.perf_counter()
                    response = client.post("/v1/track", json=body)
                    acks_ns[number] = time.time_ns()
                    ack_ms.append((time.perf_counter() - sent) * 1000)
                    if response.status_code != 200:
                        sys.exit(f"error: probe {number}: {response.status_code} {response.text[:300]}")
                    drain()
                    next_probe += args.probe_interval
                    time.sleep(max(0.0, next_probe - time.perf_counter()))
                probing_s = time.perf_counter() - started
                end_lag = bench_freshness.lag(admin)
                deadline = time.monotonic() + args.timeout
                while len(arrivals) < total and time.monotonic() < deadline:
                    drain(0.2)
                stop.set()
                background_result = out.get(timeout=120)
                sender.join(timeout=30)
                receiver_stop.set()
                drain(0.5)
                receiver.join(timeout=10)
            found = decisions(data_dir, by_customer)
            deliveries = ledger(data_dir)
            stats = {
                kind: admin.get(f"/v1/journeys/{journey}/stats").json().get("total", {}).get("actions")
                for kind, journey in JOURNEY_IDS.items()
            }
    finally:
        receiver_stop.set()
        if receiver.is_alive():
            receiver.join(timeout=5)
            if receiver.is_alive():
                receiver.kill()

    latency: dict[str, list[float]] = {kind: [] for kind in KINDS}
    to_decision: list[float] = []
    decision_to_arrival: dict[str, list[float]] = {kind: [] for kind in KINDS}
    missing: dict[str, int] = dict.fromkeys(KINDS, 0)
    wrong_channel = 0
    for number in range(total):
        kind = KINDS[number % 2]
        arrival = arrivals.get(f"p{number}")
        if arrival is None:
            missing[kind] += 1
            continue
        if arrival[0] != kind:
            wrong_channel += 1
        latency[kind].append((arrival[1] - acks_ns[number]) / 1e6)
        created = found.get(number)
        if created is not None:
            to_decision.append(created - acks_ns[number] / 1e6)
            decision_to_arrival[kind].append(arrival[1] / 1e6 - created)
    background = background_result
    return {
        "benchmark": "journey_latency",
        "customers": customers,
        "live_instances": before["live_instances"],
        "timer_rows": before["timers"],
        "journey_states": before["journey_states"],
        "rate": args.rate,
        "probe_interval_s": args.probe_interval,
        "probes_per_channel": args.probes,
        "probing_seconds": round(probing_s, 1),
        "latency_ms": {
            **{kind: stats_ms(values) for kind, values in latency.items()},
            "overall": stats_ms(latency["email"] + latency["webhook"]),
        },
        "missing": missing,
        "wrong_channel": wrong_channel,
        "stray_messages": strays,
        "split_ms": {
            "ack_to_decision": stats_ms(to_decision),
            "decision_to_arrival": {kind: stats_ms(values) for kind, values in decision_to_arrival.items()},
        },
        "probe_ack_ms": stats_ms(ack_ms),
        "background": {
            "sent": background["sent"],
            "achieved_rate": round(background["sent"] / background["seconds"]),
            "acknowledged": background["acknowledged"],
            "failed": background["failed"],
            "failures": background["failures"],
            "ack_p99_ms": round(background["ack_p99_ms"], 2) if background["ack_p99_ms"] is not None else None,
        },
        "processor_at_end": end_lag,
        "deliveries": deliveries,
        "journey_actions": stats,
        "cpu": cpu.summary(),
        "cpu_detail": {
            "machine_busy": round(cpu.machine, 3),
            "server_cpus": round(cpu.server, 2),
            "generator_and_receivers_cpus": round(cpu.generator, 2),
        },
        "machine": machine(),
    }


def fmt(stats: dict[str, Any]) -> str:
    return (
        f"p50 {stats['p50']} ms, p90 {stats['p90']} ms, p99 {stats['p99']} ms, max {stats['max']} ms (n={stats['n']})"
    )


def print_table(result: dict[str, Any], args: argparse.Namespace) -> None:
    latency = result["latency_ms"]
    split = result["split_ms"]
    background = result["background"]
    print(
        f"journey latency: {result['customers']:,} customers, {result['live_instances']:,} live instances "
        f"({result['timer_rows']:,} timer rows), {args.probes} probes per channel every "
        f"{args.probe_interval * 1000:.0f} ms under {args.rate:,.0f} events/s of background load (open loop)"
    )
    rows = [
        ("ack -> SMTP server", fmt(latency["email"])),
        ("ack -> webhook receiver", fmt(latency["webhook"])),
        ("ack -> either", fmt(latency["overall"])),
        ("split: ack -> decision", fmt(split["ack_to_decision"])),
        ("split: decision -> SMTP", fmt(split["decision_to_arrival"]["email"])),
        ("split: decision -> webhook", fmt(split["decision_to_arrival"]["webhook"])),
        (
            "missing / wrong channel",
            f"{result['missing']} / {result['wrong_channel']} (stray messages {result['stray_messages']})",
        ),
        ("probe acknowledgement", fmt(result["probe_ack_ms"])),
        (
            "background load",
            f"{background['sent']:,} sent at {background['achieved_rate']:,}/s, {background['acknowledged']:,} "
            f"acknowledged, {background['failed']} failed, ack p99 {background['ack_p99_ms']} ms",
        ),
        ("processor at the end", json.dumps(result["processor_at_end"])),
        ("deliveries ledger", json.dumps(result["deliveries"])),
        ("CPU", f"{result['cpu']}; machine {result['cpu_detail']['machine_busy']:.0%} busy"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    overall = latency["overall"]
    print(
        f"RESULT journey latency (ack -> SMTP/webhook, {args.rate:,.0f} events/s background, "
        f"{result['customers']:,} customers, {result['live_instances']:,} live instances): p50 {overall['p50']} ms, "
        f"p99 {overall['p99']} ms (email p50 {latency['email']['p50']} / p99 {latency['email']['p99']}, webhook "
        f"p50 {latency['webhook']['p50']} / p99 {latency['webhook']['p99']}; target p50 <= 10 ms, p99 <= 50 ms) "
        f"| {result['machine']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, help="a data directory bench_journeys.py built (--keep); copied")
    parser.add_argument("--in-place", action="store_true", help="with --data-dir: use it directly, not a copy")
    parser.add_argument("--customers", type=int, default=100_000, help="without --data-dir: customers to build")
    parser.add_argument("--probes", type=int, default=500, help="probes per channel (at least 500 for a p99)")
    parser.add_argument("--rate", type=float, default=1000.0, help="background events/s (open loop)")
    parser.add_argument("--probe-interval", type=float, default=0.05, help="seconds between probes")
    parser.add_argument("--timeout", type=float, default=30.0, help="wait this long after the last probe for arrivals")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of background load before probing")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="polku-bench-latency-"))
    try:
        if args.data_dir is not None:
            if not (args.data_dir / STATE_FILE).exists():
                parser.error(
                    f"{args.data_dir} has no {STATE_FILE}; build it with bench_journeys.py --data-dir D --keep"
                )
            if args.in_place:
                data_dir = args.data_dir
            else:
                data_dir = scratch / "data"
                started = time.perf_counter()
                shutil.copytree(args.data_dir, data_dir)
                note(f"copied {args.data_dir} in {time.perf_counter() - started:.1f} s")
        else:
            data_dir = scratch / "data"
            note(f"building a data directory of {args.customers:,} customers (bench_journeys' setup)")
            started = time.perf_counter()
            build(data_dir, args.customers)
            note(f"  built in {time.perf_counter() - started:.1f} s")
        result = measure(data_dir, args)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print_table(result, args)


if __name__ == "__main__":
    main()
