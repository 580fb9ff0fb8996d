"""Opening the embedded store from the CLI, and printing results."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgspec
import typer
from rich.console import Console
from rich.table import Table

from polku.adapters.sqlite import SqliteCatalog, SqliteEventLog
from polku.adapters.sqlite.schema import DATABASE_FILE
from polku.core.errors import NotFound, PolkuError
from polku.engine.ingest import Ingestor
from polku.engine.setup import bootstrap

console = Console(stderr=True, soft_wrap=True, emoji=False)
"""Messages on stderr: markup for their own colours, but never emoji (a ``phone:``
channel in a message would turn into a telephone)."""
DATA_DIR_HELP = "Directory of the embedded store (env POLKU_DATA_DIR)."


@asynccontextmanager
async def open_store(
    data_dir: Path, *, create: bool = False
) -> AsyncIterator[tuple[SqliteEventLog, SqliteCatalog, Ingestor]]:
    if not create and not (data_dir / DATABASE_FILE).exists():
        raise NotFound(
            f"no polku store in {data_dir}; start `polku serve --data-dir {data_dir}` once, or pass --data-dir"
        )
    log = SqliteEventLog(data_dir)
    catalog = SqliteCatalog(data_dir)
    await catalog.start()
    await log.start()
    if create:
        # A store made by `polku import` gets the same default workspace as `serve`.
        created = await bootstrap(catalog, write_key=None, admin_token=None)
        for key in created:
            console.print(f"created {key.kind} key (shown once): {key.key}")
    try:
        yield log, catalog, Ingestor(log, catalog)
    finally:
        await log.close()
        await catalog.close()


def fail(error: PolkuError) -> None:
    console.print(f"[red]error[/red] {error.code}: {error.message}")
    raise typer.Exit(code=2 if error.status < 500 else 1)


def emit(data: Any, output_format: str, *, columns: list[str] | None = None, title: str | None = None) -> None:
    """``--format json`` prints JSON on stdout; ``table`` prints a Rich table."""
    builtins = msgspec.to_builtins(data)
    if output_format == "json" or columns is None:
        sys.stdout.write(msgspec.json.format(msgspec.json.encode(builtins)).decode() + "\n")
        return
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    rows = builtins if isinstance(builtins, list) else [builtins]
    for row in rows:
        table.add_row(*(str(row.get(column, "")) if row.get(column) is not None else "" for column in columns))
    # Cells and titles are data: `phone:Call Started` is no emoji code, `[vip]` no markup.
    Console(emoji=False, markup=False).print(table)
