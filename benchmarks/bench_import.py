"""``polku import`` of a JSONL file: events per second, end to end.

Target (issue 2): at least 100,000 events/s on a 2-core machine.

The benchmark writes a JSONL file of Segment track messages (about 480 bytes a
line, like an analytics-python event; each with a unique ``messageId`` whose first
64 bits are random, like the UUIDs SDKs send), then runs ``polku import FILE
--data-dir D`` into a fresh data directory for each repetition and times the whole
command: process start, parsing, validation, deduplication, commits with
synchronous=FULL, shutdown. It checks the command's JSON summary and counts the
rows in ``polku.db``: every message must be stored once. It prints each run and
the median on the final RESULT line.

Run (from the repository root, after ``scripts/install``)::

    .venv/bin/python benchmarks/bench_import.py
    .venv/bin/python benchmarks/bench_import.py --events 1000000 --runs 5
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from random import getrandbits

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import CpuMeter, count_events, machine, median, message_id_prefix, polku_command, wait_for_quiet

LINE = (
    '{{"type":"track","messageId":"{random:016x}-{prefix}-{n}","userId":"user-{user}","event":"Order Completed",'
    '"properties":{{"orderId":"o-{n}","revenue":42.5,"currency":"EUR",'
    '"products":[{{"sku":"sku-17","quantity":2,"price":21.25}}]}},'
    '"context":{{"library":{{"name":"analytics-python","version":"2.3.2"}},"ip":"203.0.113.7",'
    '"userAgent":"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36",'
    '"locale":"en-US"}},"timestamp":"2026-01-15T{hour:02d}:{minute:02d}:{second:02d}.{ms:03d}Z"}}\n'
)


def write_file(path: Path, events: int) -> None:
    prefix = message_id_prefix()
    with path.open("w") as handle:
        step = 50_000
        for start in range(0, events, step):
            handle.write(
                "".join(
                    LINE.format(
                        random=getrandbits(64),
                        prefix=prefix,
                        n=n,
                        user=n % 10007,
                        # A distinct moment per event (10 per second over the file).
                        hour=n // 36_000 % 24,
                        minute=n // 600 % 60,
                        second=n // 10 % 60,
                        ms=n % 10 * 100 + n % 97,
                    )
                    for n in range(start, min(events, start + step))
                )
            )


def one_run(path: Path, events: int, scratch: Path, run: int, extra: list[str]) -> float:
    data_dir = scratch / f"run{run}"
    wait_for_quiet()
    started = time.perf_counter()
    with CpuMeter() as cpu:
        completed = subprocess.run(
            [*polku_command(), "import", str(path), "--data-dir", str(data_dir), "--output", "json", *extra],
            capture_output=True,
            text=True,
            check=False,
        )
    seconds = time.perf_counter() - started
    if completed.returncode != 0:
        sys.exit(f"error: polku import failed ({completed.returncode}):\n{completed.stdout}\n{completed.stderr}")
    summary = json.loads(completed.stdout)
    stored = count_events(data_dir)
    if summary["accepted"] != events or stored != events or summary["quarantined"] or summary["duplicates"]:
        sys.exit(f"error: imported {events} messages, summary {summary}, {stored} rows stored")
    rate = events / seconds
    print(
        f"  run {run}: {rate:,.0f} events/s ({events} events in {seconds:.2f} s, {stored} stored; {cpu.summary()})",
        flush=True,
    )
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--events", type=int, default=1_000_000)
    args = parser.parse_args()
    polku_command()
    with tempfile.TemporaryDirectory(prefix="polku-bench-import-") as scratch:
        path = Path(scratch) / "events.jsonl"
        write_file(path, args.events)
        size = path.stat().st_size
        print(
            f"import: {args.runs} runs of a {size / 1e6:.0f} MB JSONL file of {args.events:,} events "
            f"({size / args.events:.0f} bytes each)",
            flush=True,
        )
        rates = [one_run(path, args.events, Path(scratch), run, []) for run in range(1, args.runs + 1)]
    print(
        f"RESULT import (polku import, JSONL, {args.events:,} events, end to end): median {median(rates):,.0f} "
        f"events/s over {args.runs} runs (min {min(rates):,.0f}, max {max(rates):,.0f}; target >= 100,000) "
        f"| {machine()}"
    )


if __name__ == "__main__":
    main()
