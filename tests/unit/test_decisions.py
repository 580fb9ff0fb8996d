"""Next-best-action arbitration on hand-built cases: eligibility, context weights,
the contact policy, response-based suppression, the holdout, in-app items, chat
self-service and hand-over."""

from __future__ import annotations

from typing import Any

import pytest

from polku.core.action_spec import compile_catalogue, parse_catalogue
from polku.core.decisions import ActionMemory, Candidate, Request, decide
from polku.core.errors import ConfigError
from polku.core.policy import Policy, PolicyConfig

DAY = 86_400_000
NOW = 1_790_000_000_000

CATALOGUE = """
default_action: help-center
actions:
  - id: reset-self-service
    name: Reset your password yourself
    channels: [chat, web, app]
    self_service: true
    value: 5
    context: {intent: {login_problem: 3, "*": 0}}
    treatments:
      chat: {text: "Hi {{ traits.first_name }}, reset it here: https://example.com/reset"}
      "*": {title: Reset your password}
    suppress: {rejected: 2, within: 30d, for: 14d}
  - id: upgrade-offer
    channels: [web, app]
    purpose: marketing
    when: "traits.plan == 'basic'"
    value: 20
    lever: 0.5
    treatments: {"*": {title: "Go premium"}}
  - id: help-center
    channels: [web, app, chat]
    value: 1
    treatments: {"*": {title: Help center}}
handover:
  - {name: repeated_failure, when: "attributes.reset_failures_1d >= 2"}
  - {name: asked_for_human, when: "context.ask_human == true"}
"""


def run(catalogue_text: str = CATALOGUE, *, request: Request, view: dict[str, Any] | None = None, **extra: Any) -> Any:
    catalogue = compile_catalogue(parse_catalogue(catalogue_text), version=1)
    arguments: dict[str, Any] = {
        "workspace": "w",
        "customer_id": "c1",
        "decision_id": "d1",
        "request": request,
        "view": view
        or {
            "traits": {"first_name": "Ann", "plan": "basic", "consent": {"marketing": True}},
            "segments": [],
            "attributes": {},
        },
        "policy": Policy(PolicyConfig()),
        "sent": [],
        "account_sent": {},
        "memory": {},
        "stats": {},
        "now_ms": NOW,
    }
    arguments.update(extra)
    return decide(catalogue, **arguments)


def test_score_is_propensity_times_context_weight_times_value_times_lever() -> None:
    stats = {
        ("upgrade-offer", "*"): (1000, 500),
        ("help-center", "*"): (1000, 100),
        ("reset-self-service", "*"): (1000, 10),
    }
    found = run(request=Request("web"), stats=stats)
    # upgrade ~0.5 × 20 × 0.5 = 5; reset ~0.01 × 5 (no intent given: its weight is 1); help ~0.1 × 1
    assert [candidate.id for candidate in found.ranked] == ["upgrade-offer", "help-center", "reset-self-service"]
    upgrade = found.ranked[0]
    assert upgrade.score == pytest.approx(upgrade.propensity * 1 * 20 * 0.5)
    assert 0.44 < upgrade.propensity < 0.56  # Beta(501, 501)
    assert any(reason.startswith("score = ") for reason in upgrade.reasons)


def test_eligibility_consent_and_suppression_exclude_with_reasons() -> None:
    premium = {"traits": {"plan": "premium"}, "segments": [], "attributes": {}}
    found = run(request=Request("web"), view=premium)
    assert {"id": "upgrade-offer", "reason": "not eligible: traits.plan == 'basic'"} in found.excluded
    no_consent = {"traits": {"plan": "basic"}, "segments": [], "attributes": {}}
    found = run(request=Request("web"), view=no_consent)
    assert {"id": "upgrade-offer", "reason": "contact policy: consent:marketing"} in found.excluded
    memory = {"reset-self-service": ActionMemory(rejected=[NOW - 3 * DAY, NOW - DAY])}
    found = run(request=Request("chat", context={"intent": "login_problem"}), memory=memory)
    assert any(
        e["id"] == "reset-self-service" and e["reason"].startswith("suppressed: rejected 2") for e in found.excluded
    )
    later = run(request=Request("chat", context={"intent": "login_problem"}), memory=memory, now_ms=NOW + 15 * DAY)
    assert later.ranked[0].id == "reset-self-service"  # 14 days after the last rejection


def test_chat_intent_self_service_and_hand_over() -> None:
    found = run(request=Request("chat", context={"intent": "login_problem"}))
    assert found.ranked[0].id == "reset-self-service" and found.self_service[0].id == "reset-self-service"
    assert found.ranked[0].treatment == {"text": "Hi Ann, reset it here: https://example.com/reset"}
    assert found.handover == []
    billing = run(request=Request("chat", context={"intent": "billing"}))
    assert "reset-self-service" not in [c.id for c in billing.ranked]  # "*": 0 for other intents
    failing = {"traits": {"first_name": "Ann"}, "segments": [], "attributes": {"reset_failures_1d": 2}}
    found = run(request=Request("chat", context={"intent": "login_problem"}), view=failing)
    assert found.handover == ["repeated_failure"]
    asked = run(request=Request("chat", context={"intent": "billing", "ask_human": True}))
    assert asked.handover == ["asked_for_human"]


def test_the_holdout_gets_the_default_action() -> None:
    text = CATALOGUE.replace("default_action: help-center", "default_action: help-center\nholdout: 0.5")
    held = [run(text, request=Request("web"), customer_id=f"c{n}") for n in range(40)]
    in_holdout = [found for found in held if found.holdout]
    assert 8 < len(in_holdout) < 32
    assert all([c.id for c in found.ranked] == ["help-center"] for found in in_holdout)


def test_in_app_items_compete_in_the_same_ranking() -> None:
    message = Candidate(id="message:k1", kind="message", score=10.0, treatment={"body": "Your parcel"}, reasons=())
    found = run(request=Request("app"), competing=[message], stats={("upgrade-offer", "*"): (100, 90)})
    assert [c.id for c in found.ranked][:2] == ["message:k1", "upgrade-offer"] or found.ranked[0].id == "message:k1"
    chat = run(request=Request("chat"), competing=[message])
    assert "message:k1" not in [c.id for c in chat.ranked]  # in-app items only where they show


def test_a_decision_is_replayable_from_its_id() -> None:
    first = run(request=Request("web"), decision_id="d-42")
    again = run(request=Request("web"), decision_id="d-42")
    assert [c.propensity for c in first.ranked] == [c.propensity for c in again.ranked]


WHEN_BASIC = 'when: "traits.plan == ' + "'basic'" + '"'


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("  - id: help-center", "  - id: Help Center"), "actions[2].id"),
        (("default_action: help-center", "default_action: nothing"), "default_action"),
        (("    value: 20", "    value: -1"), "value and lever must be 0 or more"),
        (
            ('treatments: {"*": {title: Help center}}', "treatments: {web: {title: Help}}"),
            "no treatment for channel 'app'",
        ),
        ((WHEN_BASIC, 'when: "traits.plan =="'), "actions[1].when"),
    ],
)
def test_invalid_catalogues_name_the_field(change: tuple[str, str], expected: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_catalogue(CATALOGUE.replace(*change))
    assert expected in error.value.message
