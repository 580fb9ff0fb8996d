"""``normalize_or_reject``: the pure decoder every way in (HTTP, files, webhooks)
goes through. Examples pin each rule; hypothesis checks that no input makes it
raise and that valid messages always come through intact."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from polku.core.events import MESSAGE_TYPES, Envelope, Event, Rejection, normalize_or_reject
from polku.core.limits import MAX_CHANNEL_CHARS, MAX_EVENT_BYTES, MAX_ID_CHARS

RECEIVED_AT = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)

JsonObject = dict[str, Any]


def id_factory() -> Callable[[], str]:
    counter = itertools.count(1)
    return lambda: f"generated-{next(counter)}"


def decode(
    message: JsonObject | bytes,
    *,
    message_type: str | None = None,
    envelope: Envelope | None = None,
    received_at: datetime = RECEIVED_AT,
    default_channel: str = "web",
    index: int = 0,
) -> Event | Rejection:
    raw = message if isinstance(message, bytes) else msgspec.json.encode(message)
    return normalize_or_reject(
        raw,
        index=index,
        message_type=message_type,
        envelope=envelope or Envelope(),
        received_at=received_at,
        default_channel=default_channel,
        source="website",
        new_message_id=id_factory(),
    )


def accepted(message: JsonObject | bytes, **options: Any) -> Event:
    outcome = decode(message, **options)
    assert isinstance(outcome, Event), outcome
    return outcome


def rejected(message: JsonObject | bytes, **options: Any) -> Rejection:
    outcome = decode(message, **options)
    assert isinstance(outcome, Rejection), outcome
    return outcome


def parse(text: str | None) -> datetime:
    assert text is not None
    return datetime.fromisoformat(text)


TRACK: JsonObject = {"type": "track", "userId": "u1", "event": "Order Completed", "messageId": "m1"}


# --- timestamps ----------------------------------------------------------------


def test_timestamp_is_corrected_for_client_clock_skew() -> None:
    # The client's clock is two hours slow; it sent the event 5 s after it happened.
    event = accepted({**TRACK, "timestamp": "2025-06-01T10:00:00Z", "sentAt": "2025-06-01T10:00:05Z"})
    assert event.timestamp == "2025-06-01T11:59:55.000Z"
    assert event.original_timestamp == "2025-06-01T10:00:00.000Z"
    assert event.sent_at == "2025-06-01T10:00:05.000Z"
    assert event.received_at == "2025-06-01T12:00:00.000Z"


def test_skew_correction_uses_the_batch_sent_at_unless_the_item_has_its_own() -> None:
    envelope = Envelope(sent_at="2025-06-01T10:00:10Z")
    from_batch = accepted({**TRACK, "timestamp": "2025-06-01T10:00:00Z"}, envelope=envelope)
    assert from_batch.timestamp == "2025-06-01T11:59:50.000Z"
    own = accepted({**TRACK, "timestamp": "2025-06-01T10:00:00Z", "sentAt": "2025-06-01T10:00:01Z"}, envelope=envelope)
    assert own.timestamp == "2025-06-01T11:59:59.000Z"


def test_without_sent_at_the_client_timestamp_is_kept() -> None:
    event = accepted({**TRACK, "timestamp": "2025-05-31T08:30:00.250Z"})
    assert event.timestamp == "2025-05-31T08:30:00.250Z"
    assert event.sent_at is None


def test_original_timestamp_is_read_when_timestamp_is_absent() -> None:
    event = accepted({**TRACK, "originalTimestamp": "2025-06-01T11:00:00Z", "sentAt": "2025-06-01T11:00:02Z"})
    assert event.original_timestamp == "2025-06-01T11:00:00.000Z"
    assert event.timestamp == "2025-06-01T11:59:58.000Z"


def test_without_any_timestamp_the_receive_time_is_used() -> None:
    event = accepted(TRACK)
    assert event.timestamp == event.received_at == "2025-06-01T12:00:00.000Z"
    assert event.original_timestamp is None


def test_offsets_are_converted_to_utc_and_naive_times_read_as_utc() -> None:
    assert accepted({**TRACK, "timestamp": "2025-06-01T13:00:00+02:00"}).timestamp == "2025-06-01T11:00:00.000Z"
    assert accepted({**TRACK, "timestamp": "2025-06-01T11:00:00"}).timestamp == "2025-06-01T11:00:00.000Z"


def test_times_are_stored_at_millisecond_precision() -> None:
    event = accepted(
        {**TRACK, "timestamp": "2025-06-01T10:00:00.123999Z", "sentAt": "2025-06-01T10:00:00.200999Z"},
        received_at=datetime(2025, 6, 1, 12, 0, 0, 500999, tzinfo=UTC),
    )
    assert event.original_timestamp == "2025-06-01T10:00:00.123Z"
    assert event.sent_at == "2025-06-01T10:00:00.200Z"
    assert event.received_at == "2025-06-01T12:00:00.500Z"
    assert event.timestamp == "2025-06-01T12:00:00.423Z"


def test_times_before_the_year_1000_keep_four_digit_years() -> None:
    # The correction makes the stored timestamp sane; the client's own fields are
    # still stored, and must stay ISO 8601 so that an export re-imports.
    event = accepted({**TRACK, "timestamp": "0800-01-01T00:00:00Z", "sentAt": "0800-01-01T00:00:01Z"})
    assert event.original_timestamp == "0800-01-01T00:00:00.000Z"
    assert event.timestamp == "2025-06-01T11:59:59.000Z"


@pytest.mark.parametrize(
    "times",
    [
        {"timestamp": "not a time"},
        {"sentAt": "yesterday", "timestamp": "2025-06-01T10:00:00Z"},
        {"timestamp": "1969-12-31T23:59:59Z"},
        {"timestamp": "2026-06-02T12:00:00Z"},
        # The correction moves the timestamp out of range.
        {"timestamp": "2025-06-01T10:00:00Z", "sentAt": "1990-01-01T00:00:00Z"},
        # Edges of the datetime range: these must be refused, not overflow.
        {"timestamp": "0001-01-01T00:00:00+01:00", "sentAt": "0001-01-01T00:00:00+01:00"},
        {"timestamp": "0001-01-01T00:00:00Z", "sentAt": "9999-12-31T23:59:59Z"},
        {"timestamp": "9999-12-31T23:59:59Z", "sentAt": "0001-01-01T00:00:00Z"},
        {"timestamp": "9999-12-31T23:59:59-01:00"},
        {"sentAt": "9999-12-31T23:59:59-01:00"},
        {"timestamp": "2025-06-01T10:00:00Z", "sentAt": "9999-12-31T23:59:59-01:00"},
    ],
)
def test_bad_timestamps_are_rejected(times: JsonObject) -> None:
    rejection = rejected({**TRACK, **times})
    assert rejection.code == "invalid_timestamp"


def test_timestamp_up_to_a_year_ahead_is_accepted() -> None:
    # A client clock that is months fast, without sentAt to correct it.
    assert accepted({**TRACK, "timestamp": "2026-05-31T12:00:00Z"}).timestamp == "2026-05-31T12:00:00.000Z"


# --- channel ---------------------------------------------------------------------


def test_channel_comes_from_context_or_else_the_source_default() -> None:
    assert accepted({**TRACK, "context": {"channel": "phone"}}, default_channel="web").channel == "phone"
    assert accepted(TRACK, default_channel="store").channel == "store"
    # A channel polku does not list is fine if it is a plain name.
    assert accepted({**TRACK, "context": {"channel": "kiosk-2"}}).channel == "kiosk-2"


@pytest.mark.parametrize("channel", ["Web", "", "2fa", "e mail", "x" * (MAX_CHANNEL_CHARS + 1), 7, None, ["web"]])
def test_malformed_channels_are_rejected(channel: object) -> None:
    rejection = rejected({**TRACK, "context": {"channel": channel}})
    assert rejection.code == "invalid_channel"
    assert "context.channel" in rejection.reason


def test_longest_channel_name_is_accepted() -> None:
    name = "c" * MAX_CHANNEL_CHARS
    assert accepted({**TRACK, "context": {"channel": name}}).channel == name


# --- batch context -----------------------------------------------------------------


def test_batch_context_and_integrations_merge_into_each_item_with_the_item_winning() -> None:
    envelope = Envelope(
        context={"channel": "app", "library": {"name": "analytics-python"}, "locale": "fi-FI"},
        integrations={"All": True, "Mixpanel": False},
    )
    event = accepted(
        {**TRACK, "context": {"locale": "sv-FI", "ip": "10.0.0.1"}, "integrations": {"Mixpanel": True}},
        envelope=envelope,
    )
    assert event.context == {
        "channel": "app",
        "library": {"name": "analytics-python"},
        "locale": "sv-FI",
        "ip": "10.0.0.1",
    }
    assert event.integrations == {"All": True, "Mixpanel": True}
    assert event.channel == "app"


def test_item_channel_overrides_the_batch_channel() -> None:
    event = accepted({**TRACK, "context": {"channel": "email"}}, envelope=Envelope(context={"channel": "app"}))
    assert event.channel == "email"


def test_item_without_context_gets_a_copy_of_the_batch_context() -> None:
    batch_context = {"channel": "chat"}
    event = accepted(TRACK, envelope=Envelope(context=batch_context))
    assert event.context == {"channel": "chat"}
    assert event.context is not batch_context


# --- fields ------------------------------------------------------------------------


def test_message_id_is_kept_or_generated() -> None:
    assert accepted(TRACK).message_id == "m1"
    assert accepted({**TRACK, "messageId": 42}).message_id == "42"
    assert accepted({**TRACK, "messageId": None}).message_id == "generated-1"
    assert accepted({**TRACK, "messageId": ""}).message_id == "generated-1"


def test_numeric_identifiers_become_strings() -> None:
    event = accepted({"type": "group", "userId": 7, "anonymousId": 8, "groupId": 9})
    assert (event.user_id, event.anonymous_id, event.group_id) == ("7", "8", "9")


def test_endpoint_type_wins_over_the_body_type() -> None:
    event = accepted({"type": "track", "userId": "u", "name": "Home", "event": "ignored"}, message_type="page")
    assert event.type == "page"
    assert event.name == "Home"
    assert event.event is None


def test_every_message_type_with_its_required_fields_is_accepted() -> None:
    bodies: dict[str, JsonObject] = {
        "track": {"event": "Clicked"},
        "identify": {"traits": {"plan": "pro"}},
        "page": {"name": "Pricing"},
        "screen": {"name": "Settings"},
        "group": {"groupId": "acme"},
        "alias": {"previousId": "anon-1"},
    }
    assert set(bodies) == MESSAGE_TYPES
    for kind, fields in bodies.items():
        event = accepted({"type": kind, "anonymousId": "a1", **fields})
        assert event.type == kind
        assert event.source == "website"


def test_unknown_fields_are_ignored() -> None:
    event = accepted({**TRACK, "version": 2, "_metadata": {"bundled": []}})
    assert "version" not in msgspec.json.decode(msgspec.json.encode(event))


# --- rejections --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ({"type": "track", "event": "E"}, "missing_identity"),
        ({"type": "track", "event": "E", "userId": "", "anonymousId": ""}, "missing_identity"),
        ({"type": "track", "event": "E", "userId": None}, "missing_identity"),
        ({"type": "purchase", "userId": "u"}, "invalid_type"),
        ({"userId": "u", "event": "E"}, "invalid_type"),
        ({"type": "track", "userId": "u"}, "missing_field"),
        ({"type": "track", "userId": "u", "event": ""}, "missing_field"),
        ({"type": "alias", "userId": "u"}, "missing_field"),
        ({"type": "group", "userId": "u"}, "missing_field"),
        ({"type": "track", "userId": 1.5, "event": "E"}, "invalid_field"),
        ({"type": "track", "userId": True, "event": "E"}, "invalid_field"),
        ({"type": "track", "userId": ["u"], "event": "E"}, "invalid_field"),
        ({"type": "track", "userId": "u", "event": 5}, "invalid_field"),
        ({"type": "track", "userId": "u", "event": "E", "properties": [1, 2]}, "invalid_field"),
        ({"type": "track", "userId": "u", "event": "E", "context": "web"}, "invalid_field"),
        ({"type": "track", "userId": "u", "event": "E", "timestamp": 1717236000}, "invalid_field"),
        ({"type": "track", "userId": "u" * (MAX_ID_CHARS + 1), "event": "E"}, "limit_exceeded"),
        ({"type": "track", "userId": "u", "event": "E" * (MAX_ID_CHARS + 1)}, "limit_exceeded"),
        ({"type": "track", "userId": "u", "event": "E", "messageId": "m" * (MAX_ID_CHARS + 1)}, "limit_exceeded"),
        ({"type": "track", "userId": "u", "event": "E", "context": {"channel": "WEB"}}, "invalid_channel"),
    ],
)
def test_each_invalid_message_is_rejected_with_its_code(message: JsonObject, code: str) -> None:
    rejection = rejected(message, index=3)
    assert rejection.code == code
    assert rejection.reason
    assert rejection.index == 3
    assert msgspec.json.decode(rejection.body) == message


def test_message_over_32_kb_is_rejected_before_decoding() -> None:
    message = {**TRACK, "properties": {"blob": "x" * MAX_EVENT_BYTES}}
    rejection = rejected(message)
    assert rejection.code == "limit_exceeded"
    assert "32 KB" in rejection.reason
    assert msgspec.json.decode(rejection.body) == message


def test_message_of_exactly_32_kb_is_accepted() -> None:
    message = {**TRACK, "properties": {"blob": ""}}
    padding = MAX_EVENT_BYTES - len(msgspec.json.encode(message))
    message["properties"] = {"blob": "x" * padding}
    assert len(msgspec.json.encode(message)) == MAX_EVENT_BYTES
    assert accepted(message).properties == {"blob": "x" * padding}


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"{",
        b'{"type": "track",}',
        b"nul",
        b'{"userId": "u", "event": "\xff"}',
        b'{"userId": "\xed\xa0\x80", "type": "identify"}',
        b'{"type": "identify", "userId": "u", "traits": {"\xc3\x28": 1}}',
    ],
)
def test_bytes_that_are_not_json_are_rejected_as_malformed(raw: bytes) -> None:
    rejection = rejected(raw)
    assert rejection.code == "malformed_json"
    assert rejection.body == raw


@pytest.mark.parametrize("raw", [b"[]", b"5", b'"track"', b"null"])
def test_json_that_is_not_an_object_is_rejected(raw: bytes) -> None:
    rejection = rejected(raw, envelope=Envelope(context={"channel": "app"}))
    assert rejection.code == "invalid_field"
    assert rejection.body == raw


def test_rejected_body_carries_the_endpoint_type_and_batch_fields_for_resubmission() -> None:
    envelope = Envelope(
        context={"channel": "app", "locale": "fi-FI"}, integrations={"All": False}, sent_at="2025-06-01T11:59:00Z"
    )
    rejection = rejected({"event": "E", "context": {"locale": "sv-FI"}}, message_type="track", envelope=envelope)
    assert rejection.code == "missing_identity"
    assert msgspec.json.decode(rejection.body) == {
        "type": "track",
        "event": "E",
        "context": {"channel": "app", "locale": "sv-FI"},
        "integrations": {"All": False},
        "sentAt": "2025-06-01T11:59:00Z",
    }


def test_rejected_body_keeps_a_malformed_context_as_the_client_sent_it() -> None:
    message = {"type": "track", "userId": "u", "event": "E", "context": "app"}
    rejection = rejected(message, envelope=Envelope(context={"channel": "web"}))
    assert rejection.code == "invalid_field"
    assert msgspec.json.decode(rejection.body) == message


# --- properties ----------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
SEGMENT_FIELDS = (
    "type",
    "messageId",
    "userId",
    "anonymousId",
    "event",
    "name",
    "category",
    "properties",
    "traits",
    "context",
    "integrations",
    "groupId",
    "previousId",
    "timestamp",
    "originalTimestamp",
    "sentAt",
    "writeKey",
)
UTC_OFFSETS = st.integers(min_value=-23 * 60 - 59, max_value=23 * 60 + 59).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
any_times = st.builds(
    lambda moment, offset: moment.replace(tzinfo=offset).isoformat(),
    st.datetimes(),
    UTC_OFFSETS,
)
field_values = st.one_of(
    json_values,
    any_times,
    st.sampled_from(sorted(MESSAGE_TYPES)),
    st.fixed_dictionaries({"channel": json_values}),
)
segment_like_objects = st.dictionaries(
    st.sampled_from(SEGMENT_FIELDS) | st.text(max_size=10), field_values, max_size=len(SEGMENT_FIELDS)
)
envelopes = st.builds(
    Envelope,
    context=st.none() | st.dictionaries(st.sampled_from(["channel", "locale", "ip"]), json_values, max_size=3),
    integrations=st.none() | st.dictionaries(st.text(max_size=8), st.booleans(), max_size=3),
    sent_at=st.none() | any_times,
)
message_types = st.none() | st.sampled_from(sorted(MESSAGE_TYPES))
receive_times = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2090, 1, 1), timezones=st.just(UTC)
).map(lambda moment: moment.astimezone(UTC))


ids = st.text(min_size=1, max_size=40).filter(str.strip) | st.integers(min_value=0, max_value=2**53)
names = st.text(min_size=1, max_size=40)
channels = st.sampled_from(["web", "app", "email", "phone", "crm", "kiosk_7"])
# Client times within reach of the receive time; the gap to sentAt may be negative
# (sent "before" it happened on a broken clock) but not absurd.
client_times = st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2024, 12, 31))
gaps = st.timedeltas(min_value=timedelta(days=-300), max_value=timedelta(days=3650))


@st.composite
def valid_messages(draw: st.DrawFn) -> JsonObject:
    kind = draw(st.sampled_from(sorted(MESSAGE_TYPES)))
    message: JsonObject = {"type": kind}
    identity = draw(st.sampled_from(["userId", "anonymousId", "both"]))
    if identity in ("userId", "both"):
        message["userId"] = draw(ids)
    if identity in ("anonymousId", "both"):
        message["anonymousId"] = draw(ids)
    required = {"track": "event", "group": "groupId", "alias": "previousId"}
    if kind in required:
        message[required[kind]] = draw(names)
    if draw(st.booleans()):
        message["messageId"] = draw(ids)
    if draw(st.booleans()):
        message["properties"] = draw(st.dictionaries(st.text(max_size=10), json_values, max_size=4))
    if draw(st.booleans()):
        message["context"] = {"channel": draw(channels)}
    if draw(st.booleans()):
        original = draw(client_times).replace(tzinfo=draw(UTC_OFFSETS))
        message["timestamp"] = original.isoformat()
        if draw(st.booleans()):
            message["sentAt"] = (original + draw(gaps)).isoformat()
    return message


def truncated_to_ms(moment: datetime) -> datetime:
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


@st.composite
def corrupted_messages(draw: st.DrawFn) -> bytes:
    """A valid message's JSON with a few bytes replaced: lands inside strings
    (invalid UTF-8), between tokens (malformed JSON) or nowhere harmful."""
    raw = msgspec.json.encode(draw(valid_messages()))
    start = draw(st.integers(min_value=0, max_value=len(raw)))
    end = draw(st.integers(min_value=start, max_value=min(len(raw), start + 4)))
    return raw[:start] + draw(st.binary(min_size=1, max_size=4)) + raw[end:]


@st.composite
def retimed_messages(draw: st.DrawFn) -> JsonObject:
    """A valid message whose time fields may be any value, in any year and offset."""
    message = draw(valid_messages())
    for field in ("timestamp", "originalTimestamp", "sentAt"):
        if draw(st.booleans()):
            message[field] = draw(any_times | json_values)
    return message


@given(raw=st.binary(max_size=300) | corrupted_messages(), message_type=message_types, envelope=envelopes)
@settings(deadline=None)
def test_arbitrary_bytes_never_raise(raw: bytes, message_type: str | None, envelope: Envelope) -> None:
    outcome = decode(raw, message_type=message_type, envelope=envelope)
    assert isinstance(outcome, Event | Rejection)


@given(
    message=segment_like_objects | retimed_messages() | json_values,
    message_type=message_types,
    envelope=envelopes,
    received_at=receive_times,
)
@settings(max_examples=300, deadline=None)
def test_arbitrary_json_never_raises(
    message: Any, message_type: str | None, envelope: Envelope, received_at: datetime
) -> None:
    raw = msgspec.json.encode(message)
    outcome = decode(raw, message_type=message_type, envelope=envelope, received_at=received_at)
    assert isinstance(outcome, Event | Rejection)
    if isinstance(outcome, Event):
        # What is accepted can be stored and read back in the store's encoding.
        assert msgspec.json.decode(msgspec.json.encode(outcome), type=Event) == outcome


@given(
    message=valid_messages(),
    received_at=st.datetimes(min_value=datetime(2025, 1, 1), max_value=datetime(2080, 1, 1), timezones=st.just(UTC)),
)
@settings(max_examples=300, deadline=None)
def test_valid_messages_always_normalize(message: JsonObject, received_at: datetime) -> None:
    event = accepted(message, received_at=received_at, default_channel="store")
    assert event.type == message["type"]
    if "messageId" in message and message["messageId"] != "":
        assert event.message_id == str(message["messageId"])
    else:
        assert event.message_id == "generated-1"
    assert event.user_id == (str(message["userId"]) if "userId" in message else None)
    assert event.anonymous_id == (str(message["anonymousId"]) if "anonymousId" in message else None)
    assert event.channel == message.get("context", {}).get("channel", "store")
    assert event.event == message.get("event")
    assert event.properties == message.get("properties")
    assert parse(event.received_at) == truncated_to_ms(received_at)
    if "timestamp" not in message:
        assert event.timestamp == event.received_at
        return
    original = truncated_to_ms(datetime.fromisoformat(message["timestamp"]))
    assert parse(event.original_timestamp) == original
    if "sentAt" in message:
        assert parse(event.sent_at) == truncated_to_ms(datetime.fromisoformat(message["sentAt"]))
        # timestamp = receivedAt − (sentAt − originalTimestamp), exactly, on the stored fields.
        assert parse(event.timestamp) == parse(event.received_at) - (
            parse(event.sent_at) - parse(event.original_timestamp)
        )
    else:
        assert parse(event.timestamp) == original


@given(
    message=valid_messages(),
    extra=st.dictionaries(st.text(max_size=20).filter(lambda key: key not in SEGMENT_FIELDS), json_values, max_size=3),
    message_type=message_types,
    envelope=envelopes,
)
@settings(deadline=None)
def test_rejected_bodies_decode_to_the_original_fields(
    message: JsonObject, extra: JsonObject, message_type: str | None, envelope: Envelope
) -> None:
    anonymous = {key: value for key, value in {**extra, **message}.items() if key not in ("userId", "anonymousId")}
    rejection = rejected(anonymous, message_type=message_type, envelope=envelope)
    assert rejection.code == "missing_identity"
    body = msgspec.json.decode(rejection.body)
    for key, value in anonymous.items():
        if key == "type" and message_type is not None:
            assert body["type"] == message_type
        elif key == "context" and envelope.context is not None:
            assert body["context"] == {**envelope.context, **value}
        else:
            assert body[key] == value
    # The body alone, re-submitted, gets the same verdict: nothing it needed was left behind.
    again = rejected(rejection.body)
    assert again.code == rejection.code


@given(message=segment_like_objects, envelope=envelopes, message_type=message_types)
@settings(deadline=None)
def test_every_rejected_object_keeps_all_its_fields(
    message: JsonObject, envelope: Envelope, message_type: str | None
) -> None:
    outcome = decode(message, message_type=message_type, envelope=envelope)
    if isinstance(outcome, Event):
        return
    body = msgspec.json.decode(outcome.body)
    assert "writeKey" not in body  # a secret is never kept in the quarantine
    for key, value in message.items():
        if key == "writeKey":
            continue
        if key == "type" and message_type is not None:
            assert body[key] == message_type
        elif key == "context" and envelope.context is not None and isinstance(value, dict | None):
            assert body[key] == ({**envelope.context, **(value or {})} or value)
        else:
            assert body[key] == value
