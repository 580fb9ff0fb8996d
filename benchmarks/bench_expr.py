"""Evaluation speed of compiled conditions (``polku.core.expr``): ns per evaluation.

Target (DESIGN.md, "Interfaces users already know"): at most 2 µs per evaluation of a
typical condition; a whitelisted-AST subset compiled with ``compile()`` should reach
~0.3 µs.

The benchmark compiles three representative segment conditions, checks each gives the
expected answer on its context, then calls each one ``--loops`` times in a plain
``for`` loop per run, for ``--runs`` runs, and prints the median and the fastest run
in nanoseconds per evaluation (the loop's own cost included: ~15 ns). It also times
compilation, which happens once per configuration load. No server, no IO.

Run (from the repository root)::

    .venv/bin/python benchmarks/bench_expr.py
    .venv/bin/python benchmarks/bench_expr.py --runs 15 --loops 500000 --json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from polku.core.expr import Condition, compile_condition

SEGMENT_ROOTS = {
    "traits",
    "attributes",
    "segments",
    "accounts",
    "account",
    "last_seen",
    "feedback",
    "identifiers",
    "now",
}
NOW = 1_767_225_600_000  # 2026-01-01T00:00:00Z in ms
CONTEXT: dict[str, Any] = {
    "traits": {"plan": "pro", "email": "ada@example.com", "country": "FI", "name": "Ada"},
    "attributes": {"orders_30d": 5, "revenue_90d": 412.5},
    "segments": ["vip", "newsletter", "finland"],
    "last_seen": {"app": NOW - 2 * 86_400_000, "web": NOW - 40 * 86_400_000},
    "feedback": {"nps": 4},
    "identifiers": {"email": ["ada@example.com"]},
    "now": NOW,
}
CONDITIONS = {
    "typical": 'traits.plan == "pro" and attributes.orders_30d >= 3 and "vip" in segments',
    "recency": "now - last_seen.app < days(7)",
    "functions": 'traits.plan in ["pro", "enterprise"] and (feedback.nps <= 6 or lower(traits.country) == "se")',
}


def time_one(condition: Condition, loops: int) -> float:
    context = CONTEXT
    started = time.perf_counter_ns()
    for _ in range(loops):
        condition(context)
    return (time.perf_counter_ns() - started) / loops


def time_compile(source: str, repeats: int = 200) -> float:
    started = time.perf_counter_ns()
    for _ in range(repeats):
        compile_condition(source, roots=SEGMENT_ROOTS)
    return (time.perf_counter_ns() - started) / repeats / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=9, help="runs per condition (default 9)")
    parser.add_argument("--loops", type=int, default=200_000, help="evaluations per run (default 200,000)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    options = parser.parse_args()

    results: list[dict[str, Any]] = []
    for name, source in CONDITIONS.items():
        condition = compile_condition(source, roots=SEGMENT_ROOTS)
        if condition(CONTEXT) is not True or condition({}) is not False:
            sys.exit(f"error: {name} gave a wrong answer")
        time_one(condition, options.loops // 10)  # warm up
        runs = [time_one(condition, options.loops) for _ in range(options.runs)]
        results.append(
            {
                "name": name,
                "source": source,
                "median_ns": round(statistics.median(runs)),
                "min_ns": round(min(runs)),
                "compile_us": round(time_compile(source)),
            }
        )

    machine = f"nproc={os.cpu_count()}, python={platform.python_version()}, {platform.system()}"
    if options.json:
        print(json.dumps({"machine": machine, "runs": options.runs, "loops": options.loops, "results": results}))
        return
    print(f"{'condition':<10} {'median ns':>10} {'min ns':>8} {'compile µs':>11}  source")
    for result in results:
        print(
            f"{result['name']:<10} {result['median_ns']:>10} {result['min_ns']:>8} {result['compile_us']:>11}  "
            f"{result['source']}"
        )
    worst = max(result["median_ns"] for result in results)
    print(f"RESULT worst median {worst} ns per evaluation (target ≤ 2000 ns); {machine}")


if __name__ == "__main__":
    main()
