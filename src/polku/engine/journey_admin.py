"""Managing journey definitions in the catalog: check a document against its
workspace, deploy it as the next version, change a journey's status, and the JSON
the API and the CLI both show (docs/journeys.md)."""

from __future__ import annotations

from typing import Any

import msgspec

from polku.core.errors import Conflict, NotFound
from polku.core.journey_check import check_journey
from polku.core.journey_spec import Journey, parse_journey
from polku.ports import Catalog, JourneyStatus, StoredJourney


async def check_for_workspace(
    catalog: Catalog, workspace_id: str, body: bytes | str, *, journey_id: str | None, filename: str | None = None
) -> tuple[Journey, int]:
    """The journey compiled as its next version against the workspace's channels
    and segments, and that version's number. Raises ``ConfigError``."""
    config = (await catalog.workspace(workspace_id)).config
    version = 1
    if journey_id is not None:
        version = await next_version(catalog, workspace_id, journey_id)
    journey = check_journey(
        body,
        filename=filename or f"{journey_id or 'journey'}.yaml",
        expected_id=journey_id,
        channels={name: channel.type for name, channel in config.channels.items()},
        segments=config.segments.keys(),
        surveys=[survey.id for survey in await catalog.definitions("survey", workspace_id)],
        version=version,
    )
    return journey, version


async def next_version(catalog: Catalog, workspace_id: str, journey_id: str) -> int:
    try:
        return (await catalog.journey(workspace_id, journey_id)).versions[-1] + 1
    except NotFound:
        return 1


async def set_status(
    catalog: Catalog, workspace_id: str, journey_id: str, status: JourneyStatus, now: str
) -> StoredJourney:
    """Pause (an active or paused journey), resume (to active) or archive."""
    journey = await catalog.journey(workspace_id, journey_id)
    if status == "paused" and journey.status == "archived":
        raise Conflict(f"journey {journey_id!r} is archived; resume it first")
    return await catalog.set_journey_status(workspace_id, journey_id, status, now)


def journey_summary(journey: StoredJourney) -> dict[str, Any]:
    return {"id": journey.id, "version": journey.current, "status": journey.status, "updated_at": journey.updated_at}


def journey_name(journey: StoredJourney) -> str:
    try:
        return parse_journey(journey.body, filename=f"{journey.id}.yaml").name
    except Exception:  # a stored document a later release no longer accepts
        return ""


def journey_detail(journey: StoredJourney) -> dict[str, Any]:
    spec = parse_journey(journey.body, filename=f"{journey.id}.yaml")
    return {
        "id": journey.id,
        "name": spec.name,
        "version": journey.version,
        "current_version": journey.current,
        "status": journey.status,
        "deployed_at": journey.deployed_at,
        "updated_at": journey.updated_at,
        "versions": list(journey.versions),
        "body": journey.body,
        "spec": msgspec.to_builtins(spec),
    }
