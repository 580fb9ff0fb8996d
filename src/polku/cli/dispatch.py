"""``polku dispatch``: the dispatcher, which delivers the messages journeys decided
to send (docs/channels.md)."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Annotated

import typer

from polku.adapters.sqlite.schema import DATABASE_FILE
from polku.cli.manage import DataDir
from polku.core.errors import Conflict, NotFound


def dispatch(
    data_dir: DataDir = Path("polku-data"),
    wait_for_lock: Annotated[
        bool, typer.Option("--wait-for-lock", help="Wait for a previous dispatcher to exit instead of failing.")
    ] = False,
) -> None:
    """Deliver outbound messages (SMTP, webhooks) until stopped, with retries and a
    dead letter. `polku serve` runs it for you; run it yourself with `serve --no-dispatcher`."""
    from polku.cli.main import tune_gc
    from polku.engine.dispatcher import run_dispatcher
    from polku.logs import configure

    configure("info")
    if not (data_dir / DATABASE_FILE).exists():
        raise NotFound(
            f"no polku store in {data_dir}; start `polku serve --data-dir {data_dir}` once, or pass --data-dir"
        )
    tune_gc()

    async def go() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        deadline = time.monotonic() + (3600 * 24 * 365 if wait_for_lock else 0)
        while True:
            try:
                await run_dispatcher(data_dir, stop=stop)
                return
            except Conflict:
                if time.monotonic() > deadline or stop.is_set():
                    raise
                await asyncio.sleep(0.2)

    asyncio.run(go())
