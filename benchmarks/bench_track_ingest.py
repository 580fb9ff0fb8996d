"""Single-event ingestion: ``/v1/track`` requests per second, each acknowledged only
after its event is durable.

Target (issue 2): at least 5,000 requests/s on a 2-core machine, load generator on
the same machine, real server over loopback.

Each repetition starts a fresh ``polku serve`` (SQLite, synchronous=FULL) in a
temporary directory and drives it with ``wrk`` (closed loop: each connection sends
its next request when the previous one is answered). Every request carries a new,
unique ``messageId`` (64 random bits first, like an SDK's UUID). After the run the
benchmark counts the rows in ``polku.db`` and fails unless the store holds every
event the server acknowledged. It prints each run and the median on the final
RESULT line. The latency at a constant rate is ``bench_track_latency.py``.

Run (from the repository root, after ``scripts/install``)::

    apt-get install -y wrk       # once
    .venv/bin/python benchmarks/bench_track_ingest.py
    .venv/bin/python benchmarks/bench_track_ingest.py --runs 5 --seconds 10 --connections 32
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    CpuMeter,
    check_stored,
    machine,
    median,
    message_id_prefix,
    require_wrk,
    run_wrk,
    server,
    wait_for_quiet,
)


def one_run(args: argparse.Namespace, scratch: Path, run: int) -> float:
    data_dir = scratch / f"run{run}"
    wait_for_quiet()
    with server(data_dir, extra=["--synchronous", args.synchronous]) as running, CpuMeter(running.pid) as cpu:
        result = run_wrk(
            running.port,
            path="/v1/track",
            items=0,
            connections=args.connections,
            threads=args.threads,
            seconds=args.seconds,
            prefix=message_id_prefix(),
        )
    if result["bad"] or result["socket_errors"] or result["rejected"] or result["duplicates"]:
        sys.exit(f"error: unexpected outcomes: {result}")
    stored = check_stored(data_dir, acknowledged=result["accepted"], in_flight_bound=args.connections)
    rate = result["ok"] / (result["duration_us"] / 1e6)
    print(
        f"  run {run}: {rate:,.0f} requests/s ({result['ok']} acknowledged, {stored} stored; "
        f"latency p50 {result['p50_us'] / 1000:.1f} ms, p99 {result['p99_us'] / 1000:.1f} ms; {cpu.summary()})",
        flush=True,
    )
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--synchronous", choices=["FULL", "NORMAL"], default="FULL")
    args = parser.parse_args()
    require_wrk()
    print(
        f"track ingestion: {args.runs} runs x {args.seconds:.0f} s, {args.connections} connections, "
        f"synchronous={args.synchronous}",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="polku-bench-track-") as scratch:
        rates = [one_run(args, Path(scratch), run) for run in range(1, args.runs + 1)]
    print(
        f"RESULT track ingest (/v1/track, one event per request, synchronous={args.synchronous}): "
        f"median {median(rates):,.0f} requests/s acknowledged and durable over {args.runs} runs "
        f"(min {min(rates):,.0f}, max {max(rates):,.0f}; target >= 5,000) | {machine()}"
    )


if __name__ == "__main__":
    main()
