"""``polku dispatch``: the dispatcher, which delivers the messages journeys decided
to send (docs/channels.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from polku.adapters.sqlite.deliveries import MAX_LIMIT, STATUSES, deliveries
from polku.cli.manage import DataDir, Format, Workspace
from polku.cli.profiles import require_store, run_until_stopped
from polku.cli.store import emit
from polku.core.errors import InvalidInput
from polku.engine.setup import DEFAULT_WORKSPACE


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


def list_deliveries(
    data_dir: DataDir = Path("polku-data"),
    workspace: Workspace = DEFAULT_WORKSPACE,
    status: Annotated[str | None, typer.Option(help="Only pending, sent or dead (given up) deliveries.")] = None,
    customer: Annotated[str | None, typer.Option(help="Only this customer id.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=MAX_LIMIT, help="At most this many, newest first.")] = 100,
    output_format: Format = "table",
) -> None:
    """The dispatcher's ledger, newest first (as GET /v1/deliveries)."""
    require_store(data_dir)
    if status is not None and status not in STATUSES:
        raise InvalidInput(f"--status must be one of {', '.join(STATUSES)}", field="status")
    rows = deliveries(data_dir, workspace, customer, status, limit)
    emit(
        {"deliveries": rows} if output_format == "json" else rows,
        output_format,
        columns=["key", "customer_id", "channel", "journey", "status", "attempts", "last_error"],
        title="deliveries",
    )
