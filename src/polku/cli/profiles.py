"""``polku process``, ``polku identity``, ``polku profiles`` and ``polku accounts``:
the processor, and the CLI twins of the profile API, on the embedded store."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import msgspec
import typer
from rich.progress import Progress

from polku.adapters.sqlite.log_reader import SqliteLogReader
from polku.adapters.sqlite.schema import DATABASE_FILE
from polku.adapters.sqlite.state_store import open_state_reader
from polku.cli.manage import DataDir, Format, Workspace
from polku.cli.store import console, emit
from polku.core.errors import Conflict, NotFound
from polku.engine.profile_views import MAX_RECENT_CUSTOMERS, RECENT_CUSTOMERS, ProfileViews, refusal_json
from polku.engine.runtime import WorkspaceRuntime
from polku.engine.setup import DEFAULT_WORKSPACE
from polku.engine.worker import rebuild_state, run_processor, wall_clock_ms

T = TypeVar("T")
identity_app = typer.Typer(help="Identity resolution: rebuild from the log, refusals, merges.", no_args_is_help=True)
profiles_app = typer.Typer(
    help="Customer profiles, timelines, the agent view and the contact policy.", no_args_is_help=True
)
accounts_app = typer.Typer(help="B2B accounts and their people.", no_args_is_help=True)


def require_store(data_dir: Path) -> None:
    if not (data_dir / DATABASE_FILE).exists():
        raise NotFound(
            f"no polku store in {data_dir}; start `polku serve --data-dir {data_dir}` once, or pass --data-dir"
        )


def _with_views(data_dir: Path, workspace: str, function: Callable[[ProfileViews, WorkspaceRuntime], T]) -> T:
    require_store(data_dir)
    log = SqliteLogReader(data_dir)
    state = open_state_reader(data_dir)
    try:
        configs = log.configs()
        if workspace not in configs:
            raise NotFound(f"workspace {workspace!r} does not exist")
        from polku.adapters.sqlite.log_reader import decode_config

        runtime = WorkspaceRuntime.compile(decode_config(configs[workspace]))
        return function(ProfileViews(state, log), runtime)
    finally:
        state.connection.close()
        log.close()


def process(
    data_dir: DataDir = Path("polku-data"),
    wait_for_lock: Annotated[
        bool, typer.Option("--wait-for-lock", help="Wait for a previous processor to exit instead of failing.")
    ] = False,
) -> None:
    """Run the processor (identity, profiles, segments) until stopped. `polku serve`
    runs it for you; run it yourself with `serve --no-processor`."""
    from polku.cli.main import tune_gc
    from polku.logs import configure

    configure("info")
    require_store(data_dir)
    tune_gc()

    run_until_stopped(run_processor, data_dir, wait_for_lock=wait_for_lock)


def run_until_stopped(service: Callable[..., Awaitable[None]], data_dir: Path, *, wait_for_lock: bool) -> None:
    """Run ``service(data_dir, stop=…)`` until SIGTERM or SIGINT; with
    ``wait_for_lock``, wait for a previous instance to let go of its lock."""

    async def go() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        deadline = time.monotonic() + (3600 * 24 * 365 if wait_for_lock else 0)
        while True:
            try:
                await service(data_dir, stop=stop)
                return
            except Conflict:
                if time.monotonic() > deadline or stop.is_set():
                    raise
                await asyncio.sleep(0.2)

    asyncio.run(go())


@identity_app.command("rebuild")
def identity_rebuild(data_dir: DataDir = Path("polku-data")) -> None:
    """Replay the whole log under the current identity rules and configuration:
    identities, profiles, accounts, segments and timelines are derived again. Stop
    the server first (the rebuild refuses to run beside a live processor)."""
    require_store(data_dir)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("replaying the log", total=None)

        def on_progress(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        checkpoint = rebuild_state(data_dir, on_progress=on_progress)
    console.print(f"identity rebuilt from the log up to position {checkpoint}")


@identity_app.command("refusals")
def identity_refusals(
    data_dir: DataDir = Path("polku-data"), workspace: Workspace = DEFAULT_WORKSPACE, output_format: Format = "table"
) -> None:
    """Links the merge rules refused (e.g. two user ids sharing an e-mail address)."""

    def read(views: ProfileViews, runtime: WorkspaceRuntime) -> list[dict[str, Any]]:
        return [refusal_json(i, r) for i, r in views.state.refusals(workspace, limit=1000)]

    emit(
        _with_views(data_dir, workspace, read),
        output_format,
        columns=["id", "timestamp", "kept_with", "refused_identifier", "reason"],
        title="refused identity links",
    )


@identity_app.command("changes")
def identity_changes(
    data_dir: DataDir = Path("polku-data"), workspace: Workspace = DEFAULT_WORKSPACE, output_format: Format = "table"
) -> None:
    """The audit of merges and splits."""

    def read(views: ProfileViews, runtime: WorkspaceRuntime) -> list[dict[str, Any]]:
        return [
            {"id": i, "seq": r.seq, "kind": r.kind, "survivor": r.survivor, "absorbed": ", ".join(r.absorbed)}
            for i, r in views.state.identity_changes(workspace, limit=1000)
        ]

    emit(
        _with_views(data_dir, workspace, read),
        output_format,
        columns=["id", "seq", "kind", "survivor", "absorbed"],
        title="identity changes",
    )


@profiles_app.command("recent")
def profiles_recent(
    data_dir: DataDir = Path("polku-data"),
    workspace: Workspace = DEFAULT_WORKSPACE,
    limit: Annotated[
        int, typer.Option(min=1, max=MAX_RECENT_CUSTOMERS, help="Customers to show, the most recently active first.")
    ] = RECENT_CUSTOMERS,
    output_format: Format = "table",
) -> None:
    """The customers behind the newest processed events: a short list to start from."""
    customers = _with_views(data_dir, workspace, lambda views, runtime: views.recent(workspace, limit))
    if output_format == "json":
        emit({"customers": customers}, "json")
        return
    emit(
        customers,
        "table",
        columns=["at", "customer_id", "name", "contact", "channel", "event"],
        title="recently active customers",
    )


@profiles_app.command("show")
def profiles_show(
    identifier: Annotated[
        str, typer.Argument(help="A customer id, `type:value` (email:ann@example.com) or a bare identifier value.")
    ],
    data_dir: DataDir = Path("polku-data"),
    workspace: Workspace = DEFAULT_WORKSPACE,
    output_format: Format = "table",
) -> None:
    """The customer's profile: identifiers, traits, computed attributes, segments, accounts."""
    now = wall_clock_ms()

    def read(views: ProfileViews, runtime: WorkspaceRuntime) -> dict[str, Any]:
        return views.profile_json(workspace, runtime, views.find_any(workspace, runtime, identifier), now)

    profile = _with_views(data_dir, workspace, read)
    if output_format == "json":
        emit(profile, "json")
        return
    rows = [{"field": key, "value": value} for key, value in profile.items() if value not in ({}, [], None)]
    emit(rows, "table", columns=["field", "value"], title=f"customer {profile['customer_id']}")


@profiles_app.command("timeline")
def profiles_timeline(
    identifier: Annotated[str, typer.Argument(help="A customer id, `type:value` or a bare identifier value.")],
    data_dir: DataDir = Path("polku-data"),
    workspace: Workspace = DEFAULT_WORKSPACE,
    limit: Annotated[int, typer.Option(min=1, max=200, help="Events to show, newest first.")] = 50,
    output_format: Format = "table",
) -> None:
    """Every event of the customer across channels and merged identifiers, newest first."""

    def read(views: ProfileViews, runtime: WorkspaceRuntime) -> dict[str, Any]:
        customer_id = views.find_any(workspace, runtime, identifier)
        return views.timeline(workspace, customer_id, before=None, limit=limit)

    page = _with_views(data_dir, workspace, read)
    if output_format == "json":
        emit(page, "json")
        return
    emit(page["events"], "table", columns=["timestamp", "channel", "type", "name", "identifier"], title="timeline")


@profiles_app.command("context")
def profiles_context(
    identifier: Annotated[str, typer.Argument(help="A customer id, `type:value` or a bare identifier value.")],
    data_dir: DataDir = Path("polku-data"),
    workspace: Workspace = DEFAULT_WORKSPACE,
) -> None:
    """The agent view as JSON: who this is, what they just did, the likely reason for contact."""
    now = wall_clock_ms()

    def read(views: ProfileViews, runtime: WorkspaceRuntime) -> dict[str, Any]:
        return views.context(workspace, runtime, views.find_any(workspace, runtime, identifier), now)

    emit(_with_views(data_dir, workspace, read), "json")


@profiles_app.command("policy")
def profiles_policy(
    identifier: Annotated[str, typer.Argument(help="A customer id, `type:value` or a bare identifier value.")],
    data_dir: DataDir = Path("polku-data"),
    workspace: Workspace = DEFAULT_WORKSPACE,
    output_format: Format = "table",
) -> None:
    """Per purpose: the customer's consent and what the contact policy would decide
    for a message on each channel now (send, hold until, or skip and why)."""
    now = wall_clock_ms()

    def read(views: ProfileViews, runtime: WorkspaceRuntime) -> dict[str, Any]:
        return views.policy(workspace, runtime, views.find_any(workspace, runtime, identifier), now)

    policy = _with_views(data_dir, workspace, read)
    if output_format == "json":
        emit(policy, "json")
        return
    rows = [
        {
            "purpose": row["purpose"],
            "consent": _consent_text(row["given"], row["default"]),
            "verdict": verdict["kind"]
            + (f" until {verdict['until']}" if verdict["until"] else "")
            + (f" ({verdict['reason']})" if verdict["reason"] else ""),
            "channels": "every channel" if verdict["every"] else ", ".join(verdict["channels"]),
        }
        for row in policy["purposes"]
        for verdict in row["verdicts"]
    ]
    emit(
        rows,
        "table",
        columns=["purpose", "consent", "verdict", "channels"],
        title=f"consent (trait {policy['trait']}) and the contact policy now for {policy['customer_id']}",
    )


def _consent_text(given: Any, default: bool) -> str:
    if given is None:
        return f"{'yes' if default else 'no'} (default)"
    if isinstance(given, bool):
        return "yes" if given else "no"
    return f"no ({msgspec.json.encode(given).decode()} is not true)"


@accounts_app.command("show")
def accounts_show(
    account_id: Annotated[str, typer.Argument(help="The account's groupId.")],
    data_dir: DataDir = Path("polku-data"),
    workspace: Workspace = DEFAULT_WORKSPACE,
    output_format: Format = "table",
) -> None:
    """An account's traits and its people."""
    account = _with_views(data_dir, workspace, lambda views, runtime: views.account(workspace, account_id))
    if output_format == "json":
        emit(account, "json")
        return
    console.print(f"account {account['account_id']}: {account['traits']}")
    emit(account["people"], "table", columns=["customer_id", "name", "email", "last_seen"], title="people")
