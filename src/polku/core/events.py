"""Segment-compatible messages: the wire shape, the stored shape and the pure
function that turns one into the other.

``normalize`` validates one incoming message and returns either an ``Event`` (what
the log stores) or a ``Rejection`` (what the quarantine keeps). It reads no clock and
draws no randomness: the receive time and the id generator are passed in.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

import msgspec

from polku.core.limits import MAX_CHANNEL_CHARS, MAX_EVENT_BYTES, MAX_ID_CHARS

MessageType = Literal["track", "identify", "page", "screen", "group", "alias"]
MESSAGE_TYPES: Final = frozenset({"track", "identify", "page", "screen", "group", "alias"})

KNOWN_CHANNELS: Final = (
    "web",
    "app",
    "email",
    "sms",
    "push",
    "phone",
    "chat",
    "store",
    "crm",
    "billing",
    "server",
    "other",
)
"""The channels polku names in its docs and dashboards; any other name matching
``CHANNEL_PATTERN`` is accepted too, so a new channel needs no release."""

CHANNEL_PATTERN: Final = re.compile(rf"[a-z][a-z0-9_\-]{{0,{MAX_CHANNEL_CHARS - 1}}}")

Id = str | int


class RawMessage(msgspec.Struct, rename="camel", omit_defaults=True):
    """A message as an SDK sends it. Unknown top-level fields are ignored (Segment's
    spec fields are all here); every field is optional so that validation can name
    what is missing instead of failing the decode."""

    type: str | None = None
    message_id: Id | None = None
    user_id: Id | None = None
    anonymous_id: Id | None = None
    event: str | None = None
    name: str | None = None
    category: str | None = None
    properties: dict[str, Any] | None = None
    traits: dict[str, Any] | None = None
    context: dict[str, Any] | None = None
    integrations: dict[str, Any] | None = None
    group_id: Id | None = None
    previous_id: Id | None = None
    timestamp: str | None = None
    original_timestamp: str | None = None
    sent_at: str | None = None
    write_key: str | None = None


class BatchEnvelope(msgspec.Struct, rename="camel"):
    """``/v1/batch``: items stay raw so one bad item cannot fail the others."""

    batch: list[msgspec.Raw]
    context: dict[str, Any] | None = None
    integrations: dict[str, Any] | None = None
    sent_at: str | None = None
    write_key: str | None = None


class Event(msgspec.Struct, rename="camel", omit_defaults=True, kw_only=True):
    """A validated message as the event log stores and exports it (Segment's
    shape plus ``channel`` and ``source``). Schema evolution: new fields get
    defaults; existing fields never change type."""

    message_id: str
    type: str
    channel: str
    source: str
    timestamp: str
    received_at: str
    original_timestamp: str | None = None
    sent_at: str | None = None
    user_id: str | None = None
    anonymous_id: str | None = None
    event: str | None = None
    name: str | None = None
    category: str | None = None
    group_id: str | None = None
    previous_id: str | None = None
    properties: dict[str, Any] | None = None
    traits: dict[str, Any] | None = None
    context: dict[str, Any] | None = None
    integrations: dict[str, Any] | None = None


class Rejection(msgspec.Struct, kw_only=True):
    """Why one message was refused; ``body`` is what the client sent (with batch
    context merged in) so that it can be corrected and re-submitted."""

    code: str
    reason: str
    body: bytes
    index: int = 0


class Envelope(msgspec.Struct, frozen=True, kw_only=True):
    """Batch-level fields that apply to every item."""

    context: dict[str, Any] | None = None
    integrations: dict[str, Any] | None = None
    sent_at: str | None = None


EMPTY_ENVELOPE: Final = Envelope()


class _Invalid(Exception):
    def __init__(self, code: str, reason: str) -> None:
        self.code = code
        self.reason = reason


def format_time(moment: datetime) -> str:
    """ISO 8601 in UTC with millisecond precision and a ``Z``, as Segment writes it."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _to_millisecond(moment: datetime) -> datetime:
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def parse_time(value: str, field: str) -> datetime:
    """ISO 8601; a time without an offset is read as UTC."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise _Invalid("invalid_timestamp", f"`{field}` is not an ISO 8601 time: {value[:64]!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def _id(value: Id | None, field: str) -> str | None:
    if value is None:
        return None
    text = str(value) if not isinstance(value, bool) else None
    if text is None:
        raise _Invalid("invalid_field", f"`{field}` must be a string or a number")
    if len(text) > MAX_ID_CHARS:
        raise _Invalid("limit_exceeded", f"`{field}` is longer than {MAX_ID_CHARS} characters")
    return text or None


def _merge(outer: dict[str, Any] | None, inner: dict[str, Any] | None) -> dict[str, Any] | None:
    if not outer:
        return inner
    if not inner:
        return dict(outer)
    return {**outer, **inner}


def channel_of(context: dict[str, Any] | None, default_channel: str) -> str:
    if context is None or "channel" not in context:
        return default_channel
    channel = context["channel"]
    if not isinstance(channel, str) or not CHANNEL_PATTERN.fullmatch(channel):
        raise _Invalid(
            "invalid_channel",
            "`context.channel` must be a lower-case name like 'web' or 'phone' "
            f"(letters, digits, '-', '_'; at most {MAX_CHANNEL_CHARS} characters)",
        )
    return channel


def _validate(message: RawMessage, message_type: str) -> None:
    if message_type not in MESSAGE_TYPES:
        raise _Invalid(
            "invalid_type", f"unknown message type {message_type[:32]!r}; expected one of {sorted(MESSAGE_TYPES)}"
        )
    if message.user_id in (None, "") and message.anonymous_id in (None, ""):
        raise _Invalid("missing_identity", "a message needs `userId` or `anonymousId`")
    if message_type == "track" and not message.event:
        raise _Invalid("missing_field", "a track message needs a non-empty `event`")
    if message_type == "alias" and message.previous_id in (None, ""):
        raise _Invalid("missing_field", "an alias message needs `previousId`")
    if message_type == "group" and message.group_id in (None, ""):
        raise _Invalid("missing_field", "a group message needs `groupId`")
    if message.event is not None and len(message.event) > MAX_ID_CHARS:
        raise _Invalid("limit_exceeded", f"`event` is longer than {MAX_ID_CHARS} characters")


def normalize(
    message: RawMessage,
    *,
    message_type: str | None,
    envelope: Envelope,
    received_at: datetime,
    default_channel: str,
    source: str,
    new_message_id: Callable[[], str],
) -> Event:
    """Validate one message and compute its server-side fields.

    ``message_type`` comes from the endpoint (``/v1/track``) or, for batch items and
    files, from the message itself (``None``). Raises ``_Invalid`` (use
    ``normalize_or_reject`` from outside this module).
    """
    kind = message_type or message.type or ""
    _validate(message, kind)
    context = _merge(envelope.context, message.context)
    channel = channel_of(context, default_channel)

    original_text = message.timestamp or message.original_timestamp
    sent_text = message.sent_at or envelope.sent_at
    original = _to_millisecond(parse_time(original_text, "timestamp")) if original_text else None
    sent = _to_millisecond(parse_time(sent_text, "sentAt")) if sent_text else None
    # Computed at the millisecond precision the event is stored with, so that the
    # stored fields satisfy timestamp = receivedAt - (sentAt - originalTimestamp) exactly.
    received_at = _to_millisecond(received_at)
    if original is not None and sent is not None:
        # Clock-skew correction as Segment defines it: the client's clock may be
        # wrong, but the gap between "happened" and "sent" is measured on it alone.
        timestamp = received_at - (sent - original)
    elif original is not None:
        timestamp = original
    else:
        timestamp = received_at
    if not (datetime(1970, 1, 1, tzinfo=UTC) <= timestamp <= received_at + timedelta(days=365)):
        raise _Invalid("invalid_timestamp", "`timestamp` is before 1970 or more than a year in the future")

    return Event(
        message_id=_id(message.message_id, "messageId") or new_message_id(),
        type=kind,
        channel=channel,
        source=source,
        timestamp=format_time(timestamp),
        received_at=format_time(received_at),
        original_timestamp=format_time(original) if original is not None else None,
        sent_at=format_time(sent) if sent is not None else None,
        user_id=_id(message.user_id, "userId"),
        anonymous_id=_id(message.anonymous_id, "anonymousId"),
        event=message.event if kind == "track" else None,
        name=message.name,
        category=message.category,
        group_id=_id(message.group_id, "groupId"),
        previous_id=_id(message.previous_id, "previousId"),
        properties=message.properties,
        traits=message.traits,
        context=context,
        integrations=_merge(envelope.integrations, message.integrations),
    )


_message_decoder: Final = msgspec.json.Decoder(RawMessage)
_dict_decoder: Final = msgspec.json.Decoder(dict[str, Any])
_encoder: Final = msgspec.json.Encoder()


def _rejected_body(raw: bytes, envelope: Envelope, message_type: str | None) -> bytes:
    """The item with the batch-level fields (and the endpoint's type) merged in, so
    that it can be re-submitted on its own. Bytes that are not a JSON object are
    kept as they came."""
    if envelope is EMPTY_ENVELOPE and message_type is None:
        return bytes(raw)
    try:
        item = _dict_decoder.decode(raw)
    except msgspec.DecodeError:
        return bytes(raw)
    if message_type is not None:
        item["type"] = message_type
    if envelope.context is not None:
        item["context"] = _merge(
            envelope.context, item.get("context") if isinstance(item.get("context"), dict) else None
        )
    if envelope.integrations is not None and "integrations" not in item:
        item["integrations"] = envelope.integrations
    if envelope.sent_at is not None and "sentAt" not in item:
        item["sentAt"] = envelope.sent_at
    return _encoder.encode(item)


def normalize_or_reject(
    raw: bytes | msgspec.Raw,
    *,
    index: int = 0,
    message_type: str | None = None,
    envelope: Envelope = EMPTY_ENVELOPE,
    received_at: datetime,
    default_channel: str,
    source: str,
    new_message_id: Callable[[], str],
) -> Event | Rejection:
    """Decode and validate one message's JSON bytes: an ``Event`` or a ``Rejection``."""
    if len(raw) > MAX_EVENT_BYTES:
        return Rejection(
            code="limit_exceeded",
            reason=f"message is {len(raw)} bytes; the limit is {MAX_EVENT_BYTES} bytes (32 KB)",
            body=_rejected_body(bytes(raw), envelope, message_type),
            index=index,
        )
    try:
        message = _message_decoder.decode(raw)
        return normalize(
            message,
            message_type=message_type,
            envelope=envelope,
            received_at=received_at,
            default_channel=default_channel,
            source=source,
            new_message_id=new_message_id,
        )
    except msgspec.ValidationError as error:
        code, reason = "invalid_field", str(error)
    except msgspec.DecodeError as error:
        code, reason = "malformed_json", str(error)
    except _Invalid as error:
        code, reason = error.code, error.reason
    return Rejection(code=code, reason=reason, body=_rejected_body(bytes(raw), envelope, message_type), index=index)
