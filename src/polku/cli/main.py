"""``polku`` and ``polku serve``; the other command groups live beside this module."""

from __future__ import annotations

import asyncio
import gc
import sys
from pathlib import Path
from typing import Annotated

import typer

from polku import __version__
from polku.cli import (
    actions,
    analyze,
    data,
    db,
    demo,
    dispatch,
    journeys,
    manage,
    overview,
    privacy,
    profiles,
    scale,
    surveys,
)
from polku.cli.store import DATA_DIR_HELP, console, fail
from polku.config import Settings
from polku.core.errors import PolkuError
from polku.engine.setup import NewKey

app = typer.Typer(
    name="polku",
    help="polku: real-time customer journey orchestration.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command("import")(data.import_files)
app.add_typer(data.export_app, name="export")
app.add_typer(manage.quarantine_app, name="quarantine")
app.add_typer(manage.keys_app, name="keys")
app.add_typer(manage.sources_app, name="sources")
app.add_typer(manage.workspace_app, name="workspace")
app.command("process")(profiles.process)
app.command("dispatch")(dispatch.dispatch)
app.command("deliveries")(dispatch.list_deliveries)
app.add_typer(profiles.identity_app, name="identity")
app.add_typer(profiles.profiles_app, name="profiles")
app.add_typer(profiles.accounts_app, name="accounts")
app.add_typer(journeys.journeys_app, name="journeys")
app.add_typer(surveys.surveys_app, name="surveys")
app.add_typer(surveys.feedback_app, name="feedback")
app.add_typer(analyze.analytics_app, name="analytics")
app.add_typer(actions.actions_app, name="actions")
app.add_typer(db.db_app, name="db")
app.add_typer(privacy.privacy_app, name="privacy")
app.command("worker")(scale.worker)
app.command("demo")(demo.demo)
app.command("overview")(overview.overview)
app.command("analyze", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(analyze.analyze)


def _version(value: bool) -> None:
    if value:
        print(f"polku {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """polku: real-time customer journey orchestration."""


def print_keys(keys: list[NewKey]) -> None:
    if not keys:
        return
    lines = ["", "polku created these keys; they are stored hashed and shown only now:"]
    for key in keys:
        where = f"workspace {key.workspace}" + (f", source {key.source}" if key.source else "")
        lines.append(f"  {key.kind} key ({where}): {key.key}")
    lines.append("")
    print("\n".join(lines), flush=True)


def tune_gc() -> None:
    """Garbage collection for a server that parses many small JSON documents: what
    exists at start-up is frozen (never traversed again) and young objects are
    collected every 50,000 allocations instead of every 700. Each request's parsed
    events (dicts of dicts) live until their commit, and the default thresholds
    had the collector traverse them several times over."""
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind (env POLKU_HOST; default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="TCP port (env POLKU_PORT; default 8000).")] = None,
    data_dir: Annotated[Path | None, typer.Option(help=DATA_DIR_HELP + " Default ./polku-data.")] = None,
    write_key: Annotated[
        str | None, typer.Option(help="Write key of the default source, created if missing (env POLKU_WRITE_KEY).")
    ] = None,
    admin_token: Annotated[
        str | None,
        typer.Option(help="Admin token of the default workspace, created if missing (env POLKU_ADMIN_TOKEN)."),
    ] = None,
    synchronous: Annotated[
        str | None, typer.Option(help="FULL (fsync each commit; default) or NORMAL (env POLKU_SYNCHRONOUS).")
    ] = None,
    max_pending_events: Annotated[
        int | None,
        typer.Option(help="Events waiting for commit before 503 + Retry-After (env POLKU_MAX_PENDING_EVENTS)."),
    ] = None,
    public_url: Annotated[
        str | None,
        typer.Option(help="Address people reach the server at, for survey links (env POLKU_PUBLIC_URL)."),
    ] = None,
    log_level: Annotated[str | None, typer.Option(help="debug, info, warning, error (env POLKU_LOG_LEVEL).")] = None,
    access_log: Annotated[bool | None, typer.Option("--access-log/--no-access-log", help="Log every request.")] = None,
    processor: Annotated[
        bool | None,
        typer.Option("--processor/--no-processor", help="Run the processor beside the server (env POLKU_PROCESSOR)."),
    ] = None,
    dispatcher: Annotated[
        bool | None,
        typer.Option(
            "--dispatcher/--no-dispatcher", help="Run the dispatcher beside the server (env POLKU_DISPATCHER)."
        ),
    ] = None,
    analytics: Annotated[
        bool | None,
        typer.Option(
            "--analytics/--no-analytics", help="Run the analytics feed beside the server (env POLKU_ANALYTICS)."
        ),
    ] = None,
    store: Annotated[
        str | None,
        typer.Option(
            help="PostgreSQL URL: serve as the API of the scale-out deployment, with --bus (env POLKU_STORE)."
        ),
    ] = None,
    bus: Annotated[str | None, typer.Option(help="NATS URL of the scale-out deployment (env POLKU_BUS).")] = None,
    schema: Annotated[str | None, typer.Option(help="PostgreSQL schema (scale-out; env POLKU_SCHEMA).")] = None,
    stream: Annotated[str | None, typer.Option(help="JetStream stream (scale-out; env POLKU_STREAM).")] = None,
    subject_prefix: Annotated[
        str | None, typer.Option(help="Subjects of the partitions (scale-out; env POLKU_SUBJECT_PREFIX).")
    ] = None,
    partitions: Annotated[
        int | None, typer.Option(help="Partitions of the stream (scale-out; env POLKU_PARTITIONS).")
    ] = None,
    admin_rate_limit: Annotated[
        float | None,
        typer.Option(help="Requests per second per admin token, bursts of 10x; 0: none (env POLKU_ADMIN_RATE_LIMIT)."),
    ] = None,
    write_rate_limit: Annotated[
        float | None,
        typer.Option(help="Requests per second per write key, bursts of 10x; 0: none (env POLKU_WRITE_RATE_LIMIT)."),
    ] = None,
    duplicate_window_s: Annotated[
        int | None,
        typer.Option(help="Seconds the stream drops a resent messageId in (scale-out; env POLKU_DUPLICATE_WINDOW_S)."),
    ] = None,
) -> None:
    """Run the HTTP server: on the embedded store, or, with --store and --bus, as an
    API process of the scale-out deployment (docs/scale-out.md)."""
    import uvicorn

    from polku.logs import configure
    from polku.web.app import create_app

    try:
        settings = Settings.from_sources(
            {
                "host": host,
                "port": port,
                "data_dir": data_dir,
                "write_key": write_key,
                "admin_token": admin_token,
                "synchronous": synchronous,
                "max_pending_events": max_pending_events,
                "public_url": public_url,
                "log_level": log_level,
                "access_log": access_log,
                "processor": processor,
                "dispatcher": dispatcher,
                "analytics": analytics,
                "store": store,
                "bus": bus,
                "schema": schema,
                "stream": stream,
                "subject_prefix": subject_prefix,
                "partitions": partitions,
                "duplicate_window_s": duplicate_window_s,
                "admin_rate_limit": admin_rate_limit,
                "write_rate_limit": write_rate_limit,
            }
        )
    except PolkuError as error:
        fail(error)
        return
    configure(settings.log_level)
    if settings.scale_out:
        try:  # a store or bus that cannot be reached is a clear error, not a startup traceback
            asyncio.run(reach_scale_out(settings))
        except PolkuError as error:
            fail(error)
            return
    application = create_app(settings, on_keys=print_keys)
    from polku.adapters.postgres.schema import redact

    where = f"scale-out API on {redact(settings.store or '')}" if settings.scale_out else f"data in {settings.data_dir}"
    console.print(f"polku {__version__} serving on http://{settings.host}:{settings.port} ({where})")
    tune_gc()
    uvicorn.run(
        application,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        log_config=None,
        access_log=settings.access_log,
        timeout_graceful_shutdown=5,
    )


async def reach_scale_out(settings: Settings) -> None:
    """Apply the deployment's pending migrations and reach its NATS server (each a
    ``ConfigError`` naming the address, its password hidden, when it cannot be)."""
    from polku.adapters.nats.stream import connect
    from polku.engine.scale_worker import migrate_all

    deployment = settings.deployment()
    await migrate_all(deployment)
    client = await connect(deployment.bus_url, name="polku-serve-check", timeout_s=10)
    await client.close()


def main() -> None:
    try:
        app()
    except PolkuError as error:
        console.print(f"[red]error[/red] {error.code}: {error.message}")
        sys.exit(2 if error.status < 500 else 1)
