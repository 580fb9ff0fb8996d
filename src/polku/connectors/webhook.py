"""Inbound webhooks: arbitrary JSON mapped to Segment messages by a declarative
``WebhookMapping`` (JMESPath expressions), so that a call-center system or an email
provider can post its own payloads. Pure: payload in, message bytes out."""

from __future__ import annotations

import hashlib
from functools import lru_cache
from typing import Any, Final

import jmespath
import msgspec
from jmespath.parser import ParsedResult

from polku.core.errors import InvalidInput
from polku.core.workspace import WebhookMapping

_encode: Final = msgspec.json.Encoder(order="sorted").encode

FIELDS: Final = (
    ("event", "event"),
    ("name", "name"),
    ("user_id", "userId"),
    ("anonymous_id", "anonymousId"),
    ("group_id", "groupId"),
    ("message_id", "messageId"),
    ("timestamp", "timestamp"),
    ("properties", "properties"),
    ("traits", "traits"),
    ("context", "context"),
)


@lru_cache(maxsize=1024)
def _compiled(expression: str) -> ParsedResult:
    return jmespath.compile(expression)


def _search(expression: str | None, record: Any) -> Any:
    if expression is None:
        return None
    return _compiled(expression).search(record)


def map_payload(payload: Any, mapping: WebhookMapping, *, source: str) -> list[bytes]:
    """One Segment message (JSON bytes) per record of the payload. Values the
    mapping finds are passed on as they are; validation (types, required fields)
    happens in ``normalize`` like for every other message, so a record that maps
    badly is quarantined with the reason, never dropped."""
    if mapping.records is not None:
        records = _search(mapping.records, payload)
        if not isinstance(records, list):
            raise InvalidInput(
                f"webhook {source!r}: `records` ({mapping.records}) did not select a list in the payload",
                code="invalid_body",
            )
    elif isinstance(payload, list):
        records = payload
    else:
        records = [payload]
    messages: list[bytes] = []
    for record in records:
        message: dict[str, Any] = {"type": mapping.type}
        for field, wire_name in FIELDS:
            value = _search(getattr(mapping, field), record)
            if value is not None:
                message[wire_name] = value
        if "messageId" not in message:
            # Deterministic, so a webhook the sender retries is stored once.
            digest = hashlib.sha256(source.encode() + b"\0" + _encode(record)).hexdigest()
            message["messageId"] = f"wh-{digest[:32]}"
        context = message.get("context")
        if not isinstance(context, dict):
            context = {} if context is None else {"value": context}
        context.setdefault("channel", mapping.channel)
        context.setdefault("webhook", source)
        message["context"] = context
        messages.append(_encode(message))
    return messages
