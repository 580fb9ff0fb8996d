"""Golden replay: a recorded event stream through the processor and a set of
journeys gives exactly the recorded transitions and messages — on each state store.
A change of behaviour shows up as a diff here; if it is intended, record the new
output with ``POLKU_UPDATE_GOLDEN=1 pytest tests/engine/test_journey_golden.py``
and review the diff of ``golden/journeys.expected.json`` in the commit."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import msgspec

from polku.engine.processor import Processor
from tests.engine.helpers import event
from tests.engine.test_journeys import (
    HOLDOUT,
    NEWSLETTER,
    NEWSLETTER_CONFIG,
    PASSWORD_HELP,
    PROMO,
    V1,
    Journeys,
)

GOLDEN = Path(__file__).with_name("golden")
SALT = bytes(range(32))
CONFIG = (
    NEWSLETTER_CONFIG.replace("  consent: {defaults: {marketing: true}}\n", "")
    + """
  caps:
    - {name: account-weekly, max: 5, per: 7d, purposes: [marketing], scope: account}
    - {name: person-weekly, max: 2, per: 7d, purposes: [marketing]}
  quiet_hours: {start: "22:00", end: "07:00", purposes: [marketing]}
"""
)
CART = """
id: cart
entry: {event: Cart Abandoned, reentry: after 1d}
goal: {event: Order Completed, within: 2d}
steps:
  - id: wait
    wait: 2h
  - id: remind
    action: {channel: email, purpose: marketing, subject: "Your cart, {{ traits.first_name }}", body: "Still there"}
"""


def replay(directory: Path) -> dict[str, Any]:
    world = Journeys(directory, CONFIG, batch_size=13)
    # Customer ids (and so message keys) derive from a per-store random salt: fix it.
    world.set_salt(SALT)
    world.processor = Processor(world.store, world.log, clock=world.clock, batch_size=13)
    for body in (PASSWORD_HELP, NEWSLETTER, PROMO, HOLDOUT, CART, V1):
        world.deploy(body)
    for line in (GOLDEN / "journeys.jsonl").read_bytes().splitlines():
        record = msgspec.json.decode(line)
        raw = record["event"]
        fields = {
            "user_id": raw.get("userId"),
            "anonymous_id": raw.get("anonymousId"),
            "event": raw.get("event"),
            "properties": raw.get("properties") or None,
            "traits": raw.get("traits"),
            "group_id": raw.get("groupId"),
        }
        world.clock.now = record["at"]
        world.send(
            event(
                raw["type"],
                ts=record["at"],
                channel=(raw.get("context") or {}).get("channel", "web"),
                message_id=raw.get("messageId"),
                **{name: value for name, value in fields.items() if value is not None},
            )
        )
        world.run()
    world.advance(3 * 86_400_000)
    output = {
        "transitions": [" | ".join(row) for row in world.transitions()],
        "messages": [
            f"{m.key} {m.customer_id} {m.journey}/{m.step} {m.channel} {m.to} {m.subject!r}" for m in world.messages()
        ],
        "stats": dict(sorted(world.stats().items())),
    }
    world.close()
    return output


def test_replaying_the_recorded_log_gives_the_recorded_transitions_and_messages(tmp_path: Path) -> None:
    output = replay(tmp_path)
    expected_file = GOLDEN / "journeys.expected.json"
    if os.environ.get("POLKU_UPDATE_GOLDEN"):
        expected_file.write_bytes(msgspec.json.format(msgspec.json.encode(output), indent=1) + b"\n")
    expected = msgspec.json.decode(expected_file.read_bytes())
    assert len(output["transitions"]) > 300 and len(output["messages"]) > 30
    assert output["stats"] == expected["stats"]
    assert output["messages"] == expected["messages"]
    assert output["transitions"] == expected["transitions"]
