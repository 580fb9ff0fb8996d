"""A processor world with surveys deployed (over the real SQLite state store)."""

from __future__ import annotations

from typing import Any

import msgspec

from polku.adapters.sqlite import survey_store
from polku.core.channels import OutboundMessage
from polku.core.journey_state import InvitationRecord
from polku.state import FeedbackRow
from tests.engine.helpers import World

HOUR = 3_600_000
DAY = 24 * HOUR

CSAT = """
id: call-csat
name: Phone support satisfaction
metric: csat
question:
  en: How satisfied were you with our phone support?
  fi: Kuinka tyytyväinen olit puhelinpalveluumme?
questions:
  - id: reason
    type: choice
    text: {en: "What mattered most?", fi: "Mikä oli tärkeintä?"}
    options:
      - {value: speed, text: {en: Speed, fi: Nopeus}}
      - {value: answer, text: {en: The answer, fi: Vastaus}}
channels: [email, sms, in_app]
triggers:
  - event: Call Ended
    delay: 10m
recontact: 60d
"""


class SurveyWorld(World):
    def deploy_survey(self, body: str, version: int = 1, status: str = "active") -> None:
        identifier = body.split("id:", 1)[1].split()[0]
        self.log.put_survey("default", identifier, version, status, body)
        self.processor.refresh_configs()

    def deploy_journey(self, body: str, version: int = 1, status: str = "active") -> None:
        identifier = body.split("id:", 1)[1].split()[0]
        self.log.put_journey("default", identifier, version, status, body)
        self.processor.refresh_configs()

    def invitations(self, customer: str | None = None) -> list[InvitationRecord]:
        rows = [
            msgspec.json.decode(body, type=InvitationRecord)
            for (body,) in self.store.connection.execute("SELECT body FROM survey_invitations ORDER BY created_ms, id")
        ]
        return [row for row in rows if customer is None or row.customer_id == customer]

    def feedback(self) -> list[FeedbackRow]:
        return survey_store.feedback_rows(self.store.connection, "default", 0, 2**62)

    def messages(self) -> list[OutboundMessage]:
        return [
            msgspec.json.decode(body, type=OutboundMessage)
            for (body,) in self.store.connection.execute("SELECT body FROM messages ORDER BY id")
        ]

    def at(self, ts: int, *events: Any) -> None:
        """Events that happen at ``ts``, processed then."""
        self.clock.now = ts
        self.send(*events)
        self.run()

    def advance(self, ms: int) -> None:
        self.clock.now += ms
        self.run()


def reasons(records: list[InvitationRecord]) -> list[str]:
    return [record.reason if record.status != "sent" else "sent" for record in records]


def traits(**values: Any) -> dict[str, Any]:
    return values
