"""``polku db``: the PostgreSQL store's schema — apply migrations, show where it
stands (docs/postgresql.md)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import typer

from polku.cli.store import console, emit, fail
from polku.core.errors import ConfigError, PolkuError

db_app = typer.Typer(help="The PostgreSQL store's schema: migrations and their status.", no_args_is_help=True)

Store = Annotated[
    str,
    typer.Option(
        envvar="POLKU_STORE",
        help="PostgreSQL URL: postgresql://[user[:password]@]host[:port]/database (env POLKU_STORE).",
    ),
]
Schema = Annotated[
    str, typer.Option(envvar="POLKU_STORE_SCHEMA", help="Schema polku's tables live in (env POLKU_STORE_SCHEMA).")
]


@db_app.command("migrate")
def db_migrate(
    store: Store,
    schema: Schema = "polku",
    allow_destructive: Annotated[
        bool,
        typer.Option(
            "--allow-destructive", help="Also apply migrations that drop or delete data (back up the database first)."
        ),
    ] = False,
) -> None:
    """Apply the pending migrations, each in its own transaction. Safe to run from many
    processes at once: each migration is applied exactly once."""
    from polku.adapters.postgres import schema as postgres

    try:
        applied = asyncio.run(postgres.migrate(store, schema=schema, allow_destructive=allow_destructive))
    except PolkuError as error:
        fail(error)
        return
    for version in applied:
        console.print(f"applied migration {version}: {postgres.MIGRATIONS[version - 1].name}", markup=False)
    latest = len(postgres.MIGRATIONS)
    console.print(f"schema {schema} is at version {latest}" + ("" if applied else " (nothing to apply)"), markup=False)


@db_app.command("status")
def db_status(
    store: Store,
    schema: Schema = "polku",
    output_format: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
) -> None:
    """The migrations applied (with when) and those pending."""
    from polku.adapters.postgres import schema as postgres

    try:
        if output_format not in ("table", "json"):
            raise ConfigError("--format must be table or json", field="format")
        found = asyncio.run(postgres.status(store, schema=schema))
    except PolkuError as error:
        fail(error)
        return
    rows: list[dict[str, Any]] = [
        {"version": a.version, "name": a.name, "state": "applied", "applied_at": a.applied_at.isoformat()}
        for a in found.applied
    ] + [
        {"version": number, "name": m.name, "state": "pending", "destructive": m.destructive}
        for number, m in found.pending
    ]
    if output_format == "json":
        emit({"schema": found.schema, "version": found.version, "latest": found.latest, "migrations": rows}, "json")
    else:
        cells = [{**row, "destructive": "yes" if row.get("destructive") else None} for row in rows]
        emit(
            cells, "table", columns=["version", "name", "state", "applied_at", "destructive"], title=f"schema {schema}"
        )
    if found.newer_than_code:
        console.print(
            f"schema {schema} is at version {found.version}, newer than this polku knows ({found.latest}): "
            "upgrade polku",
            markup=False,
        )
    elif found.pending:
        console.print(f"{len(found.pending)} pending: run `polku db migrate`", markup=False)
