"""``polku worker``: a worker of the scale-out deployment — the processor over its
share of the stream's partitions, its state in PostgreSQL (docs/scale-out.md)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated

import typer

from polku.cli.db import Schema, Store
from polku.cli.store import fail
from polku.core.errors import ConfigError, PolkuError

if TYPE_CHECKING:
    from polku.engine.scale_worker import ScaleOut

Bus = Annotated[
    str,
    typer.Option(envvar="POLKU_BUS", help="NATS URL: nats://host[:port] (env POLKU_BUS)."),
]
Stream = Annotated[str, typer.Option(envvar="POLKU_STREAM", help="JetStream stream of the events (env POLKU_STREAM).")]
SubjectPrefix = Annotated[
    str, typer.Option(envvar="POLKU_SUBJECT_PREFIX", help="Subjects of the partitions (env POLKU_SUBJECT_PREFIX).")
]
Partitions = Annotated[
    int,
    typer.Option(
        envvar="POLKU_PARTITIONS", help="Partitions of the stream, fixed when it is created (env POLKU_PARTITIONS)."
    ),
]


def worker(
    store: Store,
    bus: Bus,
    schema: Schema = "polku",
    stream: Stream = "POLKU_EVENTS",
    subject_prefix: SubjectPrefix = "polku.ev",
    partitions: Partitions = 64,
    batch_size: Annotated[int, typer.Option(help="Events per processor step (1–10,000).")] = 1000,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Run a worker until SIGTERM or SIGINT. Start as many as you like: they share the
    partitions, and take over those of a worker that stops or dies."""
    from polku.engine.scale_worker import Worker

    try:
        if not 1 <= batch_size <= 10_000:
            raise ConfigError(f"batch size {batch_size} is not between 1 and 10,000", field="batch_size")
        deployment = deployment_of(store, bus, schema, stream, subject_prefix, partitions)
    except PolkuError as error:
        fail(error)
        return
    run_until_signalled(lambda stop: Worker(deployment, batch_size=batch_size).run(stop), log_level)


def deployment_of(store: str, bus: str, schema: str, stream: str, subject_prefix: str, partitions: int) -> ScaleOut:
    """The deployment the options name (``ConfigError`` if they do not add up)."""
    from polku.engine.scale_worker import ScaleOut

    return ScaleOut.checked(
        store_url=store, bus_url=bus, schema=schema, stream=stream, subject_prefix=subject_prefix, partitions=partitions
    )


def run_until_signalled(service: Callable[[asyncio.Event], Awaitable[None]], log_level: str = "info") -> None:
    """Run ``service(stop)`` until SIGTERM or SIGINT sets ``stop``; a ``PolkuError``
    it raises is printed as the CLI's errors are."""
    from polku.cli.main import tune_gc
    from polku.logs import configure

    configure(log_level)
    tune_gc()

    async def go() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await service(stop)

    try:
        asyncio.run(go())
    except PolkuError as error:
        fail(error)
