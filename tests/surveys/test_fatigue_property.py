"""The fatigue property: over any stream of triggering events across channels and
surveys, no customer receives more invitations than the rules allow, and every
trigger that did not become an invitation is recorded with a reason."""

from __future__ import annotations

import tempfile
from itertools import pairwise
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from polku.core.journey_state import InvitationRecord
from tests.engine.helpers import T0, event
from tests.surveys.helpers import DAY, HOUR, SurveyWorld

CONFIG = """
channels:
  email: {type: smtp, sender: feedback@example.com}
  sms: {type: webhook, url: "http://127.0.0.1:9/sms", allow_private_network: true}
surveys:
  fatigue: {after_invitation: 7d, after_response: 10d, account: {max: 2, per: 14d}}
"""


def survey(survey_id: str, metric: str, trigger: str, channels: str, delay: str, sample: float) -> str:
    return f"""
id: {survey_id}
metric: {metric}
question: {{en: "How was it?", fi: "Miten meni?"}}
channels: [{channels}]
triggers: [{{event: {trigger}, delay: {delay}}}]
recontact: 20d
sample: {sample}
"""


SURVEYS = (
    survey("after-call", "csat", "Call Ended", "email, sms", "10m", 1.0),
    survey("after-order", "nps", "Order Completed", "in_app, email", "0s", 1.0),
    survey("after-chat", "ces", "Chat Closed", "sms, in_app", "2h", 0.5),
)
TRIGGERS = ("Call Ended", "Order Completed", "Chat Closed", "Feedback Submitted", "Page Viewed")
PEOPLE = ("ann", "bob", "cid", "dan")
CHANNELS = ("phone", "app", "web", "chat", "email")

steps = st.lists(
    st.tuples(
        st.sampled_from(PEOPLE),
        st.sampled_from(TRIGGERS),
        st.sampled_from(CHANNELS),
        st.integers(min_value=0, max_value=4 * DAY),
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps)
def test_no_customer_is_invited_more_than_the_rules_allow(stream: list[tuple[str, str, str, int]]) -> None:
    with tempfile.TemporaryDirectory() as directory:
        w = SurveyWorld(Path(directory), CONFIG)
        try:
            _check(w, stream)
        finally:
            w.store.close()


def _check(w: SurveyWorld, stream: list[tuple[str, str, str, int]]) -> None:
    for body in SURVEYS:
        w.deploy_survey(body)
    for index, person in enumerate(PEOPLE):
        company = "acme" if index < 3 else "solo"
        w.at(
            T0,
            event("identify", ts=T0, user_id=person, traits={"email": f"{person}@example.com", "phone": "+358401"}),
            event("group", ts=T0, user_id=person, group_id=company, traits={"name": company}),
        )
    now = T0
    answers: dict[str, list[int]] = {}
    triggers = 0
    for person, name, channel, gap in stream:
        now += gap
        properties = {"metric": "nps", "score": 9} if name == "Feedback Submitted" else {}
        w.at(now, event(ts=now, user_id=person, channel=channel, event=name, properties=properties))
        if name == "Feedback Submitted":
            answers.setdefault(w.customer(f"user_id:{person}"), []).append(now)
        elif name in ("Call Ended", "Order Completed", "Chat Closed"):
            triggers += 1
    w.advance(3 * HOUR)  # every delay has passed
    records = w.invitations()
    # Every trigger is decided once: sent, or not sent with a reason.
    assert len(records) == triggers
    assert all(r.status == "sent" or (r.status == "suppressed" and r.reason) for r in records)
    sent = [r for r in records if r.status == "sent"]
    by_customer: dict[str, list[InvitationRecord]] = {}
    for record in sent:
        by_customer.setdefault(record.customer_id, []).append(record)
    for customer, mine in by_customer.items():
        times = sorted(r.created_ms for r in mine)
        assert all(b - a >= 7 * DAY for a, b in pairwise(times)), "after_invitation"
        for record in mine:
            assert not any(0 <= record.created_ms - t < 10 * DAY for t in answers.get(customer, [])), "after_response"
        for survey_id in {r.survey for r in mine}:
            same = sorted(r.created_ms for r in mine if r.survey == survey_id)
            assert all(b - a >= 20 * DAY for a, b in pairwise(same)), "recontact"
    acme = sorted(r.created_ms for r in sent if r.customer_id != w.customer("user_id:dan"))
    for index, moment in enumerate(acme):
        within = [t for t in acme[: index + 1] if moment - t < 14 * DAY]
        assert len(within) <= 2, "account limit"
    # Channels: each invitation went by one of its survey's channels.
    allowed = {"after-call": {"email", "sms"}, "after-order": {"in_app", "email"}, "after-chat": {"sms", "in_app"}}
    assert all(r.channel in allowed[r.survey] for r in sent)
    SEEN.update(r.reason or "sent" for r in records)


SEEN: set[str] = set()


def test_the_property_saw_every_kind_of_decision() -> None:
    """The examples above reached the rules they check (run after them)."""
    if not SEEN:
        test_no_customer_is_invited_more_than_the_rules_allow()
    assert {"sent", "cooldown:invitation", "pending"} <= SEEN, SEEN
