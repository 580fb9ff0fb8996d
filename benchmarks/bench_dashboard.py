"""Dashboard page render times: the server time (``Server-Timing: app;dur``) of
every page, of the fragments the pages fetch after they show, and of the live JSON
they poll — on the demo world and on a demo world of ~1,000,000 events.

Target (issue 8): every page's first render ≤ 300 ms server time. A page's "first
render" is its HTML; slow analyses are fragments fetched after the page shows, and
are reported separately.

    .venv/bin/python benchmarks/bench_dashboard.py                       # both worlds
    .venv/bin/python benchmarks/bench_dashboard.py --world demo --requests 10

Stores are built once with ``polku demo --no-live`` under ``.bench/`` and reused.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / ".bench"
TOKEN = "demo-admin-token"
TARGET_MS = 300.0
EVENTS_PER_CUSTOMER = 31.3
"""The demo world's events per customer over 30 days (600 customers: 18,800 events)."""
WORLDS = {"demo": 1500, "1m": round(1_000_000 / EVENTS_PER_CUSTOMER)}


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def build(data_dir: Path, customers: int) -> None:
    if (data_dir / "demo.json").exists():
        return
    print(f"building {data_dir} ({customers:,} customers, 30 days) …", flush=True)
    started = time.monotonic()
    subprocess.run(
        [sys.executable, "-m", "polku", "demo", "--data-dir", str(data_dir), "--port", str(free_port()),
         "--customers", str(customers), "--days", "30", "--no-live"],
        check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    print(f"built in {time.monotonic() - started:.0f} s", flush=True)


def serve(data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [sys.executable, "-m", "polku", "serve", "--data-dir", str(data_dir), "--port", str(port),
         "--admin-token", TOKEN],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    process.kill()
    raise SystemExit("polku serve did not start")


def log_in(client: httpx.Client) -> None:
    page = client.get("/ui/login")
    check = re.search(r'name="check" value="([^"]+)"', page.text)
    assert check, page.text[:300]
    done = client.post("/ui/login", data={"token": TOKEN, "check": check.group(1), "next": "/ui/"})
    assert done.status_code == 303, done.text[:300]


def server_ms(response: httpx.Response) -> float:
    found = re.search(r"app;dur=([\d.]+)", response.headers.get("server-timing", ""))
    return float(found.group(1)) if found else float("nan")


def pages(client: httpx.Client, admin: httpx.Client) -> list[str]:
    """Every page, with real ids from the API."""
    found = ["/ui/", "/ui/journeys", "/ui/paths", "/ui/feedback", "/ui/customers", "/ui/surveys", "/ui/channels",
             "/ui/sources"]  # fmt: skip
    journeys = admin.get("/v1/journeys").json()["journeys"]
    if journeys:
        found.insert(2, f"/ui/journeys/{journeys[0]['id']}")
    surveys = admin.get("/v1/surveys").json().get("surveys", [])
    if surveys:
        found.append(f"/ui/surveys/{surveys[0]['id']}")
    customer = admin.get("/v1/profiles/lookup", params={"user_id": "cust-00007"})
    if customer.status_code == 200:
        found.append(f"/ui/customers/{customer.json()['customer_id']}")
    found.append("/ui/paths?start=app%3APassword+Reset+Failed&granularity=channel%3Aevent")
    return found


def measure(client: httpx.Client, url: str, requests: int) -> dict[str, Any]:
    first = client.get(url)
    assert first.status_code == 200, f"{url}: {first.status_code} {first.text[:300]}"
    times, walls = [], []
    for _ in range(requests):
        started = time.perf_counter()
        response = client.get(url)
        walls.append((time.perf_counter() - started) * 1000)
        times.append(server_ms(response))
    return {
        "url": url,
        "first_ms": server_ms(first),
        "median_ms": statistics.median(times),
        "max_ms": max(times),
        "wall_median_ms": statistics.median(walls),
        "bytes": len(first.content),
        "html": first.text,
    }


def run_world(name: str, requests: int) -> list[dict[str, Any]]:
    data_dir = BENCH / f"dashboard-{name}"
    build(data_dir, WORLDS[name])
    port = free_port()
    process = serve(data_dir, port)
    rows: list[dict[str, Any]] = []
    try:
        url = f"http://127.0.0.1:{port}"
        with (
            httpx.Client(base_url=url, timeout=120) as client,
            httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=120) as admin,
        ):
            log_in(client)
            events = admin.get("/v1/processor").json()["log_end"]
            print(f"\n## {name}: {events:,} events in the log\n", flush=True)
            print("| kind | url | first (ms) | median (ms) | max (ms) | wall median (ms) |")
            print("|---|---|---|---|---|---|")
            for page in pages(client, admin):
                row = {"kind": "page", **measure(client, page, requests)}
                extras = [("fragment", f) for f in re.findall(r'data-fragment="([^"]+)"', row.pop("html"))]
                for kind, extra in [("page", None), *extras]:
                    found = (
                        row
                        if extra is None
                        else {"kind": kind, **measure(client, extra.replace("&amp;", "&"), requests)}
                    )
                    found.pop("html", None)
                    rows.append({"world": name, "events": events, **found})
                    print(
                        f"| {found['kind']} | `{found['url']}` | {found['first_ms']:.1f} | {found['median_ms']:.1f} | "
                        f"{found['max_ms']:.1f} | {found['wall_median_ms']:.1f} |",
                        flush=True,
                    )
            for poll in sorted({"/ui/api/overview"}):
                found = {"kind": "poll", **measure(client, poll, requests)}
                found.pop("html", None)
                rows.append({"world": name, "events": events, **found})
                print(
                    f"| poll | `{poll}` | {found['first_ms']:.1f} | {found['median_ms']:.1f} | {found['max_ms']:.1f} | "
                    f"{found['wall_median_ms']:.1f} |"
                )
    finally:
        process.terminate()
        process.wait(timeout=30)
    page_rows = [row for row in rows if row["kind"] == "page"]
    worst = max(page_rows, key=lambda row: row["median_ms"])
    met = all(row["median_ms"] <= TARGET_MS and row["first_ms"] <= TARGET_MS for row in page_rows)
    print(
        f"\n{name}: slowest page median {worst['median_ms']:.1f} ms ({worst['url']}); "
        f"every page ≤ {TARGET_MS:.0f} ms (first and median): {'met' if met else 'NOT met'}"
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world", choices=["demo", "1m", "both"], default="both")
    parser.add_argument("--requests", type=int, default=15, help="timed requests per URL (after one untimed)")
    arguments = parser.parse_args()
    BENCH.mkdir(exist_ok=True)
    worlds = ["demo", "1m"] if arguments.world == "both" else [arguments.world]
    rows = [row for world in worlds for row in run_world(world, arguments.requests)]
    (BENCH / "dashboard.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
