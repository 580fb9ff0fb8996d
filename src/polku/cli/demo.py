"""``polku demo``: polku alive in one command (docs/demo.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def demo(
    data_dir: Annotated[Path, typer.Option(help="Where the demo keeps its store (reused on the next run).")] = Path(
        "polku-demo"
    ),
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port of the server.")] = 8000,
    customers: Annotated[int, typer.Option(min=50, max=200_000, help="People in the demo company.")] = 1500,
    days: Annotated[int, typer.Option(min=1, max=365, help="Days of history to backfill.")] = 30,
    rate: Annotated[float, typer.Option(min=0.1, max=1000, help="Live events per second.")] = 5.0,
    seed: Annotated[int, typer.Option(help="The demo world's random seed.")] = 42,
    live: Annotated[bool, typer.Option("--live/--no-live", help="Keep sending live events after the backfill.")] = True,
) -> None:
    """Start polku with a demo company: a month of history (web, app, email, phone,
    chat, stores; consumers and B2B accounts), journeys, surveys and a contact
    policy, then live events — and print where to look."""
    from polku.demo.run import run_demo

    run_demo(data_dir=data_dir, host=host, port=port, customers=customers, days=days, rate=rate, seed=seed, live=live)
