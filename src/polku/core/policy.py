"""The contact policy: one place that says whether an outbound effect may go now
(pure). Journeys use it today; surveys and decisions will use the same function.

An effect is checked, in this order, against:

1. **consent** for its purpose (``traits.consent.<purpose>``; a purpose's default
   applies when the customer has said nothing);
2. **suppression rules**: conditions over the profile (``no marketing within 14
   days of a critical score``), each with the purposes and channels it covers;
3. **frequency caps** over rolling windows, per channel or across channels, for the
   person or for everyone of their account;
4. **quiet hours** in the customer's time zone: the effect is *held* until the
   window opens (never dropped).

The answer is ``Verdict``: ``send``, ``skip`` (with the reason: ``consent:marketing``,
``suppressed:<rule>``, ``cap:<cap>``) or ``hold`` (until a moment).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, Final, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from polku.core.attributes import parse_duration
from polku.core.errors import ConfigError
from polku.core.expr import Condition, compile_condition
from polku.core.journey_state import Sent
from polku.core.segments import SEGMENT_ROOTS

UNRESTRICTED_CHANNELS: Final = frozenset({"agent_note"})
"""A note for the agent reaches no customer: no consent, cap or quiet hour applies."""
POLICY_ROOTS: Final = SEGMENT_ROOTS
"""A suppression rule reads what a segment condition reads."""
MAX_CAP_WINDOW_MS: Final = 366 * 86_400_000
DEFAULT_CONSENT: Final = {"service": True, "transactional": True, "surveys": True, "marketing": False}
"""Service messages need no opt-in; marketing does (GDPR / ePrivacy); surveys are
allowed until the customer says no."""


class Cap(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    max: int
    per: str
    """A rolling window: ``7d``, ``24h``."""
    name: str | None = None
    purposes: list[str] | None = None
    """The purposes it counts and limits (all without it)."""
    channels: list[str] | None = None
    scope: Literal["customer", "account"] = "customer"


class QuietHours(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    start: str = "21:00"
    end: str = "08:00"
    purposes: list[str] | None = None
    channels: list[str] | None = None


class Suppression(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: str
    when: str
    purposes: list[str] | None = None
    channels: list[str] | None = None


class Consent(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    trait: str = "consent"
    """The trait holding ``{purpose: true|false}``."""
    defaults: dict[str, bool] = {}
    """Whether a customer who has said nothing consents to a purpose, over the
    built-in ``DEFAULT_CONSENT``; a purpose in neither needs an explicit yes."""
    analytics: str | None = "analytics"
    """The purpose whose explicit *no* keeps a person out of the analyses (docs/privacy.md,
    "Consent in the analyses"); ``null``: the analyses count everyone."""


class PolicyConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    consent: Consent = msgspec.field(default_factory=Consent)
    caps: list[Cap] = []
    quiet_hours: QuietHours | None = None
    suppress: list[Suppression] = []
    timezone_trait: str = "timezone"
    default_timezone: str = "UTC"


@dataclass(frozen=True)
class Verdict:
    kind: Literal["send", "skip", "hold"]
    reason: str = ""
    until_ms: int = 0


SEND: Final = Verdict("send")


@dataclass(frozen=True)
class _Cap:
    name: str
    max: int
    window_ms: int
    purposes: frozenset[str] | None
    channels: frozenset[str] | None
    account: bool

    def counts(self, channel: str, purpose: str) -> bool:
        return (self.purposes is None or purpose in self.purposes) and (
            self.channels is None or channel in self.channels
        )


@dataclass(frozen=True)
class _Rule:
    name: str
    condition: Condition
    purposes: frozenset[str] | None
    channels: frozenset[str] | None


def _applies(purposes: frozenset[str] | None, channels: frozenset[str] | None, channel: str, purpose: str) -> bool:
    return (purposes is None or purpose in purposes) and (channels is None or channel in channels)


class Policy:
    """A workspace's contact policy, compiled."""

    def __init__(self, config: PolicyConfig) -> None:
        self.config = config
        self.consent_trait = config.consent.trait
        self.consent_defaults = {**DEFAULT_CONSENT, **config.consent.defaults}
        self.caps = tuple(
            _Cap(
                name=cap.name or f"caps[{index}]",
                max=cap.max,
                window_ms=parse_duration(cap.per, f"policy.caps[{index}].per"),
                purposes=frozenset(cap.purposes) if cap.purposes is not None else None,
                channels=frozenset(cap.channels) if cap.channels is not None else None,
                account=cap.scope == "account",
            )
            for index, cap in enumerate(config.caps)
        )
        for index, cap in enumerate(self.caps):
            if cap.max < 0:
                raise ConfigError(f"policy.caps[{index}].max: must be 0 or more", field=f"policy.caps[{index}].max")
            if cap.window_ms > MAX_CAP_WINDOW_MS:
                raise ConfigError(f"policy.caps[{index}].per: at most 366d", field=f"policy.caps[{index}].per")
        self.window_ms = max((cap.window_ms for cap in self.caps), default=0)
        self.rules = tuple(
            _Rule(
                name=rule.name,
                condition=compile_condition(rule.when, roots=POLICY_ROOTS, where=f"policy.suppress[{index}].when"),
                purposes=frozenset(rule.purposes) if rule.purposes is not None else None,
                channels=frozenset(rule.channels) if rule.channels is not None else None,
            )
            for index, rule in enumerate(config.suppress)
        )
        quiet = config.quiet_hours
        self.quiet: tuple[tuple[int, int], frozenset[str] | None, frozenset[str] | None] | None = None
        if quiet is not None:
            start = _minutes(quiet.start, "policy.quiet_hours.start")
            end = _minutes(quiet.end, "policy.quiet_hours.end")
            self.quiet = (
                (start, end),
                frozenset(quiet.purposes) if quiet.purposes is not None else None,
                frozenset(quiet.channels) if quiet.channels is not None else None,
            )
        self.default_zone = zone(config.default_timezone, "policy.default_timezone")
        self.reads = frozenset(root for rule in self.rules for root in rule.condition.references)

    def customer_zone(self, traits: Mapping[str, Any]) -> ZoneInfo:
        name = traits.get(self.config.timezone_trait)
        if isinstance(name, str):
            try:
                return zone(name, "")
            except ConfigError:
                pass
        return self.default_zone

    def check(
        self,
        *,
        channel: str,
        purpose: str,
        view: Mapping[str, Any],
        sent: Sequence[Sent],
        account_sent: Mapping[str, Sequence[Sent]],
        now_ms: int,
    ) -> Verdict:
        """May an effect of ``purpose`` go out on ``channel`` now? ``sent`` is what
        the person received recently, ``account_sent`` what each of their accounts
        did; ``view`` is the condition view of the profile."""
        if channel in UNRESTRICTED_CHANNELS:
            return SEND
        traits = view.get("traits") or {}
        consent = traits.get(self.consent_trait)
        given = consent.get(purpose) if isinstance(consent, dict) else None
        if given is None:
            given = self.consent_defaults.get(purpose, False)
        if given is not True:
            return Verdict("skip", f"consent:{purpose}")
        for rule in self.rules:
            if _applies(rule.purposes, rule.channels, channel, purpose) and rule.condition(view):
                return Verdict("skip", f"suppressed:{rule.name}")
        for cap in self.caps:
            if not cap.counts(channel, purpose):
                continue
            since = now_ms - cap.window_ms
            if cap.account:
                for account, records in account_sent.items():
                    if _count(records, cap, since) >= cap.max:
                        return Verdict("skip", f"cap:{cap.name}:{account}")
            elif _count(sent, cap, since) >= cap.max:
                return Verdict("skip", f"cap:{cap.name}")
        if self.quiet is not None:
            (start, end), purposes, channels = self.quiet
            if _applies(purposes, channels, channel, purpose):
                opens = quiet_until(now_ms, self.customer_zone(traits), start, end)
                if opens:
                    return Verdict("hold", "quiet_hours", opens)
        return SEND

    def prune(self, sent: list[Sent], now_ms: int) -> list[Sent]:
        """What the caps still need to see (the longest window)."""
        since = now_ms - self.window_ms
        return [record for record in sent if record.ts_ms > since] if self.window_ms else []


def _count(records: Sequence[Sent], cap: _Cap, since: int) -> int:
    return sum(1 for record in records if record.ts_ms > since and cap.counts(record.channel, record.purpose))


def _minutes(text: str, where: str) -> int:
    from polku.core.journey_spec import TIME_OF_DAY

    match = TIME_OF_DAY.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise ConfigError(f"{where}: {text!r} is not a time of day; write HH:MM", field=where)
    return int(match[1]) * 60 + int(match[2])


@lru_cache(maxsize=512)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def zone(name: str, where: str) -> ZoneInfo:
    try:
        if not name or len(name) > 64 or ".." in name or name.startswith("/"):
            raise ValueError(name)
        return _zone(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"{where}: {name!r} is not an IANA time zone (e.g. 'Europe/Helsinki')", field=where) from None


def quiet_until(now_ms: int, tz: ZoneInfo, start: int, end: int) -> int:
    """The moment quiet hours (``start``–``end``, minutes of the local day, possibly
    across midnight) end, if ``now_ms`` is inside them; 0 otherwise."""
    local = datetime.fromtimestamp(now_ms / 1000, tz)
    minute = local.hour * 60 + local.minute
    inside = start <= minute < end if start < end else (minute >= start or minute < end)
    if not inside or start == end:
        return 0
    opening = local.replace(hour=end // 60, minute=end % 60, second=0, microsecond=0)
    if opening <= local:
        opening = (opening + timedelta(days=1)).replace(hour=end // 60, minute=end % 60)
    return int(opening.timestamp() * 1000)


def next_time_of_day(now_ms: int, tz: ZoneInfo, hour: int, minute: int, days: frozenset[int] | None = None) -> int:
    """The next moment (after ``now_ms``) the local clock shows ``hour:minute`` on
    one of ``days`` (0 = Monday; any day without them). Wall-clock arithmetic in the
    zone, so a daylight-saving change keeps 09:00 at 09:00."""
    local = datetime.fromtimestamp(now_ms / 1000, tz)
    candidate = local.replace(hour=hour, minute=minute, second=0, microsecond=0)
    for _ in range(9):
        if candidate > local and (days is None or candidate.weekday() in days):
            return int(candidate.timestamp() * 1000)
        naive = candidate.replace(tzinfo=None) + timedelta(days=1)
        candidate = naive.replace(tzinfo=tz)
    raise ValueError("no such day")  # pragma: no cover - days is never empty
