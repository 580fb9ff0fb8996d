"""Surveys inside the processor: triggers (rules and journey steps), channels,
fatigue control with a recorded reason for every invitation not sent, the contact
policy, and answers as feedback events linked to the invitation."""

from __future__ import annotations

from pathlib import Path

from polku.core.survey_tokens import read_token
from polku.engine.runtime import customer_event
from tests.engine.helpers import T0, event
from tests.surveys.helpers import CSAT, DAY, HOUR, SurveyWorld, reasons

CONFIG = """
channels:
  email: {type: smtp, sender: feedback@example.com}
  sms: {type: webhook, url: "http://127.0.0.1:9/sms", channel: sms, allow_private_network: true}
surveys:
  base_url: https://feedback.example.com
  fatigue: {after_invitation: 30d, after_response: 45d}
"""


def world(tmp_path: Path, config: str = CONFIG) -> SurveyWorld:
    found = SurveyWorld(tmp_path, config)
    found.deploy_survey(CSAT)
    return found


def identify(user: str, ts: int = T0, **traits: object) -> object:
    return event("identify", ts=ts, user_id=user, traits={"email": f"{user}@example.com", **traits})


def test_a_call_triggers_an_email_invitation_ten_minutes_later_with_a_signed_link(tmp_path: Path) -> None:
    w = world(tmp_path)
    w.at(T0, identify("ann", locale="fi-FI"), event(ts=T0, user_id="ann", channel="phone", event="Call Ended"))
    assert w.invitations() == []  # the delay
    w.advance(10 * 60_000)
    (invitation,) = w.invitations()
    assert invitation.status == "sent" and invitation.channel == "email" and invitation.locale == "fi"
    assert invitation.trigger["name"] == "Call Ended" and invitation.trigger["channel"] == "phone"
    (message,) = w.messages()
    assert message.to == "ann@example.com" and message.purpose == "surveys"
    assert "Kuinka tyytyväinen" in (message.body or "")
    link = next(word for word in (message.body or "").split() if word.startswith("https://feedback.example.com/s/"))
    claims = read_token(w.store.survey_secret(), link.rsplit("/", 1)[1], w.clock.now)
    assert claims.invitation == invitation.id


def test_fatigue_records_why_every_invitation_was_not_sent(tmp_path: Path) -> None:
    w = world(tmp_path)

    def call(ts: int) -> None:
        w.at(ts, event(ts=ts, user_id="ann", channel="phone", event="Call Ended"))

    w.at(T0, identify("ann"))
    call(T0)
    call(T0 + 60_000)  # its first call's invitation still waits for the delay
    w.advance(HOUR)
    customer = w.customer("user_id:ann")
    call(w.clock.now)
    w.advance(HOUR)
    assert reasons(w.invitations(customer)) == ["pending", "sent", "cooldown:invitation"]
    # An answer (here: imported from another tool) starts the response cooldown.
    w.at(
        w.clock.now,
        event(ts=w.clock.now, user_id="ann", event="Feedback Submitted", properties={"metric": "nps", "score": 3}),
    )
    w.advance(31 * DAY)
    call(w.clock.now)
    w.advance(HOUR)
    assert reasons(w.invitations(customer))[-1] == "cooldown:response"
    w.advance(30 * DAY)
    call(w.clock.now)
    w.advance(HOUR)
    assert reasons(w.invitations(customer))[-1] == "sent"  # past the 45-day response cooldown and the 60-day recontact


def test_recontact_consent_sampling_and_no_address_are_recorded(tmp_path: Path) -> None:
    config = CONFIG.replace("after_invitation: 30d", "after_invitation: 0s").replace(
        "after_response: 45d", "after_response: 0s"
    )
    w = world(tmp_path, config)
    w.at(T0, identify("ann"), event(ts=T0, user_id="ann", channel="phone", event="Call Ended"))
    w.advance(HOUR)
    w.at(w.clock.now, event(ts=w.clock.now, user_id="ann", channel="phone", event="Call Ended"))
    w.advance(HOUR)
    now = w.clock.now
    w.at(
        now,
        identify("bob", ts=now, consent={"surveys": False}),
        event(ts=now, user_id="bob", channel="phone", event="Call Ended"),
    )
    w.advance(HOUR)
    assert reasons(w.invitations(w.customer("user_id:ann"))) == ["sent", "recontact"]
    assert reasons(w.invitations(w.customer("user_id:bob"))) == ["consent:surveys"]


def test_in_app_surveys_are_asked_where_the_customer_is(tmp_path: Path) -> None:
    body = CSAT.replace("  - event: Call Ended\n    delay: 10m", "  - event: Order Completed")
    w = SurveyWorld(tmp_path, CONFIG)
    w.deploy_survey(body)
    w.at(T0, identify("ann"), event(ts=T0, user_id="ann", channel="app", event="Order Completed"))
    (invitation,) = w.invitations()
    assert invitation.channel == "in_app" and invitation.status == "sent"
    assert w.messages() == []  # shown by the app: GET /v1/profiles/{id}/surveys


def test_quiet_hours_hold_an_invitation_until_morning(tmp_path: Path) -> None:
    config = CONFIG + "policy:\n  quiet_hours: {start: '21:00', end: '08:00', purposes: [surveys]}\n"
    w = world(tmp_path, config)
    night = T0 - T0 % DAY + 22 * HOUR  # 22:00 UTC
    w.at(night, identify("ann", ts=night), event(ts=night, user_id="ann", channel="phone", event="Call Ended"))
    w.advance(HOUR)
    assert w.invitations() == []
    w.clock.now = night + 10 * HOUR + 1  # 08:00 the next morning
    w.run()
    assert reasons(w.invitations()) == ["sent"]


def test_a_journey_that_blocks_surveys_and_a_journey_step_that_asks(tmp_path: Path) -> None:
    w = world(tmp_path)
    w.deploy_journey(
        """
id: complaint
blocks_surveys: true
entry: {event: Complaint Opened}
steps:
  - id: wait
    wait_for: {event: Complaint Closed, within: 30d}
  - id: ask
    survey: call-csat
"""
    )
    w.at(T0, identify("ann"), event(ts=T0, user_id="ann", event="Complaint Opened"))
    w.at(T0 + 1, event(ts=T0 + 1, user_id="ann", channel="phone", event="Call Ended"))
    w.advance(HOUR)
    w.at(w.clock.now, event(ts=w.clock.now, user_id="ann", event="Complaint Closed"))
    found = sorted((r.status, r.reason, r.journey, r.step) for r in w.invitations())
    assert found == [("sent", "", "complaint", "ask"), ("suppressed", "blocked_by_journey:complaint", "", "")]


def test_the_account_limit_spans_the_people_of_a_company(tmp_path: Path) -> None:
    config = CONFIG + "  \n"
    config = config.replace(
        "fatigue: {after_invitation: 30d, after_response: 45d}", "fatigue: {account: {max: 2, per: 30d}}"
    )
    w = world(tmp_path, config)
    for name in ("ann", "bob", "cid"):
        w.at(T0, identify(name), event("group", ts=T0, user_id=name, group_id="acme", traits={"name": "Acme"}))
    for name in ("ann", "bob", "cid"):
        w.at(T0, event(ts=T0, user_id=name, channel="phone", event="Call Ended"))
    w.advance(HOUR)
    assert sorted(reasons(w.invitations())) == ["account_limit:acme", "sent", "sent"]


def test_an_answer_is_a_feedback_event_linked_to_its_invitation(tmp_path: Path) -> None:
    w = world(tmp_path)
    w.at(T0, identify("ann"), event(ts=T0, user_id="ann", channel="phone", event="Call Ended"))
    w.advance(HOUR)
    (invitation,) = w.invitations()
    customer = invitation.customer_id
    for revision, score in ((1, 2), (2, 4)):
        w.log.add(
            "default",
            customer_event(
                "Feedback Submitted",
                customer,
                w.clock.now,
                f"answer|{invitation.id}|{revision}",
                {
                    "metric": "csat",
                    "score": score,
                    "survey": "call-csat",
                    "invitation": invitation.id,
                    "revision": revision,
                },
                "email",
            ),
        )
        w.run()
    (row,) = w.feedback()
    assert (row.key, row.score, row.revision, row.channel) == (invitation.id, 4, 2, "email")
    profile = w.store.profile("default", customer)
    assert profile.feedback["csat"][0] == 4
    names = [row.name for row in w.store.timeline("default", customer)]
    assert names.count("Feedback Submitted") == 2


def test_an_sms_invitation_carries_the_text_and_the_link(tmp_path: Path) -> None:
    w = world(tmp_path)
    w.at(
        T0,
        event("identify", ts=T0, user_id="sam", traits={"phone": "+358401234567"}),
        event(ts=T0, user_id="sam", channel="phone", event="Call Ended"),
    )
    w.advance(HOUR)
    (invitation,) = w.invitations()
    assert (invitation.channel, invitation.event_channel) == ("sms", "sms")
    (message,) = w.messages()
    payload = message.payload
    assert payload["to"] == "+358401234567" and payload["invitation"] == invitation.id
    assert payload["link"].startswith("https://feedback.example.com/s/") and payload["link"] in payload["text"]


def test_a_low_score_starts_recovery_and_suppresses_the_newsletter(tmp_path: Path) -> None:
    """Closing the loop (PRODUCT.md scenario 4): the answer is an event a journey
    enters on, and the profile's score feeds the contact policy's suppression rule."""
    config = CONFIG + (
        "policy:\n  suppress:\n    - {name: critical-feedback, when: 'feedback.csat != null and feedback.csat <= 2', "
        "purposes: [marketing]}\n  consent: {defaults: {marketing: true}}\n"
    )
    w = world(tmp_path, config)
    w.deploy_journey(
        """
id: recovery
entry: {event: Feedback Submitted, when: "event.properties.metric == 'csat' and event.properties.score <= 2"}
steps:
  - id: call-back
    action: {channel: agent_note, body: "Unhappy after {{ trigger.properties.trigger.name }}: call back"}
"""
    )
    w.deploy_journey(
        """
id: newsletter
entry: {event: Newsletter Due}
steps:
  - id: send
    action: {channel: email, purpose: marketing, subject: News, body: "Hello"}
"""
    )
    w.at(T0, identify("ann"), event(ts=T0, user_id="ann", channel="phone", event="Call Ended"))
    w.advance(HOUR)
    (invitation,) = w.invitations()
    w.at(
        w.clock.now,
        customer_event(
            "Feedback Submitted",
            invitation.customer_id,
            w.clock.now,
            f"answer|{invitation.id}|1",
            {"metric": "csat", "score": 1, "invitation": invitation.id, "trigger": invitation.trigger},
            "email",
        ),
    )
    w.at(w.clock.now + 1, event(ts=w.clock.now + 1, user_id="ann", event="Newsletter Due"))
    rows = list(
        w.store.connection.execute("SELECT journey, kind, step, detail FROM journey_transitions WHERE kind = 'action'")
    )
    assert ("recovery", "action", "call-back", rows[0][3]) in rows and rows[0][3].startswith("sent")
    assert ("newsletter", "action", "send", "skipped:suppressed:critical-feedback") in rows
    state = w.store.journey_state("default", invitation.customer_id)
    assert [note.text for note in state.notes] == ["Unhappy after Call Ended: call back"]


def test_invitations_follow_their_customer_through_a_merge(tmp_path: Path) -> None:
    from polku.adapters.sqlite import survey_store

    body = CSAT.replace("  - event: Call Ended\n    delay: 10m", "  - event: Order Completed")
    w = SurveyWorld(tmp_path, CONFIG)
    w.deploy_survey(body)
    w.at(T0, event("identify", ts=T0, user_id="ann", traits={"email": "ann@example.com"}))
    w.at(T0 + 1, event(ts=T0 + 1, anonymous_id="device-1", channel="app", event="Order Completed"))
    (invitation,) = w.invitations()
    w.at(T0 + 2, event("identify", ts=T0 + 2, user_id="ann", anonymous_id="device-1"))
    live = w.customer("user_id:ann")
    assert live != invitation.customer_id  # the device's customer was merged into ann
    ids = survey_store.merged_ids(w.store.connection, "default", live)
    assert ids == [live, invitation.customer_id]
    found = survey_store.invitations(w.store.connection, "default", customer_ids=ids)
    assert [record.id for record, _ in found] == [invitation.id]
