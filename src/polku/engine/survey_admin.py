"""Managing survey definitions in the catalog (docs/surveys.md): check a document
against its workspace, deploy it as the next version, change its status, and the
JSON the API and the CLI both show."""

from __future__ import annotations

from typing import Any, Final

import msgspec

from polku.core.errors import ConfigError, Conflict, NotFound
from polku.core.survey_spec import Survey, compile_survey, parse_survey
from polku.core.yaml_source import load_with_lines, located
from polku.ports import Catalog, JourneyStatus, StoredJourney

RESERVED_IDS: Final = frozenset({"schema", "validate", "answers", "invitations"})


async def check_survey_for_workspace(
    catalog: Catalog, workspace_id: str, body: bytes | str, *, survey_id: str | None, filename: str | None = None
) -> tuple[Survey, int]:
    """The survey compiled as its next version against the workspace's channels,
    and that version's number. Raises ``ConfigError`` naming file, line and field."""
    config = (await catalog.workspace(workspace_id)).config
    filename = filename or f"{survey_id or 'survey'}.yaml"
    spec = parse_survey(body, filename=filename)
    _, lines = load_with_lines(body, filename)
    if survey_id is not None and spec.id != survey_id:
        raise located(filename, lines, "id", f"id: the document's id {spec.id!r} is not {survey_id!r}")
    if spec.id in RESERVED_IDS:
        raise located(filename, lines, "id", f"id: {spec.id!r} is reserved; pick another id")
    version = await next_version(catalog, workspace_id, spec.id)
    try:
        survey = compile_survey(
            spec, version=version, channels={name: channel.type for name, channel in config.channels.items()}
        )
    except ConfigError as error:
        raise located(filename, lines, str(error.details.get("field") or ""), error.message) from None
    return survey, version


async def next_version(catalog: Catalog, workspace_id: str, survey_id: str) -> int:
    try:
        return (await catalog.definition("survey", workspace_id, survey_id)).versions[-1] + 1
    except NotFound:
        return 1


async def set_survey_status(
    catalog: Catalog, workspace_id: str, survey_id: str, status: JourneyStatus, now: str
) -> StoredJourney:
    """Pause (no new invitations; links already sent still work), resume, archive."""
    survey = await catalog.definition("survey", workspace_id, survey_id)
    if status == "paused" and survey.status == "archived":
        raise Conflict(f"survey {survey_id!r} is archived; resume it first")
    return await catalog.set_definition_status("survey", workspace_id, survey_id, status, now)


def survey_summary(stored: StoredJourney) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "id": stored.id,
        "version": stored.current,
        "status": stored.status,
        "updated_at": stored.updated_at,
    }
    try:
        spec = parse_survey(stored.body, filename=f"{stored.id}.yaml")
    except Exception:  # a stored document a later release no longer accepts
        return summary
    return {
        **summary,
        "name": spec.name,
        "metric": spec.metric,
        "channels": spec.channels,
        "triggers": [trigger.event for trigger in spec.triggers],
    }


def survey_detail(stored: StoredJourney) -> dict[str, Any]:
    spec = parse_survey(stored.body, filename=f"{stored.id}.yaml")
    return {
        "id": stored.id,
        "name": spec.name,
        "version": stored.version,
        "current_version": stored.current,
        "status": stored.status,
        "deployed_at": stored.deployed_at,
        "updated_at": stored.updated_at,
        "versions": list(stored.versions),
        "body": stored.body,
        "spec": msgspec.to_builtins(spec),
    }


def localized(survey: Survey, locale: str) -> dict[str, Any]:
    """The survey as a front end shows it, every text in ``locale``."""

    def text(wording: dict[str, str]) -> str:
        return wording.get(locale) or wording[survey.default_locale]

    return {
        "id": survey.id,
        "version": survey.version,
        "name": survey.spec.name,
        "metric": survey.metric,
        "scale": list(survey.scale),
        "locale": locale,
        "question": text(survey.spec.question),
        "questions": [
            {
                "id": question.id,
                "type": question.type,
                "text": text(question.text),
                "options": [{"value": option.value, "text": text(option.text)} for option in question.options],
                "required": question.required,
                "max_length": question.max_length,
            }
            for question in survey.spec.questions
        ],
    }
