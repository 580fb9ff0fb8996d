"""``polku demo``: start a real ``polku serve`` on its own data directory, configure a
demo workspace, backfill a month of the demo company's history through the real
ingestion API, deploy its journeys and surveys, and keep sending live events until
stopped (docs/demo.md). Messages the journeys send land in the demo's own inbox (a
small HTTP receiver), so nothing leaves the machine."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Final

import httpx

from polku.demo.definitions import ACTIONS, JOURNEYS, SURVEYS, config
from polku.demo.world import DemoWorld, batches

WRITE_KEY: Final = "demo-write-key"
ADMIN_TOKEN: Final = "demo-admin-token"
READY_TIMEOUT_S: Final = 60.0


class Inbox:
    """The demo's outbound channels end here: a local HTTP receiver that counts."""

    def __init__(self) -> None:
        self.received: Counter[str] = Counter()
        self.last: list[dict[str, Any]] = []
        inbox = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = min(int(self.headers.get("content-length") or 0), 1 << 20)
                body = self.rfile.read(length)
                inbox.received[self.path] += 1
                try:
                    inbox.last = [*inbox.last[-49:], {"path": self.path, "body": json.loads(body or b"{}")}]
                except ValueError:
                    pass
                self.send_response(200)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()


def run_demo(
    *, data_dir: Path, host: str, port: int, customers: int, days: int, rate: float, seed: int, live: bool
) -> None:
    url = f"http://{host}:{port}"
    fresh = not (data_dir / "demo.json").exists()
    data_dir.mkdir(parents=True, exist_ok=True)
    log_file = (data_dir / "server.log").open("ab")
    server = subprocess.Popen(
        [
            sys.executable, "-m", "polku", "serve", "--data-dir", str(data_dir), "--host", host, "--port", str(port),
            "--write-key", WRITE_KEY, "--admin-token", ADMIN_TOKEN, "--public-url", url,
        ],
        stdout=log_file,
        stderr=subprocess.STDOUT,
        # Its own session: Ctrl-C reaches the demo, which then stops the server
        # (and its children) in order, rather than every process at once.
        start_new_session=True,
    )  # fmt: skip
    inbox = Inbox()
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    try:
        _say(f"starting polku on {url} (data in {data_dir}, server log in {data_dir / 'server.log'})")
        _wait_ready(url, server)
        world = DemoWorld(seed=seed, customers=customers, days=days)
        with httpx.Client(base_url=url, timeout=30) as client:
            admin = {"authorization": f"Bearer {ADMIN_TOKEN}"}
            answer = client.put("/v1/workspace/config", content=config(inbox.url, url), headers=admin)
            answer.raise_for_status()
            now = int(time.time() * 1000)
            history = world.history(now)
            if fresh:
                _say(f"backfilling {days} days of history: {len(history):,} events of {customers:,} customers …")
                _send(client, history)
                _wait_caught_up(client, admin)
                (data_dir / "demo.json").write_text(json.dumps({"seed": seed, "customers": customers, "days": days}))
            else:
                _say("the demo's history is already in this data directory; going live")
            for body in JOURNEYS:
                journey_id = body.split("id:", 1)[1].split()[0]
                client.put(
                    f"/v1/journeys/{journey_id}", content=body, headers={**admin, "content-type": "application/yaml"}
                ).raise_for_status()
            for body in SURVEYS:
                survey_id = body.split("id:", 1)[1].split()[0]
                client.put(
                    f"/v1/surveys/{survey_id}", content=body, headers={**admin, "content-type": "application/yaml"}
                ).raise_for_status()
            client.put(
                "/v1/actions", content=ACTIONS, headers={**admin, "content-type": "application/yaml"}
            ).raise_for_status()
            _instructions(url, data_dir)
            if not live:
                return
            _live(client, world, rate, inbox, stopping)
    except KeyboardInterrupt:
        pass
    finally:
        inbox.close()
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
        log_file.close()
        _say("demo stopped; run `polku demo` again to go on where it left off")


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _wait_ready(url: str, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError("polku serve exited; see server.log in the data directory")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"polku serve was not ready within {READY_TIMEOUT_S:.0f} s")


def _send(client: httpx.Client, events: list[dict[str, Any]]) -> None:
    headers = {"authorization": f"Bearer {WRITE_KEY}"}
    for batch in batches(events):
        while True:
            answer = client.post("/v1/batch", json={"batch": batch, "writeKey": WRITE_KEY}, headers=headers)
            if answer.status_code == 503:
                time.sleep(float(answer.headers.get("retry-after", "1")))
                continue
            answer.raise_for_status()
            break


def _wait_caught_up(client: httpx.Client, admin: dict[str, str]) -> None:
    """Until the processor has applied the backfill and the analytics store holds it."""
    started = time.monotonic()
    while True:
        try:
            processor = client.get("/v1/processor", headers=admin)
            analytics = client.get("/v1/analytics", headers=admin)
        except httpx.TransportError:  # a connection the server closed: ask again
            time.sleep(1)
            continue
        # A busy store (the feed holds DuckDB's write lock) answers 503 for a moment.
        if processor.status_code != 200 or analytics.status_code != 200:
            time.sleep(1)
            continue
        store = analytics.json()["store"]
        if processor.json()["lag"] == 0 and store["lag"] == 0:
            _say(
                f"history processed in {time.monotonic() - started:.0f} s: {store['events']:,} events in the analytics store"
            )
            return
        time.sleep(0.5)


def _instructions(url: str, data_dir: Path) -> None:
    d = f"--data-dir {data_dir}"
    _say(
        f"""
polku is running at {url}
  admin token: {ADMIN_TOKEN}     write key: {WRITE_KEY}

Open the dashboard: {url}/ui/  (log in with the admin token above)

Ask it (in another terminal):
  polku analyze channel-mix {d}                       # who uses which channel; accounts vs consumers
  polku analyze root-causes --metric csat --channel phone {d}
  polku analyze switching --assisted phone,chat {d}   # self-service that ends in a contact
  polku analyze opportunities --metric csat --assisted phone,chat {d}
  polku analyze funnel --steps "Added to Cart,Checkout Started,Delivery Options Viewed,Order Completed" {d}
  polku analyze paths --start "app:Password Reset Failed" {d}
  polku analyze variants --granularity channel {d}
  polku analyze attribution --goal "Order Completed" {d}
  polku analyze uplift {d}
  polku feedback metrics --metric csat --by channel {d}
  curl -H 'Authorization: Bearer {ADMIN_TOKEN}' '{url}/v1/analytics/root-causes?metric=csat&channel=phone'
  curl -H 'Authorization: Bearer {ADMIN_TOKEN}' -X POST {url}/v1/decide \\
       -d '{{"identifier": {{"user_id": "cust-00007"}}, "channel": "chat", "context": {{"intent": "login_problem"}}}}'
  polku actions stats {d}

Live events are flowing; Ctrl-C stops the demo.
"""
    )


def _live(client: httpx.Client, world: DemoWorld, rate: float, inbox: Inbox, stopping: threading.Event) -> None:
    sent = 0
    report = time.monotonic() + 10
    while not stopping.is_set():
        tick = time.monotonic()
        now = int(time.time() * 1000)
        events: list[dict[str, Any]] = []
        while len(events) < max(1, int(rate)):
            events.extend(world.live(now))
        _send(client, events)
        sent += len(events)
        if time.monotonic() > report:
            delivered = sum(inbox.received.values())
            _say(f"live: {sent:,} events sent; {delivered:,} messages delivered to the demo inbox")
            report = time.monotonic() + 10
        stopping.wait(max(0.0, 1.0 - (time.monotonic() - tick)))
