from __future__ import annotations

import msgspec
import pytest

from polku.connectors.webhook import map_payload
from polku.core.errors import ConfigError, InvalidInput
from polku.core.workspace import WebhookMapping, parse_config

ZENDESK = WebhookMapping(
    channel="phone",
    records="tickets",
    event="'Ticket Created'",
    user_id="requester.external_id",
    timestamp="created_at",
    message_id="id",
    properties="{subject: subject, priority: priority}",
)


def decode(raw: bytes) -> dict[str, object]:
    value: dict[str, object] = msgspec.json.decode(raw)
    return value


def test_records_are_mapped_by_jmespath() -> None:
    payload = {
        "tickets": [
            {
                "id": 17,
                "subject": "Password",
                "priority": "high",
                "created_at": "2024-01-01T10:00:00Z",
                "requester": {"external_id": "u1"},
            },
            {
                "id": 18,
                "subject": "Invoice",
                "priority": "low",
                "created_at": "2024-01-01T11:00:00Z",
                "requester": {"external_id": "u2"},
            },
        ]
    }
    first, second = (decode(m) for m in map_payload(payload, ZENDESK, source="zendesk"))
    assert first == {
        "type": "track",
        "event": "Ticket Created",
        "userId": "u1",
        "messageId": 17,
        "timestamp": "2024-01-01T10:00:00Z",
        "properties": {"subject": "Password", "priority": "high"},
        "context": {"channel": "phone", "webhook": "zendesk"},
    }
    assert second["userId"] == "u2"


def test_message_id_defaults_to_a_content_hash_so_retries_dedupe() -> None:
    mapping = WebhookMapping(channel="email", event="event", user_id="email")
    one = decode(map_payload({"event": "open", "email": "a@b"}, mapping, source="mailer")[0])
    again = decode(map_payload({"email": "a@b", "event": "open"}, mapping, source="mailer")[0])
    other = decode(map_payload({"event": "click", "email": "a@b"}, mapping, source="mailer")[0])
    assert one["messageId"] == again["messageId"]
    assert one["messageId"] != other["messageId"]
    assert str(one["messageId"]).startswith("wh-")
    assert one["properties"] == {"event": "open", "email": "a@b"}


def test_a_list_payload_is_one_record_per_item() -> None:
    mapping = WebhookMapping(channel="email", event="event", user_id="email", properties=None)
    messages = map_payload([{"event": "a", "email": "x"}, {"event": "b", "email": "y"}], mapping, source="m")
    assert [decode(m)["event"] for m in messages] == ["a", "b"]


def test_records_must_select_a_list() -> None:
    with pytest.raises(InvalidInput, match="did not select a list"):
        map_payload({"tickets": {}}, ZENDESK, source="zendesk")


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ConfigError, match=r"webhooks\.zendesk\.event: invalid JMESPath"):
        parse_config("webhooks:\n  zendesk:\n    channel: phone\n    event: 'a[['\n    user_id: x\n")
    with pytest.raises(ConfigError, match=r"webhooks\.zendesk\.channel"):
        parse_config("webhooks:\n  zendesk:\n    channel: Phone!\n    event: x\n    user_id: x\n")
    with pytest.raises(ConfigError, match="map `user_id` or `anonymous_id`"):
        parse_config("webhooks:\n  zendesk:\n    channel: phone\n    event: x\n")
    with pytest.raises(ConfigError, match=r"cfg.yaml:\d+:\d+: not valid YAML"):
        parse_config("webhooks:\n  - [unclosed\n", filename="cfg.yaml")
    with pytest.raises(ConfigError, match=r"Object contains unknown field `chanel` - at `\$.webhooks.zendesk`"):
        parse_config("webhooks:\n  zendesk:\n    chanel: phone\n")
    assert parse_config("").webhooks == {}
