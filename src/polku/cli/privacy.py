"""``polku privacy``: what a data-protection officer does with one person
(docs/privacy.md). ``export`` writes everything held about them as JSON."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import msgspec
import typer

from polku.cli.db import Schema
from polku.cli.manage import DataDir, Format, Workspace
from polku.cli.profiles import _with_views
from polku.cli.store import console, emit, open_store
from polku.core.errors import NotFound
from polku.core.events import format_millis
from polku.engine.profile_views import ProfileViews
from polku.engine.runtime import WorkspaceRuntime
from polku.engine.setup import DEFAULT_WORKSPACE
from polku.engine.worker import wall_clock_ms

ScaleOutStore = Annotated[
    str | None,
    typer.Option(
        envvar="POLKU_STORE", help="The scale-out deployment's PostgreSQL URL instead of --data-dir (env POLKU_STORE)."
    ),
]

privacy_app = typer.Typer(
    help="Find, export and erase a person's data, and their consent (docs/privacy.md).", no_args_is_help=True
)


@privacy_app.command("export")
def privacy_export(
    identifier: Annotated[
        str, typer.Argument(help="A customer id, `type:value` (email:ann@example.com) or a bare identifier value.")
    ],
    data_dir: DataDir = Path("polku-data"),
    workspace: Workspace = DEFAULT_WORKSPACE,
    store: ScaleOutStore = None,
    schema: Schema = "polku",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the JSON here (created 0600) instead of stdout.")
    ] = None,
) -> None:
    """Everything held about one person, as JSON: profile, consent and policy, every
    event, journeys, messages, survey invitations and answers, decisions, notes."""
    from polku.engine.privacy_export import export_person

    now = wall_clock_ms()

    def read(views: ProfileViews, runtime: WorkspaceRuntime) -> dict[str, Any]:
        return export_person(views, workspace, runtime, views.find_any(workspace, runtime, identifier), now)

    document = _with_store_views(store, schema, workspace, read) if store else _with_views(data_dir, workspace, read)
    text = msgspec.json.format(msgspec.json.encode(document)) + b"\n"
    if output is None:
        sys.stdout.buffer.write(text)
        return
    # Personal data: readable by the owner only, and never a half-written file.
    temporary = output.with_name(f".{output.name}.partial")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(descriptor, 0o600)  # also when a partial file of an earlier run was there
    with os.fdopen(descriptor, "wb") as written:
        written.write(text)
    temporary.replace(output)
    console.print(f"exported {document['customer_id']} ({len(document['events'])} events) to {output}")


@privacy_app.command("consent")
def privacy_consent(
    identifier: Annotated[str, typer.Argument(help="A customer id, `type:value` or a bare identifier value.")],
    data_dir: DataDir = Path("polku-data"),
    workspace: Workspace = DEFAULT_WORKSPACE,
    store: ScaleOutStore = None,
    schema: Schema = "polku",
) -> None:
    """Per purpose the consent given (or the default), and every event that set it,
    newest first (JSON)."""
    from polku.engine.consent_views import consent_view

    def read(views: ProfileViews, runtime: WorkspaceRuntime) -> dict[str, Any]:
        return consent_view(views, workspace, runtime, views.find_any(workspace, runtime, identifier))

    document = _with_store_views(store, schema, workspace, read) if store else _with_views(data_dir, workspace, read)
    sys.stdout.buffer.write(msgspec.json.format(msgspec.json.encode(document)) + b"\n")


@privacy_app.command("erase")
def privacy_erase(
    identifier: Annotated[str, typer.Argument(help="A customer id, `type:value` or a bare identifier value.")],
    data_dir: DataDir = Path("polku-data"),
    workspace: Workspace = DEFAULT_WORKSPACE,
    suppress: Annotated[
        bool,
        typer.Option("--suppress", help="Keep their identifiers as hashes, so their events are not taken in again."),
    ] = False,
    wait: Annotated[float, typer.Option(help="Seconds to wait for every store to be clean.", min=0, max=3600)] = 60.0,
    output_format: Format = "table",
) -> None:
    """Erase a person everywhere (docs/privacy.md, "Erasing a person"): the request goes
    into the log, and the running `polku serve` removes them from the state, the log,
    the ledger and the analytics store. Prints the receipt (no personal data in it);
    exits 1 if it was not finished within --wait (it goes on: `polku privacy erasures`)."""
    from polku.engine.erasure import request_erasure

    customer_id = _with_views(
        data_dir, workspace, lambda views, runtime: views.find_any(workspace, runtime, identifier)
    )

    async def append() -> str:
        async with open_store(data_dir) as (log, _, _):
            return await request_erasure(log, workspace, customer_id, suppress=suppress, now_ms=wall_clock_ms())

    erasure = asyncio.run(append())
    deadline = time.monotonic() + wait
    while True:
        found = _with_views(
            data_dir, workspace, lambda views, _: views.state.erasure_receipts(workspace, erasure=erasure)
        )
        if (found and found[0].status == "erased") or time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    receipt: Any = msgspec.to_builtins(found[0]) if found else {"id": erasure, "status": "requested"}
    _print_receipts([receipt], output_format)
    if receipt["status"] != "erased":
        console.print(
            f"erasure {erasure} is {receipt['status']}: the running `polku serve` finishes it "
            f"(`polku privacy erasures --data-dir {data_dir}`)"
        )
        raise typer.Exit(code=1)


@privacy_app.command("erasures")
def privacy_erasures(
    data_dir: DataDir = Path("polku-data"),
    workspace: Workspace = DEFAULT_WORKSPACE,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 100,
    output_format: Format = "table",
) -> None:
    """The erasure receipts, newest first: when, each store's stage, records removed."""
    found = _with_views(data_dir, workspace, lambda views, _: views.state.erasure_receipts(workspace, limit=limit))
    _print_receipts([msgspec.to_builtins(receipt) for receipt in found], output_format)


def _print_receipts(receipts: list[dict[str, Any]], output_format: str) -> None:
    if output_format == "json":
        emit(receipts[0] if len(receipts) == 1 else receipts, "json")
        return
    rows = [
        {
            "id": receipt["id"],
            "status": receipt["status"],
            "requested": format_millis(receipt["requested_ms"]) if "requested_ms" in receipt else "",
            "removed": sum(receipt.get("removed", {}).values()),
            "suppressed": receipt.get("suppressed", 0),
        }
        for receipt in receipts
    ]
    emit(rows, "table", columns=["id", "status", "requested", "removed", "suppressed"], title="erasures")


def _with_store_views(store: str, schema: str, workspace: str, function: Any) -> Any:
    from polku.adapters.sqlite.log_reader import decode_config

    views = ProfileViews.of_store(store, schema)
    try:
        configs = views.log.configs()
        if workspace not in configs:
            raise NotFound(f"workspace {workspace!r} does not exist")
        return function(views, WorkspaceRuntime.compile(decode_config(configs[workspace])))
    finally:
        views.close()
