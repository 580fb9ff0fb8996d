"""First-start setup: the default workspace, its default source and its keys."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Final

import msgspec

from polku.core.errors import Conflict, InvalidInput
from polku.core.events import format_time
from polku.core.workspace import (
    ADMIN_SCOPES,
    DEFAULT_SOURCE,
    OPERATOR_SCOPES,
    Credential,
    KeyKind,
    Source,
    Workspace,
    check_channel,
    check_name,
    check_source_name,
    hash_key,
)
from polku.ports import Catalog

DEFAULT_WORKSPACE: Final = "default"
DEFAULT_CHANNEL: Final = "web"


def new_key(kind: KeyKind) -> str:
    """Random keys with a readable prefix so a leaked one is recognisable."""
    prefix = "pk_write_" if kind == "write" else "pk_admin_"
    return prefix + secrets.token_urlsafe(24)


class NewKey(msgspec.Struct):
    """A key as shown once, at creation: only its hash is stored."""

    key: str
    key_id: str
    kind: KeyKind
    workspace: str
    source: str | None
    scopes: list[str] = []


def _now() -> str:
    return format_time(datetime.now(UTC))


async def add_key(
    catalog: Catalog,
    kind: KeyKind,
    workspace: str,
    source: str | None,
    *,
    key: str | None = None,
    label: str = "",
    scopes: tuple[str, ...] = ADMIN_SCOPES,
) -> NewKey | None:
    """Store a key (random unless given); ``None`` if that key already exists. An
    admin token gets ``scopes`` (all by default); a write key none (it ingests)."""
    key = key or new_key(kind)
    key_hash = hash_key(key)
    granted = scopes if kind == "admin" else ()
    added = await catalog.add_credential(
        Credential(
            key_hash=key_hash,
            kind=kind,
            workspace=workspace,
            source=source,
            label=label,
            created_at=_now(),
            scopes=granted,
        )
    )
    if not added:
        return None
    return NewKey(key=key, key_id=key_hash[:12], kind=kind, workspace=workspace, source=source, scopes=list(granted))


async def ensure_source(catalog: Catalog, workspace: str, name: str, channel: str) -> bool:
    check_source_name(name, "source name")
    check_channel(channel, "channel")
    return await catalog.create_source(
        Source(workspace=workspace, name=name, default_channel=channel, created_at=_now())
    )


async def make_workspace(
    catalog: Catalog, workspace_id: str, name: str | None = None, *, channel: str = DEFAULT_CHANNEL
) -> tuple[Workspace, list[NewKey]]:
    """A new workspace (a tenant: docs/security.md, "Workspaces"), with its ``default``
    source, its first admin token (the default scopes) and a write key, shown once.
    ``Conflict`` if the id is taken."""
    check_name(workspace_id, "workspace id")
    if name is not None and not 0 < len(name) <= 200:
        raise InvalidInput("a workspace name is 1-200 characters", field="name")
    workspace = Workspace(id=workspace_id, name=name or workspace_id, created_at=_now())
    if not await catalog.create_workspace(workspace):
        raise Conflict(f"workspace {workspace_id!r} exists")
    await ensure_source(catalog, workspace_id, DEFAULT_SOURCE, channel)
    keys = [
        await add_key(catalog, "admin", workspace_id, None, label="first admin"),
        await add_key(catalog, "write", workspace_id, DEFAULT_SOURCE, label="first write key"),
    ]
    return workspace, [key for key in keys if key is not None]


async def bootstrap(catalog: Catalog, *, write_key: str | None, admin_token: str | None) -> list[NewKey]:
    """Create the default workspace on first start, with a random write key and admin
    token unless keys are given; the given keys whenever they are missing. Returns the
    keys created. Idempotent, so a start that crashed half-way is completed by the
    next one: a random key is made whenever the workspace has never had one of its
    kind (a revoked key still counts, so revoking every key does not bring one back)."""
    created: list[NewKey] = []
    await catalog.create_workspace(Workspace(id=DEFAULT_WORKSPACE, name="Default workspace", created_at=_now()))
    await ensure_source(catalog, DEFAULT_WORKSPACE, DEFAULT_SOURCE, DEFAULT_CHANNEL)
    wanted: list[tuple[KeyKind, str | None, str | None]] = [
        ("write", DEFAULT_SOURCE, write_key),
        ("admin", None, admin_token),
    ]
    for kind, source, given in wanted:
        if given is None and await catalog.credentials(DEFAULT_WORKSPACE, kind):
            continue
        # The first admin token is the installation's operator: it may make workspaces
        # too (and give tokens any scope; `ingest` it is not, being no write key).
        scopes = OPERATOR_SCOPES if kind == "admin" else ADMIN_SCOPES
        new = await add_key(catalog, kind, DEFAULT_WORKSPACE, source, key=given, label="bootstrap", scopes=scopes)
        if new is not None:
            created.append(new)
    return created
