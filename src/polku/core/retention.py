"""Retention of raw events (docs/privacy.md, "Retention"): how long each kind of event
is kept, by event name, channel and message type, and the conditions the stores
delete the expired ones by.

```yaml
retention:
  events: 730d                  # every event not named below (absent: kept)
  rules:                        # the first rule an event matches decides
    - {event: Page Viewed, keep: 90d}
    - {channel: web, type: page, keep: 30d}
  quarantine: 30d               # refused messages, from when they were refused
```

An event's age is its own time (``timestamp``). What expires leaves the event log,
the customer's timeline and the analytics store; what polku derived from it
(profiles, computed attributes, journeys, messages) stays until the person is
erased. Pure: the caller gives the time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import msgspec

from polku.core.attributes import parse_duration
from polku.core.errors import ConfigError

MIN_KEEP_MS: Final = 3_600_000
"""An hour: shorter would delete events before the processor and the analytics
have had them."""
MAX_RULES: Final = 100


class RetentionRule(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    keep: str
    event: str | None = None
    """The event's name (a ``track`` event's, a ``page``'s or ``screen``'s)."""
    channel: str | None = None
    type: str | None = None


class RetentionConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    events: str | None = None
    rules: list[RetentionRule] = []
    quarantine: str | None = None


@dataclass(frozen=True)
class Condition:
    """One rule's events: ``name``/``channel``/``type`` equal to these (``None``: any)."""

    keep_ms: int
    name: str | None = None
    channel: str | None = None
    type: str | None = None


@dataclass(frozen=True)
class Retention:
    rules: tuple[Condition, ...]
    default_ms: int | None
    quarantine_ms: int | None

    @classmethod
    def compile(cls, config: RetentionConfig, where: str = "retention") -> Retention:
        if len(config.rules) > MAX_RULES:
            raise ConfigError(f"{where}.rules: at most {MAX_RULES} rules", field=f"{where}.rules")
        rules = []
        for index, rule in enumerate(config.rules):
            field = f"{where}.rules[{index}]"
            if rule.event is None and rule.channel is None and rule.type is None:
                raise ConfigError(f"{field}: name an event, a channel or a type (or set `events`)", field=field)
            rules.append(Condition(_keep(rule.keep, f"{field}.keep"), rule.event, rule.channel, rule.type))
        return cls(
            rules=tuple(rules),
            default_ms=None if config.events is None else _keep(config.events, f"{where}.events"),
            quarantine_ms=None if config.quarantine is None else _keep(config.quarantine, f"{where}.quarantine"),
        )

    @property
    def keeps_everything(self) -> bool:
        return self.default_ms is None and not self.rules and self.quarantine_ms is None

    def keep_ms(self, kind: str, name: str | None, channel: str) -> int | None:
        """How long an event is kept (``None``: for ever)."""
        for rule in self.rules:
            if _matches(rule, kind, name, channel):
                return rule.keep_ms
        return self.default_ms

    def expired(
        self, now_ms: int, column: Callable[[str], str], value: Callable[[str, str], Any] = lambda _, found: found
    ) -> list[tuple[str, list[Any]]]:
        """The conditions (SQL with ``?`` placeholders) of the events expired at
        ``now_ms``: one per rule, and one for the rest. ``column`` names a store's
        column for ``ts_ms``, ``name``, ``channel`` and ``type``; ``value`` turns a
        value into what that column compares with (bytes where it holds bytes)."""
        found: list[tuple[str, list[Any]]] = []
        earlier: list[tuple[str, list[Any]]] = []
        for rule in self.rules:
            match, parameters = _match(rule, column, value)
            found.append(_older(match, parameters, earlier, column, now_ms - rule.keep_ms))
            earlier.append((match, parameters))
        if self.default_ms is not None:
            found.append(_older("TRUE", [], earlier, column, now_ms - self.default_ms))
        return found

    def expired_where(
        self, now_ms: int, column: Callable[[str], str], value: Callable[[str, str], Any] = lambda _, found: found
    ) -> tuple[str, list[Any]] | None:
        """``expired`` as one condition (``None``: no event ever expires)."""
        found = self.expired(now_ms, column, value)
        if not found:
            return None
        return " OR ".join(f"({clause})" for clause, _ in found), [p for _, parameters in found for p in parameters]


def _older(
    match: str,
    parameters: list[Any],
    earlier: list[tuple[str, list[Any]]],
    column: Callable[[str], str],
    cutoff_ms: int,
) -> tuple[str, list[Any]]:
    """``match``, older than ``cutoff_ms``, and matched by no earlier rule (the first
    rule an event matches decides)."""
    clauses = [f"{column('ts_ms')} < ?", f"({match})"]
    values: list[Any] = [cutoff_ms, *parameters]
    for other, other_parameters in earlier:
        clauses.append(f"NOT ({other})")
        values.extend(other_parameters)
    return " AND ".join(clauses), values


def _match(rule: Condition, column: Callable[[str], str], value: Callable[[str, str], Any]) -> tuple[str, list[Any]]:
    clauses, parameters = [], []
    for field, wanted in (("name", rule.name), ("channel", rule.channel), ("type", rule.type)):
        if wanted is not None:
            # A NULL name matches no rule that names one (coalesce: NOT (NULL = x) is NULL).
            clauses.append(f"coalesce({column(field)} = ?, FALSE)")
            parameters.append(value(field, wanted))
    return " AND ".join(clauses), parameters


def _matches(rule: Condition, kind: str, name: str | None, channel: str) -> bool:
    return (
        (rule.name is None or rule.name == name)
        and (rule.channel is None or rule.channel == channel)
        and (rule.type is None or rule.type == kind)
    )


def _keep(text: str, field: str) -> int:
    keep = parse_duration(text, field)
    if keep < MIN_KEEP_MS:
        raise ConfigError(f"{field}: {text!r} is shorter than an hour", field=field)
    return keep
