"""``polku dispatch``: the dispatcher, which delivers the messages journeys decided
to send (docs/channels.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from polku.cli.manage import DataDir
from polku.cli.profiles import require_store, run_until_stopped


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
    require_store(data_dir)
    tune_gc()
    run_until_stopped(run_dispatcher, data_dir, wait_for_lock=wait_for_lock)
