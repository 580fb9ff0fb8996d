from tests.conftest import ServerProcess


def test_track_is_stored_with_channel_and_corrected_timestamp(server: ServerProcess) -> None:
    with server.writer() as client:
        response = client.post(
            "/v1/track",
            json={
                "userId": "u1",
                "event": "Signed Up",
                "messageId": "m-1",
                "timestamp": "2024-01-01T00:00:00Z",
                "sentAt": "2024-01-01T00:00:05Z",
                "context": {"channel": "app"},
            },
        )
    assert response.status_code == 200, response.text
    assert response.json() == {"success": True, "accepted": 1, "duplicates": 0, "rejected": []}
    [event] = server.all_events()
    assert event["messageId"] == "m-1"
    assert event["channel"] == "app"
    assert event["originalTimestamp"] == "2024-01-01T00:00:00.000Z"
    # timestamp = receivedAt - (sentAt - originalTimestamp) = receivedAt - 5 s
    from datetime import datetime

    gap = datetime.fromisoformat(str(event["receivedAt"])) - datetime.fromisoformat(str(event["timestamp"]))
    assert gap.total_seconds() == 5
