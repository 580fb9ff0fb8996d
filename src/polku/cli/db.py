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
    str,
    typer.Option(
        # POLKU_SCHEMA as `polku serve` reads it; POLKU_STORE_SCHEMA is the older name.
        envvar=["POLKU_SCHEMA", "POLKU_STORE_SCHEMA"],
        help="Schema polku's tables live in (env POLKU_SCHEMA).",
    ),
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
    """Apply the pending migrations of every track (catalog, event log, state,
    coordination), each in its own transaction. Safe to run from many processes at
    once: each migration is applied exactly once."""
    from polku.adapters.postgres.tracks import migrate_all

    try:
        applied = asyncio.run(migrate_all(store, schema=schema, allow_destructive=allow_destructive))
    except PolkuError as error:
        fail(error)
        return
    for track, versions in applied:
        for version in versions:
            name = track.migrations[version - 1].name
            console.print(f"applied migration {version} of the {track.name}: {name}", markup=False)
    summary = ", ".join(f"{track.name} {len(track.migrations)}" for track, _ in applied)
    nothing = "" if any(versions for _, versions in applied) else " (nothing to apply)"
    console.print(f"schema {schema} is up to date: {summary}{nothing}", markup=False)


@db_app.command("status")
def db_status(
    store: Store,
    schema: Schema = "polku",
    output_format: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
) -> None:
    """The migrations of every track, applied (with when) and pending. Exits 1 when
    any is pending or the database is newer than this polku (for scripts)."""
    from polku.adapters.postgres.tracks import status_all

    try:
        if output_format not in ("table", "json"):
            raise ConfigError("--format must be table or json", field="format")
        found = asyncio.run(status_all(store, schema=schema))
    except PolkuError as error:
        fail(error)
        return
    rows: list[dict[str, Any]] = []
    for track, status in found:
        rows += [
            {
                "track": track.name,
                "version": a.version,
                "name": a.name,
                "state": "applied",
                "applied_at": a.applied_at.isoformat(),
            }
            for a in status.applied
        ] + [
            {"track": track.name, "version": number, "name": m.name, "state": "pending", "destructive": m.destructive}
            for number, m in status.pending
        ]
    pending = sum(len(status.pending) for _, status in found)
    newer = [track.name for track, status in found if status.newer_than_code]
    if output_format == "json":
        tracks = [{"track": track.name, "version": status.version, "latest": status.latest} for track, status in found]
        emit({"schema": schema, "tracks": tracks, "pending": pending, "migrations": rows}, "json")
    else:
        cells = [{**row, "destructive": "yes" if row.get("destructive") else None} for row in rows]
        emit(
            cells,
            "table",
            columns=["track", "version", "name", "state", "applied_at", "destructive"],
            title=f"schema {schema}",
        )
        if newer:
            console.print(
                f"schema {schema} is newer than this polku knows ({', '.join(newer)}): upgrade polku", markup=False
            )
        elif pending:
            console.print(f"{pending} pending: run `polku db migrate`", markup=False)
    if pending or newer:
        raise typer.Exit(1)
