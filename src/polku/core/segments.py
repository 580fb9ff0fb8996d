"""Segments: named conditions over a customer's profile and accounts (pure).

A segment's condition is compiled once (``polku.core.expr``) and evaluated again
only when one of the paths it reads has changed — a ``traits.plan`` change does not
touch a segment over ``attributes.orders_30d``. Conditions that read ``now`` (or a
windowed attribute) depend on time as well; the processor re-checks them on the
customer's timers.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from typing import Any, Final

import msgspec

from polku.core.errors import ConfigError
from polku.core.expr import Condition, compile_condition

NAME_PATTERN: Final = re.compile(r"[a-z][a-z0-9_\-]{0,62}")
SEGMENT_ROOTS: Final = frozenset(
    {"traits", "attributes", "segments", "accounts", "account", "last_seen", "feedback", "identifiers", "now"}
)
ENTERED_EVENT: Final = "Segment Entered"
EXITED_EVENT: Final = "Segment Exited"


class SegmentSpec(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    condition: str
    description: str = ""


def _affected(references: frozenset[str], changed: Collection[str]) -> bool:
    for path in changed:
        for reference in references:
            if reference == path or path.startswith(reference + ".") or reference.startswith(path + "."):
                return True
    return False


class Needs(msgspec.Struct, frozen=True):
    """What a group of segments reads: the condition roots, and the attribute names
    (``None``: every attribute, when a condition reads ``attributes`` whole)."""

    roots: frozenset[str]
    attributes: tuple[str, ...] | None


MEMO_LIMIT: Final = 4096


class CompiledSegment:
    __slots__ = ("condition", "name", "reads_now", "references")

    def __init__(self, name: str, condition: Condition) -> None:
        self.name = name
        self.condition = condition
        self.references = condition.references
        self.reads_now = "now" in condition.references


class SegmentSet:
    """The compiled segments of one workspace."""

    def __init__(self, segments: list[CompiledSegment], windowed_attributes: Collection[str] = ()) -> None:
        self.segments = segments
        self.names = tuple(segment.name for segment in segments)
        windowed = {"attributes." + name for name in windowed_attributes}
        self.time_dependent = tuple(
            segment for segment in segments if segment.reads_now or _affected(segment.references, windowed)
        )
        # Memos: the same sets of changed paths come back event after event.
        self._affected: dict[frozenset[str], list[CompiledSegment]] = {}
        self._needs: dict[tuple[str, ...], Needs] = {}

    @classmethod
    def compile(
        cls,
        specs: Mapping[str, SegmentSpec],
        *,
        windowed_attributes: Collection[str] = (),
        attribute_names: Collection[str] | None = None,
        where: str = "segments",
    ) -> SegmentSet:
        """Compile every condition; with ``attribute_names``, a condition that reads
        an attribute not declared is an error (it could never be true)."""
        compiled = []
        for name, spec in specs.items():
            if not NAME_PATTERN.fullmatch(name):
                raise ConfigError(
                    f"{where}.{name}: a segment name is 1-63 lower-case letters, digits, '-' or '_', starting with a letter",
                    field=f"{where}.{name}",
                )
            condition = compile_condition(spec.condition, roots=SEGMENT_ROOTS, where=f"{where}.{name}.condition")
            if attribute_names is not None:
                for reference in sorted(condition.references):
                    parts = reference.split(".")
                    if parts[0] == "attributes" and len(parts) > 1 and parts[1] not in attribute_names:
                        declared = ", ".join(sorted(attribute_names)) or "none"
                        raise ConfigError(
                            f"{where}.{name}.condition reads attributes.{parts[1]}, which is not declared "
                            f"under `attributes` (declared: {declared})",
                            field=f"{where}.{name}.condition",
                        )
            compiled.append(CompiledSegment(name, condition))
        return cls(compiled, windowed_attributes)

    def affected(self, changed: Collection[str] | None) -> list[CompiledSegment]:
        """The segments to evaluate after ``changed`` paths changed (``None``: all)."""
        if changed is None:
            return list(self.segments)
        if not changed:
            return []
        key = frozenset(changed)
        found = self._affected.get(key)
        if found is None:
            if len(self._affected) >= MEMO_LIMIT:
                self._affected.clear()
            found = [segment for segment in self.segments if _affected(segment.references, changed)]
            self._affected[key] = found
        return found

    def needs(self, segments: list[CompiledSegment]) -> Needs:
        key = tuple(segment.name for segment in segments)
        found = self._needs.get(key)
        if found is None:
            references = {reference for segment in segments for reference in segment.references}
            roots = frozenset(reference.partition(".")[0] for reference in references)
            names: tuple[str, ...] | None = None
            if "attributes" not in references:
                names = tuple(sorted({r.split(".")[1] for r in references if r.startswith("attributes.")}))
            if len(self._needs) >= MEMO_LIMIT:
                self._needs.clear()
            found = self._needs[key] = Needs(roots=roots, attributes=names)
        return found

    @staticmethod
    def evaluate(
        segments: list[CompiledSegment], view: Mapping[str, Any], current: Mapping[str, int]
    ) -> tuple[list[str], list[str]]:
        """(entered, exited) among ``segments`` for a customer now in ``current``."""
        entered: list[str] = []
        exited: list[str] = []
        for segment in segments:
            member = segment.condition(view)
            if member and segment.name not in current:
                entered.append(segment.name)
            elif not member and segment.name in current:
                exited.append(segment.name)
        return entered, exited
