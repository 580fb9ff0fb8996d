"""``polku analytics parquet``: the analytics consumer of the scale-out deployment —
the stream, written as Parquet files partitioned by day (docs/parquet.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from polku.cli.db import Schema, Store
from polku.cli.scale import Bus, Partitions, Stream, SubjectPrefix, deployment_of, run_until_signalled
from polku.cli.store import fail
from polku.core.errors import PolkuError


def parquet(
    store: Store,
    bus: Bus,
    out: Annotated[
        Path,
        typer.Option(envvar="POLKU_PARQUET_OUT", help="Folder of the files (day=YYYY-MM-DD/…; env POLKU_PARQUET_OUT)."),
    ],
    schema: Schema = "polku",
    stream: Stream = "POLKU_EVENTS",
    subject_prefix: SubjectPrefix = "polku.ev",
    partitions: Partitions = 64,
    durable: Annotated[
        str | None,
        typer.Option(
            help="Name of the durable JetStream consumer (default: polku-parquet-<the folder's id>, "
            "made on its first use, so two folders never share one); it must start with polku-parquet."
        ),
    ] = None,
    batch_events: Annotated[
        int, typer.Option(help="Write a batch once it holds this many events (1–1,000,000).")
    ] = 50_000,
    batch_seconds: Annotated[
        float, typer.Option(help="… or once its first event waited this long (0.05–3,600 s).")
    ] = 5.0,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Write the stream's events as Parquet files (one folder per day) until SIGTERM
    or SIGINT, each event exactly once however the process stops. Query them with
    DuckDB: read_parquet('OUT/day=*/*.parquet', hive_partitioning = true)."""
    from polku.adapters.nats.stream import check_names
    from polku.adapters.postgres.schema import check_schema
    from polku.engine.parquet_feed import ParquetFeed, check_options

    try:
        check_options(durable=durable, max_events=batch_events, max_seconds=batch_seconds, out=out)
        check_schema(schema)
        check_names(stream, subject_prefix)
        deployment = deployment_of(store, bus, schema, stream, subject_prefix, partitions)
    except PolkuError as error:
        fail(error)
        return
    feed = ParquetFeed(deployment, out, durable=durable, max_events=batch_events, max_seconds=batch_seconds)
    run_until_signalled(feed.run, log_level)
