"""Survey fatigue control (pure): may this customer be asked now?

The workspace's ``surveys`` section sets the rules that hold across every survey and
channel; each survey adds its own recontact period. In the order checked (the first
that refuses is the recorded reason):

1. ``blocked_by_journey:<id>`` — the customer has a live instance of a journey that
   says so (``blocks_surveys: true`` in the journey, or listed in
   ``fatigue.blocking_journeys``): an open complaint is not the moment to ask;
2. ``cooldown:response`` — they answered a survey (any survey, any channel, or
   feedback imported from another tool) within ``fatigue.after_response``;
3. ``cooldown:invitation`` — they were invited to any survey within
   ``fatigue.after_invitation``;
4. ``recontact`` — they were invited to *this* survey within its ``recontact``;
5. ``account_limit:<account>`` — one of their accounts has had
   ``fatigue.account.max`` invitations within ``fatigue.account.per`` (B2B: do
   not survey the whole customer company in one week).

Consent, suppression rules and quiet hours are the contact policy's (purpose
``surveys``) and are checked after these.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

import msgspec

from polku.core.attributes import parse_duration
from polku.core.errors import ConfigError

MAX_WINDOW_MS: Final = 366 * 86_400_000


class AccountLimit(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    max: int = 5
    per: str = "30d"


class FatigueConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    after_invitation: str = "30d"
    """No second invitation (any survey, any channel) within this of one."""
    after_response: str = "30d"
    """No invitation within this of an answer (any survey, imported feedback too)."""
    account: AccountLimit | None = None
    blocking_journeys: list[str] = []
    """Journeys whose live instances block surveys (besides ``blocks_surveys: true``)."""


class SurveysConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The workspace's ``surveys`` section (docs/surveys.md)."""

    base_url: str | None = None
    """Where the hosted survey page is reached (``https://feedback.example.com``);
    the server's own address without it."""
    locale_trait: str = "locale"
    fatigue: FatigueConfig = msgspec.field(default_factory=FatigueConfig)


class SurveyMemory(msgspec.Struct, kw_only=True, omit_defaults=True):
    """What fatigue control remembers of a holder (a customer, or an account)."""

    invited_ms: int = 0
    """The last invitation sent (any survey)."""
    by_survey: dict[str, int] = {}
    """Survey → its last invitation."""
    recent: list[int] = []
    """Invitation times within the account window (kept on accounts)."""

    def remember(self, survey: str, now_ms: int, keep_ms: int) -> None:
        self.invited_ms = max(self.invited_ms, now_ms)
        self.by_survey = {**self.by_survey, survey: now_ms}
        if keep_ms:
            self.recent = [ts for ts in self.recent if ts > now_ms - keep_ms] + [now_ms]

    def merged(self, other: SurveyMemory) -> SurveyMemory:
        by_survey = dict(self.by_survey)
        for survey, ts in other.by_survey.items():
            by_survey[survey] = max(ts, by_survey.get(survey, 0))
        return SurveyMemory(
            invited_ms=max(self.invited_ms, other.invited_ms),
            by_survey=by_survey,
            recent=sorted({*self.recent, *other.recent}),
        )


@dataclass(frozen=True)
class Fatigue:
    """The compiled rules."""

    after_invitation_ms: int
    after_response_ms: int
    account_max: int | None
    account_window_ms: int
    blocking_journeys: frozenset[str]

    @classmethod
    def compile(cls, config: FatigueConfig) -> Fatigue:
        account = config.account
        if account is not None and account.max < 1:
            raise ConfigError("surveys.fatigue.account.max: must be at least 1", field="surveys.fatigue.account.max")
        return cls(
            after_invitation_ms=_window(config.after_invitation, "surveys.fatigue.after_invitation"),
            after_response_ms=_window(config.after_response, "surveys.fatigue.after_response"),
            account_max=account.max if account is not None else None,
            account_window_ms=_window(account.per, "surveys.fatigue.account.per") if account is not None else 0,
            blocking_journeys=frozenset(config.blocking_journeys),
        )

    def refusal(
        self,
        *,
        survey: str,
        recontact_ms: int,
        person: SurveyMemory,
        answered_ms: int,
        accounts: Mapping[str, SurveyMemory],
        open_journeys: Iterable[tuple[str, bool]],
        now_ms: int,
    ) -> str | None:
        """The reason this customer may not be asked ``survey`` now, or ``None``.
        ``open_journeys`` are (journey id, does it block surveys) of their live
        instances; ``answered_ms`` is their latest feedback answer."""
        for journey, blocks in sorted(open_journeys):
            if blocks or journey in self.blocking_journeys:
                return f"blocked_by_journey:{journey}"
        if answered_ms and self.after_response_ms and now_ms - answered_ms < self.after_response_ms:
            return "cooldown:response"
        if person.invited_ms and self.after_invitation_ms and now_ms - person.invited_ms < self.after_invitation_ms:
            return "cooldown:invitation"
        last = person.by_survey.get(survey, 0)
        if last and recontact_ms and now_ms - last < recontact_ms:
            return "recontact"
        if self.account_max is not None:
            since = now_ms - self.account_window_ms
            for account, memory in sorted(accounts.items()):
                if sum(1 for ts in memory.recent if ts > since) >= self.account_max:
                    return f"account_limit:{account}"
        return None


def _window(text: str, where: str) -> int:
    if isinstance(text, str) and text.strip() in ("0", "0s", "0d"):
        return 0
    value = parse_duration(text, where)
    if value > MAX_WINDOW_MS:
        raise ConfigError(f"{where}: at most 366d", field=where)
    return value


def latest_answer(feedback: Mapping[str, tuple[float, int, str, int]]) -> int:
    """The time of a profile's latest feedback answer (``Profile.feedback`` holds
    (score, ts, channel, seq) per metric)."""
    return max((answer[1] for answer in feedback.values()), default=0)
