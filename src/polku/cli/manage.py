"""``polku quarantine``, ``polku keys``, ``polku sources`` and ``polku workspace``:
the CLI twins of the admin API, working on the embedded store directly."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import msgspec
import typer

from polku.cli.store import DATA_DIR_HELP, console, emit, open_store
from polku.core.errors import Conflict, InvalidInput
from polku.core.events import format_time
from polku.core.workspace import ADMIN_SCOPES, KeyKind, check_scopes, parse_config
from polku.engine.setup import DEFAULT_WORKSPACE, add_key, ensure_source, make_workspace
from polku.engine.views import credential_json, quarantine_json

quarantine_app = typer.Typer(help="List, re-submit and discard refused messages.", no_args_is_help=True)
keys_app = typer.Typer(help="Write keys and admin tokens.", no_args_is_help=True)
sources_app = typer.Typer(help="Sources (systems that send events) and their default channels.", no_args_is_help=True)
workspace_app = typer.Typer(help="Workspaces (tenants) and their configuration.", no_args_is_help=True)

DataDir = Annotated[Path, typer.Option(envvar="POLKU_DATA_DIR", help=DATA_DIR_HELP)]
Workspace = Annotated[str, typer.Option(help="Workspace.")]
Format = Annotated[str, typer.Option("--format", help="table or json.")]


def _run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


@quarantine_app.command("list")
def quarantine_list(
    data_dir: DataDir = Path("polku-data"),
    workspace: Workspace = DEFAULT_WORKSPACE,
    status: Annotated[str, typer.Option(help="open, resubmitted, discarded or all.")] = "open",
    limit: Annotated[int, typer.Option(min=1, max=100_000, help="At most this many entries.")] = 100,
    output_format: Format = "table",
) -> None:
    """Refused messages with the reason each was refused."""
    if status not in ("open", "resubmitted", "discarded", "all"):
        raise InvalidInput("--status must be open, resubmitted, discarded or all", field="status")

    async def go() -> list[dict[str, Any]]:
        async with open_store(data_dir) as (log, _catalog, _ingestor):
            entries = await log.quarantined(
                workspace,
                status=None if status == "all" else status,  # type: ignore[arg-type]
                after_id=0,
                limit=limit,
            )
            return [quarantine_json(entry) for entry in entries]

    emit(
        _run(go()),
        output_format,
        columns=["id", "received_at", "source", "code", "reason", "status"],
        title="quarantine",
    )


@quarantine_app.command("show")
def quarantine_show(
    entry_id: int, data_dir: DataDir = Path("polku-data"), workspace: Workspace = DEFAULT_WORKSPACE
) -> None:
    """One entry with the message as it was received."""

    async def go() -> dict[str, Any]:
        async with open_store(data_dir) as (log, _catalog, _ingestor):
            return quarantine_json(await log.quarantine_entry(workspace, entry_id))

    emit(_run(go()), "json")


@quarantine_app.command("resubmit")
def quarantine_resubmit(
    entry_ids: Annotated[list[int], typer.Argument(help="Entry ids.")],
    data_dir: DataDir = Path("polku-data"),
    workspace: Workspace = DEFAULT_WORKSPACE,
    corrected: Annotated[
        Path | None, typer.Option("--file", help="A corrected message (JSON) to store instead; one id only.")
    ] = None,
) -> None:
    """Validate entries again (or a corrected message) and store them."""
    if corrected is not None and len(entry_ids) != 1:
        raise InvalidInput("--file takes exactly one entry id")
    body = corrected.read_bytes() if corrected is not None else None

    async def go() -> list[str]:
        outcomes = []
        async with open_store(data_dir) as (_log, _catalog, ingestor):
            for entry_id in entry_ids:
                try:
                    result = await ingestor.resubmit(workspace, entry_id, body)
                    outcomes.append(f"{entry_id}: stored" if result.accepted else f"{entry_id}: already stored")
                except InvalidInput as error:
                    outcomes.append(f"{entry_id}: still invalid: {error.message}")
        return outcomes

    outcomes = _run(go())
    for line in outcomes:
        console.print(line)
    if any("still invalid" in line for line in outcomes):
        raise typer.Exit(code=2)


@quarantine_app.command("discard")
def quarantine_discard(
    entry_ids: Annotated[list[int], typer.Argument(help="Entry ids.")],
    data_dir: DataDir = Path("polku-data"),
    workspace: Workspace = DEFAULT_WORKSPACE,
) -> None:
    """Mark entries discarded (kept for the record, no longer open)."""

    async def go() -> None:
        async with open_store(data_dir) as (_log, _catalog, ingestor):
            for entry_id in entry_ids:
                await ingestor.discard(workspace, entry_id)

    _run(go())
    console.print(f"discarded {len(entry_ids)} entr{'y' if len(entry_ids) == 1 else 'ies'}")


@keys_app.command("list")
def keys_list(
    data_dir: DataDir = Path("polku-data"), workspace: Workspace = DEFAULT_WORKSPACE, output_format: Format = "table"
) -> None:
    """Keys by id (a prefix of the stored hash); the keys themselves are not stored."""

    async def go() -> list[dict[str, Any]]:
        async with open_store(data_dir) as (_log, catalog, _ingestor):
            return [credential_json(c) for c in await catalog.credentials(workspace)]

    emit(
        _run(go()),
        output_format,
        columns=["key_id", "kind", "source", "label", "created_at", "last_used_at", "revoked_at"],
        title="keys",
    )


@keys_app.command("create")
def keys_create(
    kind: Annotated[str, typer.Argument(help="write or admin.")],
    source: Annotated[str | None, typer.Option(help="Source of a write key.")] = "default",
    label: Annotated[str, typer.Option(help="A note on what the key is for.")] = "",
    scope: Annotated[
        list[str] | None,
        typer.Option(
            "--scope",
            help="Admin tokens: read, manage, privacy, ingest or workspaces; repeat for several "
            "(default: read, manage and privacy).",
        ),
    ] = None,
    data_dir: DataDir = Path("polku-data"),
    workspace: Workspace = DEFAULT_WORKSPACE,
) -> None:
    """Create a key and print it (once)."""
    if kind not in ("write", "admin"):
        raise InvalidInput("KIND must be write or admin", field="kind")
    key_kind: KeyKind = "write" if kind == "write" else "admin"
    scopes = check_scopes(scope, key_kind) if scope else ADMIN_SCOPES

    async def go() -> Any:
        async with open_store(data_dir) as (_log, catalog, _ingestor):
            if key_kind == "write":
                await catalog.source(workspace, source or "default")
            return await add_key(
                catalog, key_kind, workspace, source if key_kind == "write" else None, label=label, scopes=scopes
            )

    emit(_run(go()), "json")


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="Key id (at least 8 characters of it).")],
    data_dir: DataDir = Path("polku-data"),
    workspace: Workspace = DEFAULT_WORKSPACE,
) -> None:
    """Revoke a key by its id (servers notice within 5 seconds)."""
    if len(key_id) < 8:
        raise InvalidInput("give at least 8 characters of the key id", field="key_id")

    async def go() -> Any:
        async with open_store(data_dir) as (_log, catalog, _ingestor):
            return credential_json(await catalog.revoke_credential(workspace, key_id, format_time(datetime.now(UTC))))

    emit(_run(go()), "json")


@sources_app.command("add")
def sources_add(
    name: Annotated[str, typer.Argument(help="Source name: lower-case letters, digits, '-', '_'.")],
    channel: Annotated[
        str, typer.Option(help="Default channel of its events (web, app, email, phone, chat, store, crm, ...).")
    ],
    data_dir: DataDir = Path("polku-data"),
    workspace: Workspace = DEFAULT_WORKSPACE,
) -> None:
    """Add a source and print a new write key for it."""

    async def go() -> Any:
        async with open_store(data_dir) as (_log, catalog, _ingestor):
            await catalog.workspace(workspace)
            if not await ensure_source(catalog, workspace, name, channel):
                raise Conflict(
                    f"source {name!r} exists; create another key with `polku keys create write --source {name}`"
                )
            return await add_key(catalog, "write", workspace, name, label=f"source {name}")

    emit(_run(go()), "json")


@sources_app.command("list")
def sources_list(
    data_dir: DataDir = Path("polku-data"), workspace: Workspace = DEFAULT_WORKSPACE, output_format: Format = "table"
) -> None:
    """Sources and their default channels."""

    async def go() -> Any:
        async with open_store(data_dir) as (_log, catalog, _ingestor):
            return await catalog.sources(workspace)

    emit(_run(go()), output_format, columns=["name", "default_channel", "created_at"], title="sources")


@workspace_app.command("create")
def workspace_create(
    workspace_id: Annotated[str, typer.Argument(help="The new workspace's id: lower-case letters, digits, - or _.")],
    name: Annotated[str | None, typer.Option(help="A name to show (default: the id).")] = None,
    channel: Annotated[str, typer.Option(help="The default channel of its `default` source.")] = "web",
    data_dir: DataDir = Path("polku-data"),
) -> None:
    """A new workspace (a tenant of its own), with its first admin token and write key,
    printed once as JSON (docs/security.md, "Workspaces")."""

    async def go() -> Any:
        async with open_store(data_dir) as (_log, catalog, _ingestor):
            workspace, keys = await make_workspace(catalog, workspace_id, name, channel=channel)
            return {"workspace": {"id": workspace.id, "name": workspace.name}, "keys": keys}

    emit(_run(go()), "json")


@workspace_app.command("list")
def workspace_list(data_dir: DataDir = Path("polku-data"), output_format: Format = "table") -> None:
    """Every workspace: id, name, when it was made."""

    async def go() -> list[dict[str, Any]]:
        async with open_store(data_dir) as (_log, catalog, _ingestor):
            return [{"id": w.id, "name": w.name, "created_at": w.created_at} for w in await catalog.workspaces()]

    emit(_run(go()), output_format, columns=["id", "name", "created_at"], title="workspaces")


@workspace_app.command("show")
def workspace_show(data_dir: DataDir = Path("polku-data"), workspace: Workspace = DEFAULT_WORKSPACE) -> None:
    """The workspace and its configuration as JSON."""

    async def go() -> Any:
        async with open_store(data_dir) as (_log, catalog, _ingestor):
            return await catalog.workspace(workspace)

    emit(_run(go()), "json")


@workspace_app.command("configure")
def workspace_configure(
    config_file: Annotated[
        Path, typer.Argument(help="YAML or JSON workspace configuration.", exists=True, dir_okay=False)
    ],
    data_dir: DataDir = Path("polku-data"),
    workspace: Workspace = DEFAULT_WORKSPACE,
    check: Annotated[bool, typer.Option("--check", help="Only validate the file.")] = False,
) -> None:
    """Validate a configuration file and make it the workspace's configuration."""
    config = parse_config(config_file.read_bytes(), filename=str(config_file))
    if check:
        console.print(f"{config_file}: valid")
        return

    async def go() -> None:
        async with open_store(data_dir) as (_log, catalog, _ingestor):
            await catalog.set_config(workspace, config)

    _run(go())
    console.print(f"workspace {workspace}: configuration from {config_file} applied")
    emit(msgspec.to_builtins(config), "json")
