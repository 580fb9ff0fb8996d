"""Batch ingestion: events per second accepted and durable through ``/v1/batch``.

Target (issue 2): batches of 100 events, at least 50,000 events/s on a 2-core
machine, load generator on the same machine, real server over loopback.

Each repetition starts a fresh ``polku serve`` (SQLite, synchronous=FULL) in a
temporary directory and drives it with ``wrk`` for a fixed time (closed loop,
``--connections`` requests in flight). Every event carries a new, unique
``messageId`` whose first 64 bits are random, like the UUIDs SDKs send, so
deduplication really looks each one up and the ids arrive in no order. After the
run the benchmark counts the rows in ``polku.db`` and fails unless the store holds
every event the server acknowledged. It prints each run (with how many CPUs the
server and wrk used, and a NOISY mark when other processes took more than 5 % of
the machine) and the median of the repetitions on the final RESULT line.

Run (from the repository root, after ``scripts/install``)::

    apt-get install -y wrk       # once
    .venv/bin/python benchmarks/bench_batch_ingest.py
    .venv/bin/python benchmarks/bench_batch_ingest.py --runs 5 --seconds 10 --connections 8
    .venv/bin/python benchmarks/bench_batch_ingest.py --prefill 2000000 --runs 1   # on a 2M-event log

``--prefill N`` imports N events (``polku import``) before the server starts, to
measure the append path once the deduplication index is large.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from random import getrandbits

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    CpuMeter,
    check_stored,
    count_events,
    machine,
    median,
    message_id_prefix,
    polku_command,
    require_wrk,
    run_wrk,
    server,
    wait_for_quiet,
)

EVENT_LINE = (
    '{{"type":"track","messageId":"{r:016x}-prefill-{n}","userId":"user-{u}","event":"Order Completed",'
    '"properties":{{"orderId":"o-{n}","revenue":42.5,"currency":"EUR"}},'
    '"context":{{"library":{{"name":"analytics-python","version":"2.3.2"}},"ip":"203.0.113.7"}},'
    '"timestamp":"2026-01-15T10:00:00.000Z"}}\n'
)


def prefill(data_dir: Path, count: int) -> None:
    """``count`` events in the log before the server starts (via ``polku import``)."""
    with tempfile.TemporaryDirectory(prefix="polku-prefill-") as scratch:
        path = Path(scratch) / "prefill.jsonl"
        with path.open("w") as handle:
            step = 100_000
            for start in range(0, count, step):
                handle.write(
                    "".join(
                        EVENT_LINE.format(r=getrandbits(64), n=n, u=n % 10007)
                        for n in range(start, min(count, start + step))
                    )
                )
        started = time.perf_counter()
        subprocess.run(
            [*polku_command(), "import", str(path), "--data-dir", str(data_dir)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        print(f"  prefilled {count} events in {time.perf_counter() - started:.1f} s", flush=True)


def one_run(args: argparse.Namespace, scratch: Path, run: int) -> float:
    data_dir = scratch / f"run{run}"
    if args.prefill:
        prefill(data_dir, args.prefill)
    before = count_events(data_dir) if args.prefill else 0
    wait_for_quiet()
    extra = ["--synchronous", args.synchronous]
    with server(data_dir, extra=extra) as running, CpuMeter(running.pid) as cpu:
        result = run_wrk(
            running.port,
            path="/v1/batch",
            items=args.batch,
            connections=args.connections,
            threads=args.threads,
            seconds=args.seconds,
            prefix=message_id_prefix(),
        )
    if result["bad"] or result["socket_errors"] or result["rejected"] or result["duplicates"]:
        sys.exit(f"error: unexpected outcomes: {result}")
    stored = check_stored(
        data_dir, acknowledged=before + result["accepted"], in_flight_bound=args.connections * args.batch
    )
    rate = result["accepted"] / (result["duration_us"] / 1e6)
    print(
        f"  run {run}: {rate:,.0f} events/s ({result['ok']} batches of {args.batch} acknowledged, "
        f"{stored - before} stored; latency p50 {result['p50_us'] / 1000:.1f} ms, "
        f"p99 {result['p99_us'] / 1000:.1f} ms; {cpu.summary()})",
        flush=True,
    )
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--batch", type=int, default=100, help="events per request")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--synchronous", choices=["FULL", "NORMAL"], default="FULL")
    parser.add_argument("--prefill", type=int, default=0, help="events in the log before the run")
    args = parser.parse_args()
    require_wrk()
    print(
        f"batch ingestion: {args.runs} runs x {args.seconds:.0f} s, batches of {args.batch}, "
        f"{args.connections} connections, synchronous={args.synchronous}, prefill={args.prefill}",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="polku-bench-batch-") as scratch:
        rates = [one_run(args, Path(scratch), run) for run in range(1, args.runs + 1)]
    print(
        f"RESULT batch ingest (/v1/batch x{args.batch}, synchronous={args.synchronous}, prefill={args.prefill}): "
        f"median {median(rates):,.0f} events/s accepted and durable over {args.runs} runs "
        f"(min {min(rates):,.0f}, max {max(rates):,.0f}; target >= 50,000) | {machine()}"
    )


if __name__ == "__main__":
    main()
