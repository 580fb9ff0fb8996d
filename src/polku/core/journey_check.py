"""Checking a journey document against a workspace before it is stored (pure).

``parse_journey`` checks the document alone; ``check_journey`` adds what only the
workspace knows, every error still naming the file, the line and the field: the
document's ``id`` is the one it is deployed as, every action's channel is
configured, the entry segment exists, and every survey step names a deployed survey. The API (``PUT /v1/journeys/{id}``) and
the CLI (``polku journeys validate``) share it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Final

from polku.core.errors import ConfigError
from polku.core.journey_spec import Journey, JourneySpec, compile_journey, parse_journey
from polku.core.yaml_source import load_with_lines, located

RESERVED_IDS: Final = frozenset({"schema", "validate"})
"""Path segments of the journeys API that cannot be journey ids."""


def check_journey(
    text: str | bytes,
    *,
    filename: str,
    expected_id: str | None = None,
    channels: Mapping[str, str] | None = None,
    segments: Collection[str] | None = None,
    surveys: Collection[str] | None = None,
    version: int = 1,
) -> Journey:
    """Parse, check and compile ``text``. ``channels`` (name → type) and
    ``segments`` are the workspace's; ``None`` skips that check. Raises
    ``ConfigError`` with ``file``, ``line`` and ``field``."""
    spec = parse_journey(text, filename=filename)
    _, lines = load_with_lines(text, filename)
    if expected_id is not None and spec.id != expected_id:
        raise located(filename, lines, "id", f"id: the document's id {spec.id!r} is not {expected_id!r}")
    if spec.id in RESERVED_IDS:
        raise located(filename, lines, "id", f"id: {spec.id!r} is reserved; pick another id")
    try:
        journey = compile_journey(spec, version=version, channels=channels, surveys=surveys)
    except ConfigError as error:
        raise located(filename, lines, str(error.details.get("field") or ""), error.message) from None
    if segments is not None:
        _check_segment(spec, filename, lines, segments)
    return journey


def _check_segment(spec: JourneySpec, filename: str, lines: Mapping[str, int], segments: Collection[str]) -> None:
    entry = spec.entry
    field, name = (
        ("entry.segment", entry.segment)
        if entry.segment is not None
        else ("entry.schedule.segment", entry.schedule.segment if entry.schedule else None)
    )
    if name is not None and name not in segments:
        known = ", ".join(sorted(segments)) or "none configured"
        raise located(filename, lines, field, f"{field}: unknown segment {name!r} (segments: {known})")
