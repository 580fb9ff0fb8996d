"""Answering a survey invitation — on the hosted page or through the answers API
(the app, a chatbot, an IVR) — and turning the answer into a feedback event.

The link's token (``polku.core.survey_tokens``) says which invitation; the
invitation (written by the processor when it sent it) says which customer,
survey version, channel, journey step and triggering event. An answer is checked
against the survey, then appended to the log as the customer's
``Feedback Submitted`` event (its messageId is the invitation and the revision, so
a retried submit is a duplicate the log drops), then recorded in the answer store:
one answer per invitation, and a second submit within the survey's edit window is
an edit (the next revision), after it a refusal.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

from polku.core.errors import ConfigError, Conflict, Forbidden, Gone, InvalidInput
from polku.core.events import Event
from polku.core.journey_state import InvitationRecord
from polku.core.survey_spec import Survey, compile_survey, parse_survey, validate_answer
from polku.core.survey_tokens import TokenClaims, TokenError, make_token, read_token
from polku.engine.runtime import customer_event
from polku.ports import AppendBatch, Catalog, EventLog, StoredAnswer

ANSWER_SOURCE: Final = "surveys"
MAX_LOCKS: Final = 10_000


@dataclass(frozen=True)
class Opened:
    """An invitation reached through its token."""

    invitation: InvitationRecord
    survey: Survey
    answer: StoredAnswer | None
    edit_until_ms: int
    """Until when the answer may be changed (0: it may not)."""

    def can_edit(self, now_ms: int) -> bool:
        return self.answer is None or now_ms < self.edit_until_ms


class SurveyAnswers:
    def __init__(
        self,
        catalog: Catalog,
        log: EventLog,
        *,
        secret: Callable[[], Awaitable[bytes]],
        invitation: Callable[[str], Awaitable[InvitationRecord | None]],
        clock: Callable[[], int],
        live_id: Callable[[str, str], Awaitable[str]] | None = None,
    ) -> None:
        self.catalog = catalog
        self.log = log
        self._secret = secret
        self._invitation = invitation
        self.clock = clock
        self._live_id = live_id
        """(workspace, customer id) → the customer's id now (after merges)."""
        self._surveys: dict[tuple[str, str, int], Survey] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def token(self, invitation: str, expires_ms: int) -> str:
        """The token of an invitation (for a front end that shows it in the app)."""
        return make_token(await self._secret(), invitation, expires_ms)

    async def claims(self, token: str) -> TokenClaims:
        """Raises ``Forbidden`` for a forged or damaged token, ``Gone`` for an expired one."""
        try:
            return read_token(await self._secret(), token, self.clock())
        except TokenError as error:
            if error.code == "expired":
                raise Gone(error.message, reason="expired") from None
            raise Forbidden(error.message, reason="invalid_token") from None

    async def open(self, token: str) -> Opened:
        claims = await self.claims(token)
        invitation = await self._invitation(claims.invitation)
        if invitation is None or invitation.status != "sent" or invitation.expires_ms != claims.expires_ms:
            # A genuine token names an invitation that was sent with this expiry.
            raise Forbidden("this survey link is not valid", reason="invalid_token")
        survey = await self.survey(invitation.workspace, invitation.survey, invitation.version)
        answer = await self.catalog.survey_answer(invitation.workspace, invitation.id)
        edit_until = answer.first_ms + survey.edit_window_ms if answer is not None and survey.edit_window_ms else 0
        return Opened(invitation=invitation, survey=survey, answer=answer, edit_until_ms=edit_until)

    async def survey(self, workspace: str, survey_id: str, version: int) -> Survey:
        key = (workspace, survey_id, version)
        found = self._surveys.get(key)
        if found is None:
            stored = await self.catalog.definition("survey", workspace, survey_id, version)
            found = compile_survey(parse_survey(stored.body, filename=f"{survey_id}.yaml"), version=version)
            self._surveys[key] = found
        return found

    async def submit(
        self,
        token: str,
        *,
        score: Any,
        answers: dict[str, Any] | None = None,
        comment: Any = None,
        customer_id: str | None = None,
        locale: str | None = None,
    ) -> tuple[Opened, StoredAnswer, bool]:
        """Answer (or edit the answer to) the token's invitation. ``customer_id``,
        when the front end knows who is answering, must be the invitation's
        customer. Returns the invitation, the stored answer and whether it changed."""
        opened = await self.open(token)
        invitation = opened.invitation
        if customer_id is not None and customer_id != invitation.customer_id:
            # The invitee may have been merged since: compare who they are now.
            live = self._live_id
            same = live is not None and await live(invitation.workspace, customer_id) == await live(
                invitation.workspace, invitation.customer_id
            )
            if not same:
                raise Forbidden("this survey invitation belongs to another customer", reason="other_customer")
        try:
            clean = validate_answer(opened.survey, score, answers or {}, comment)
        except ConfigError as error:
            raise InvalidInput(error.message, field=error.details.get("field")) from None
        if clean["comment"] is None:
            texts = [q.id for q in opened.survey.spec.questions if q.type == "text" and clean["answers"].get(q.id)]
            clean["comment"] = clean["answers"][texts[0]] if texts else None
        clean["locale"] = opened.survey.locale_for(locale) if locale else invitation.locale
        lock = self._lock(invitation.id)
        async with lock:
            now = self.clock()
            stored = await self.catalog.survey_answer(invitation.workspace, invitation.id)
            edit_until = stored.first_ms + opened.survey.edit_window_ms if stored is not None else 0
            if stored is not None:
                if stored.answer == clean:
                    return opened, stored, False  # the same answer again (a replay): nothing changes
                if now >= edit_until:
                    raise Conflict(
                        "this survey was already answered, and the time to change the answer is over",
                        reason="answered",
                    )
            revision = stored.revision + 1 if stored is not None else 1
            first_ms = stored.first_ms if stored is not None else now
            event = await self._feedback_event(invitation, opened.survey, clean, revision, now)
            await self.log.append(
                AppendBatch(workspace=invitation.workspace, source=ANSWER_SOURCE, received_ms=now, events=[event])
            )
            answer = StoredAnswer(
                invitation=invitation.id, revision=revision, first_ms=first_ms, updated_ms=now, answer=clean
            )
            await self.catalog.record_survey_answer(invitation.workspace, answer)
        edit_until = first_ms + opened.survey.edit_window_ms if opened.survey.edit_window_ms else 0
        return Opened(invitation, opened.survey, answer, edit_until), answer, True

    def _lock(self, invitation: str) -> asyncio.Lock:
        """Submits of one invitation take turns: two at once would both be revision
        n, and the log would keep only the first."""
        if len(self._locks) > MAX_LOCKS:
            for key in [key for key, lock in self._locks.items() if not lock.locked()]:
                del self._locks[key]
        return self._locks.setdefault(invitation, asyncio.Lock())

    async def _feedback_event(
        self, invitation: InvitationRecord, survey: Survey, clean: dict[str, Any], revision: int, now: int
    ) -> Event:
        workspace = await self.catalog.workspace(invitation.workspace)
        properties: dict[str, Any] = {
            "metric": survey.metric,
            "score": clean["score"],
            "comment": clean["comment"],
            "answers": clean["answers"],
            "survey": survey.id,
            "survey_version": survey.version,
            "invitation": invitation.id,
            "revision": revision,
            "locale": clean["locale"],
            "asked_in": invitation.channel,
            "trigger": invitation.trigger,
        }
        if invitation.journey:
            properties.update(
                journey=invitation.journey,
                journey_version=invitation.journey_version,
                step=invitation.step,
                instance=invitation.instance,
            )
        return customer_event(
            workspace.config.feedback_event,
            invitation.customer_id,
            now,
            f"survey-answer|{invitation.workspace}|{invitation.id}|{revision}",
            properties,
            invitation.event_channel or invitation.channel or "other",
        )
