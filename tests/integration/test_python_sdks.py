"""The official Python SDKs of Segment and RudderStack, unchanged, against a real
``polku serve`` process: every message type, once, on the right channel, with the
client's clock skew corrected."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import pytest
from rudderstack import analytics as rudder_analytics
from rudderstack.analytics import Client as RudderClient
from segment.analytics import Client as SegmentClient
from segment.analytics.request import post as segment_post
from tests.conftest import WRITE_KEY, ServerProcess

pytestmark = pytest.mark.slow


class SdkClient(Protocol):
    """The call surface both SDKs share (keyword arguments as analytics-python names them)."""

    def track(self, **fields: Any) -> object: ...
    def identify(self, **fields: Any) -> object: ...
    def page(self, **fields: Any) -> object: ...
    def screen(self, **fields: Any) -> object: ...
    def group(self, **fields: Any) -> object: ...
    def alias(self, **fields: Any) -> object: ...


def client_timestamp() -> datetime:
    """A time five minutes before now, to the millisecond (the precision polku stores),
    so that the clock-skew correction has something to correct."""
    now = datetime.now(UTC) - timedelta(minutes=5)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def send_every_type(client: SdkClient, prefix: str, timestamp: datetime) -> dict[str, tuple[str, str]]:
    """Sends track, identify, page, screen, group and alias (and one track on the
    "app" channel); returns ``{messageId: (type, channel)}`` of what was sent."""
    user = f"{prefix}-user"
    client.track(
        user_id=user,
        event="Order Completed",
        properties={"total": 42},
        timestamp=timestamp,
        message_id=f"{prefix}-track",
    )
    client.track(
        user_id=user,
        event="App Opened",
        context={"channel": "app"},
        timestamp=timestamp,
        message_id=f"{prefix}-track-app",
    )
    client.identify(user_id=user, traits={"plan": "pro"}, timestamp=timestamp, message_id=f"{prefix}-identify")
    client.page(user_id=user, category="Docs", name="Pricing", timestamp=timestamp, message_id=f"{prefix}-page")
    client.screen(
        anonymous_id=f"{prefix}-anon",
        name="Home",
        context={"channel": "app"},
        timestamp=timestamp,
        message_id=f"{prefix}-screen",
    )
    client.group(
        user_id=user, group_id=f"{prefix}-team", traits={"seats": 5}, timestamp=timestamp, message_id=f"{prefix}-group"
    )
    client.alias(previous_id=f"{prefix}-anon", user_id=user, timestamp=timestamp, message_id=f"{prefix}-alias")
    return {
        f"{prefix}-track": ("track", "web"),
        f"{prefix}-track-app": ("track", "app"),
        f"{prefix}-identify": ("identify", "web"),
        f"{prefix}-page": ("page", "web"),
        f"{prefix}-screen": ("screen", "app"),
        f"{prefix}-group": ("group", "web"),
        f"{prefix}-alias": ("alias", "web"),
    }


def parse(value: object) -> datetime:
    assert isinstance(value, str), value
    return datetime.fromisoformat(value)


def assert_stored_once(
    events: list[dict[str, object]], sent: dict[str, tuple[str, str]], timestamp: datetime
) -> dict[str, dict[str, object]]:
    """Every sent message is stored exactly once with its type and channel, and its
    ``timestamp`` is ``receivedAt − (sentAt − originalTimestamp)``."""
    counts = Counter(str(event["messageId"]) for event in events)
    assert counts == dict.fromkeys(sent, 1)
    stored = {str(event["messageId"]): event for event in events}
    for message_id, (kind, channel) in sent.items():
        event = stored[message_id]
        assert (event["type"], event["channel"]) == (kind, channel), event
        assert parse(event["originalTimestamp"]) == timestamp, event
        skew = parse(event["sentAt"]) - parse(event["originalTimestamp"])
        # The client sent a time five minutes old, a moment (the SDK's sentAt) later.
        assert timedelta(minutes=5) <= skew < timedelta(minutes=5, seconds=30), event
        assert parse(event["receivedAt"]) - parse(event["timestamp"]) == skew, event
    return stored


@pytest.mark.parametrize("gzip", [False, True], ids=["plain", "gzip"])
def test_segment_sdk_sends_every_message_type(server: ServerProcess, gzip: bool) -> None:
    client = SegmentClient(WRITE_KEY, host=server.url, sync_mode=True, gzip=gzip, max_retries=0)
    timestamp = client_timestamp()
    sent = send_every_type(client, "seg", timestamp)
    stored = assert_stored_once(server.all_events(), sent, timestamp)
    assert stored["seg-track"]["properties"] == {"total": 42}
    assert stored["seg-identify"]["traits"] == {"plan": "pro"}
    assert stored["seg-group"]["groupId"] == "seg-team"
    assert stored["seg-alias"]["previousId"] == "seg-anon"
    page_context = stored["seg-page"]["context"]
    assert isinstance(page_context, dict) and page_context["library"]["name"] == "analytics-python"


def test_segment_sdk_batches_from_its_queue(server: ServerProcess) -> None:
    """The SDK's default mode: a consumer thread uploads the queue as /v1/batch."""
    on_error: list[str] = []
    client = SegmentClient(
        WRITE_KEY,
        host=server.url,
        upload_interval=0.05,
        max_retries=0,
        on_error=lambda error, batch: on_error.append(f"{error} ({len(batch)} messages)"),
    )
    timestamp = client_timestamp()
    sent = send_every_type(client, "segq", timestamp)
    client.shutdown()  # flush (waits for the queue to drain), then stop the thread
    assert on_error == []
    assert_stored_once(server.all_events(), sent, timestamp)


def test_rudder_sdk_sends_every_message_type_gzipped(server: ServerProcess) -> None:
    client = RudderClient(WRITE_KEY, host=server.url, sync_mode=True, max_retries=0)
    assert client.gzip  # RudderStack's default: Content-Encoding: gzip on every request
    timestamp = client_timestamp()
    sent = send_every_type(client, "rud", timestamp)
    stored = assert_stored_once(server.all_events(), sent, timestamp)
    assert stored["rud-track"]["properties"] == {"total": 42}
    # RudderStack's SDK moves identify traits into context.traits.
    identify_context = stored["rud-identify"]["context"]
    assert isinstance(identify_context, dict) and identify_context["traits"] == {"plan": "pro"}


def test_rudder_sdk_module_api_with_data_plane_url(server: ServerProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    """RudderStack's documented setup: module settings, ``dataPlaneUrl``, queue + flush."""
    on_error: list[str] = []
    monkeypatch.setattr(rudder_analytics, "write_key", WRITE_KEY)
    monkeypatch.setattr(rudder_analytics, "dataPlaneUrl", server.url)
    monkeypatch.setattr(rudder_analytics, "on_error", lambda error, batch: on_error.append(str(error)))
    monkeypatch.setattr(rudder_analytics, "max_retries", 0)
    monkeypatch.setattr(rudder_analytics, "default_client", None)
    timestamp = client_timestamp()
    sent = send_every_type(rudder_analytics, "rudm", timestamp)
    rudder_analytics.flush()
    rudder_analytics.shutdown()
    assert on_error == []
    assert_stored_once(server.all_events(), sent, timestamp)


def test_sdk_retries_with_the_same_message_ids_are_stored_once(server: ServerProcess) -> None:
    timestamp = client_timestamp()
    segment = SegmentClient(WRITE_KEY, host=server.url, sync_mode=True, max_retries=0)
    rudder = RudderClient(WRITE_KEY, host=server.url, sync_mode=True, max_retries=0)
    sent = {**send_every_type(segment, "retry-seg", timestamp), **send_every_type(rudder, "retry-rud", timestamp)}
    first = {str(event["messageId"]): event for event in server.all_events()}

    # The same calls again, as an application retrying after a lost acknowledgement,
    # through both SDKs and both encodings.
    send_every_type(segment, "retry-seg", timestamp)
    send_every_type(rudder, "retry-rud", timestamp)
    send_every_type(SegmentClient(WRITE_KEY, host=server.url, sync_mode=True, gzip=True), "retry-rud", timestamp)

    # analytics-python's own retry path: the same batch, re-posted with X-Retry-Count.
    batch = [
        {"type": "track", "userId": "u", "event": "Retried", "messageId": message_id, "timestamp": timestamp}
        for message_id in ("retry-seg-track", "retry-fresh")
    ]
    response = segment_post(WRITE_KEY, host=server.url, retry_count=1, batch=batch)
    assert response.json() == {"success": True, "accepted": 1, "duplicates": 1, "rejected": []}
    sent["retry-fresh"] = ("track", "web")

    stored = assert_stored_once(server.all_events(), sent, timestamp)
    for message_id, event in first.items():
        assert stored[message_id] == event  # the first copy stays; a retry changes nothing
