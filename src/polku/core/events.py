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

SYSTEM_CHANNEL: Final = "system"
"""The channel of events polku writes into the log itself (segment changes, merges);
no source may send on it, so the log can tell them apart."""

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
    received_at: str | None = None
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
    # isoformat, unlike strftime("%Y"), writes years before 1000 with four digits.
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# Times inside ``normalize`` are integer milliseconds since the epoch: datetime
# arithmetic, ``replace`` and ``isoformat`` cost ~1 µs each here, several per event,
# and ingestion runs them for every event. Texts are built from a per-second
# prefix cache (events of one batch share seconds), so a canonical time costs two
# dict lookups either way. The caches are memos of pure functions.
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_DAY_MS: Final = 86_400_000
_YEAR_MS: Final = 365 * _DAY_MS
_MIN_MS: Final = (datetime.min.replace(tzinfo=UTC) - _EPOCH) // timedelta(milliseconds=1)
_MAX_MS: Final = (datetime.max.replace(tzinfo=UTC) - _EPOCH) // timedelta(milliseconds=1)
_MILLIS_OF: Final = {f"{n:03d}": n for n in range(1000)}
_MILLIS_TEXT: Final = tuple(f".{n:03d}Z" for n in range(1000))
_SECONDS_CACHED: Final = 8192
_second_text: dict[int, str] = {}  # epoch second -> "YYYY-MM-DDTHH:MM:SS"
_second_ms: dict[str, int] = {}  # "YYYY-MM-DDTHH:MM:SS" -> epoch milliseconds


def _millis(moment: datetime) -> int:
    """Milliseconds since the epoch of an aware time, truncated like ``format_time``."""
    delta = moment - _EPOCH
    return delta.days * _DAY_MS + delta.seconds * 1000 + delta.microseconds // 1000


def format_millis(ms: int) -> str:
    """``format_time`` of a time given in milliseconds since the epoch."""
    second, millis = divmod(ms, 1000)
    prefix = _second_text.get(second)
    if prefix is None:
        prefix = (_EPOCH + timedelta(seconds=second)).isoformat()[:19]
        if len(_second_text) >= _SECONDS_CACHED:
            _second_text.clear()
            _second_ms.clear()
        _second_text[second] = prefix
        _second_ms[prefix] = second * 1000
    return prefix + _MILLIS_TEXT[millis]


_last_parsed: list[tuple[str, int, str]] = [("", 0, "")]


def _parse_millis(value: str, field: str) -> tuple[int, str]:
    """``parse_time`` in milliseconds (truncated), with the time's canonical text."""
    last = _last_parsed[0]
    if value == last[0]:  # a batch's `sentAt`, read again for each of its items
        return last[1], last[2]
    if len(value) == 24 and value[23] == "Z" and value[19] == ".":
        second_ms = _second_ms.get(value[:19])
        if second_ms is not None:
            millis = _MILLIS_OF.get(value[20:23])
            if millis is not None:
                ms = second_ms + millis
                _last_parsed[0] = (value, ms, value)
                return ms, value
    ms = _millis(parse_time(value, field))
    text = format_millis(ms)
    _last_parsed[0] = (value, ms, text)
    return ms, text


def time_millis(value: str) -> int:
    """Milliseconds since the epoch of a stored time (as ``format_time`` writes them)."""
    return _parse_millis(value, "timestamp")[0]


def parse_time(value: str, field: str) -> datetime:
    """ISO 8601, returned in UTC; a time without an offset is read as UTC."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise _Invalid("invalid_timestamp", f"`{field}` is not an ISO 8601 time: {value[:64]!r}") from None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # e.g. 9999-12-31T23:59:59-01:00 is in the year 10000 in UTC
        raise _Invalid("invalid_timestamp", f"`{field}` is out of range: {value[:64]!r}") from None


def _id(value: Id | None, field: str) -> str | None:
    if value is None:
        return None
    if type(value) is str:
        text = value
    elif isinstance(value, bool):
        raise _Invalid("invalid_field", f"`{field}` must be a string or a number")
    else:
        text = str(value)
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
    if channel == SYSTEM_CHANNEL:
        raise _Invalid("invalid_channel", "`context.channel` 'system' is reserved for events polku writes itself")
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


_last_received: list[tuple[datetime, int, str]] = [(_EPOCH, 0, format_millis(0))]


def _received(moment: datetime) -> tuple[int, str]:
    """The receive time in milliseconds and as text; one batch shares one."""
    cached = _last_received[0]
    if cached[0] is not moment:
        ms = _millis(moment)
        cached = (moment, ms, format_millis(ms))
        _last_received[0] = cached
    return cached[1], cached[2]


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

    # A message that carries `receivedAt` was received by a collector before (a polku
    # export, a Segment archive): its `timestamp` is already corrected, and a second
    # correction against today's receive time would move it to the import date.
    already_received = message.received_at is not None and bool(message.timestamp)
    original_text = (
        message.original_timestamp if already_received else (message.timestamp or message.original_timestamp)
    )
    sent_text = message.sent_at or envelope.sent_at
    original_ms, original_iso = _parse_millis(original_text, "timestamp") if original_text else (0, None)
    sent_ms, sent_iso = _parse_millis(sent_text, "sentAt") if sent_text else (0, None)
    # Computed at the millisecond precision the event is stored with, so that the
    # stored fields satisfy timestamp = receivedAt - (sentAt - originalTimestamp) exactly.
    received_ms, received_iso = _received(received_at)
    if already_received:
        timestamp_ms, timestamp_iso = _parse_millis(message.timestamp or "", "timestamp")
    elif original_iso is not None and sent_iso is not None:
        # Clock-skew correction as Segment defines it: the client's clock may be
        # wrong, but the gap between "happened" and "sent" is measured on it alone.
        timestamp_ms = received_ms - (sent_ms - original_ms)
        if not _MIN_MS <= timestamp_ms <= _MAX_MS:
            raise _Invalid("invalid_timestamp", "`timestamp` corrected by `sentAt` is out of range")
        timestamp_iso = None
    elif original_iso is not None:
        timestamp_ms, timestamp_iso = original_ms, original_iso
    else:
        timestamp_ms, timestamp_iso = received_ms, received_iso
    if not 0 <= timestamp_ms <= received_ms + _YEAR_MS:
        raise _Invalid("invalid_timestamp", "`timestamp` is before 1970 or more than a year in the future")

    return Event(
        message_id=_id(message.message_id, "messageId") or new_message_id(),
        type=kind,
        channel=channel,
        source=source,
        timestamp=timestamp_iso or format_millis(timestamp_ms),
        received_at=received_iso,
        original_timestamp=original_iso,
        sent_at=sent_iso,
        user_id=_id(message.user_id, "userId") if message.user_id is not None else None,
        anonymous_id=_id(message.anonymous_id, "anonymousId") if message.anonymous_id is not None else None,
        event=message.event if kind == "track" else None,
        name=message.name,
        category=message.category,
        group_id=_id(message.group_id, "groupId") if message.group_id is not None else None,
        previous_id=_id(message.previous_id, "previousId") if message.previous_id is not None else None,
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
    if envelope is EMPTY_ENVELOPE and message_type is None and b"writeKey" not in raw:
        return bytes(raw)
    try:
        item = _dict_decoder.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return bytes(raw)
    # A write key is a secret: the quarantine (readable by admins) never keeps one.
    item.pop("writeKey", None)
    if message_type is not None:
        item["type"] = message_type
    inner_context = item.get("context")
    # A context that is not an object is kept as sent: it is what the rejection names.
    if envelope.context is not None and (inner_context is None or isinstance(inner_context, dict)):
        item["context"] = _merge(envelope.context, inner_context)
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
    except UnicodeDecodeError as error:  # msgspec raises it for invalid UTF-8 inside strings
        code, reason = "malformed_json", f"the message is not valid UTF-8: {error}"
    except RecursionError:
        code, reason = "malformed_json", "the message is nested too deeply"
    except _Invalid as error:
        code, reason = error.code, error.reason
    return Rejection(code=code, reason=reason, body=_rejected_body(bytes(raw), envelope, message_type), index=index)
