"""``polku dispatch``: the dispatcher, which delivers the messages journeys decided
to send (docs/channels.md) — the embedded one on a data directory, or one of the
scale-out deployment's on PostgreSQL and NATS (docs/scale-out.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, get_args

import typer

from polku.adapters.sqlite.deliveries import MAX_LIMIT, STATUSES, deliveries
from polku.cli.db import Schema, Store
from polku.cli.manage import DataDir, Format, Workspace
from polku.cli.profiles import require_store, run_until_stopped
from polku.cli.scale import Bus, Partitions, Stream, SubjectPrefix
from polku.cli.store import emit, fail
from polku.core.errors import ConfigError, InvalidInput, PolkuError
from polku.engine.setup import DEFAULT_WORKSPACE

ScaleOutStore = Annotated[str | None, get_args(Store)[1]]
"""``--store`` as ``polku worker`` takes it, but optional: without it, the embedded dispatcher."""
ScaleOutBus = Annotated[str | None, get_args(Bus)[1]]


def dispatch(
    data_dir: DataDir = Path("polku-data"),
    wait_for_lock: Annotated[
        bool, typer.Option("--wait-for-lock", help="Wait for a previous dispatcher to exit instead of failing.")
    ] = False,
    store: ScaleOutStore = None,
    bus: ScaleOutBus = None,
    schema: Schema = "polku",
    stream: Stream = "POLKU_EVENTS",
    subject_prefix: SubjectPrefix = "polku.ev",
    partitions: Partitions = 64,
    claim_lease: Annotated[
        float,
        typer.Option(
            min=1.0,
            help="With --store: seconds a claimed delivery stays this dispatcher's without a renewal "
            "(renewed every third of it); a dead dispatcher's deliveries are taken over after it.",
        ),
    ] = 30.0,
) -> None:
    """Deliver outbound messages (SMTP, webhooks) until stopped, with retries and a
    dead letter. `polku serve` runs it for you; run it yourself with `serve --no-dispatcher`.
    With `--store` and `--bus`, a dispatcher of the scale-out deployment: run as many
    as you like."""
    from polku.cli.main import tune_gc
    from polku.logs import configure

    if store is not None:
        dispatch_scale_out(store, bus, schema, stream, subject_prefix, partitions, claim_lease)
        return
    from polku.engine.dispatcher import run_dispatcher

    configure("info")
    require_store(data_dir)
    tune_gc()
    run_until_stopped(run_dispatcher, data_dir, wait_for_lock=wait_for_lock)


def dispatch_scale_out(
    store: str, bus: str | None, schema: str, stream: str, subject_prefix: str, partitions: int, claim_s: float
) -> None:
    from polku.cli.scale import deployment_of, run_until_signalled
    from polku.engine.scale_dispatcher import run_scale_dispatcher

    try:
        if bus is None:
            raise ConfigError("--store needs --bus: the NATS server the result events go to", field="bus")
        deployment = deployment_of(store, bus, schema, stream, subject_prefix, partitions)
    except PolkuError as error:
        fail(error)
        return
    run_until_signalled(lambda stop: run_scale_dispatcher(deployment, stop=stop, claim_s=claim_s))


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
