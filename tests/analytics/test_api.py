"""The analyses through a real ``polku serve`` (its processor and analytics feed
children) and through ``polku analyze``."""

from __future__ import annotations

import json
from typing import Any

from tests.conftest import ServerProcess
from tests.journeys.test_journey_api import polku
from tests.journeys.test_journey_e2e import until


def test_events_reach_the_analyses_over_http_and_the_cli(server: ServerProcess) -> None:
    with server.admin() as admin, server.writer() as writer:
        batch: list[dict[str, Any]] = []
        for n in range(6):
            user = f"u{n}"
            batch.append({"type": "track", "userId": user, "event": "Reset Failed", "context": {"channel": "app"}})
            if n < 4:
                batch.append(
                    {"type": "track", "userId": user, "event": "Call Started", "context": {"channel": "phone"}}
                )
        batch.append({"type": "group", "userId": "u0", "groupId": "acme", "traits": {"name": "Acme"}})
        assert writer.post("/v1/batch", json={"batch": batch}).status_code == 200

        def mix() -> dict[str, Any] | None:
            found = admin.get("/v1/analytics/channel-mix").json()
            return found if found.get("events") == len(batch) else None

        found = until(mix, what="the events in the analytics store")
        assert {row["channel"]: row["people"] for row in found["channels"]} == {"app": 6, "phone": 4, "other": 1} or {
            row["channel"]: row["people"] for row in found["channels"]
        }["app"] == 6
        assert found["customer_types"]["accounts"]["people"] == 1
        switching = admin.get(
            "/v1/analytics/switching", params={"assisted": "phone", "event": "app:Reset Failed"}
        ).json()
        assert (switching["customers"], switching["switched"]) == (6, 4)
        missing = admin.get("/v1/analytics/funnel")
        assert missing.status_code == 400 and "steps" in missing.json()["message"]
        unknown = admin.get("/v1/analytics/paths", params={"start": "x", "color": "red"})
        assert unknown.status_code == 400 and "color" in unknown.json()["message"]
        assert admin.get("/v1/analytics/nothing").status_code == 400
        listed = admin.get("/v1/analytics").json()["analyses"]
        assert {item["name"] for item in listed} >= {"channel-mix", "paths", "variants", "root-causes", "attribution"}
    cli = polku(
        "analyze",
        "paths",
        "--start",
        "app:Reset Failed",
        "--steps",
        "1",
        "--data-dir",
        str(server.data_dir),
        "--format",
        "json",
    )
    assert cli.returncode == 0, cli.stderr
    links = {(link["target"], link["customers"]) for link in json.loads(cli.stdout)["links"]}
    assert links == {("1:phone:Call Started", 4), ("1:(end)", 2)}
    table = polku("analyze", "channel-mix", "--data-dir", str(server.data_dir))
    assert table.returncode == 0 and "phone" in table.stdout
    wrong = polku("analyze", "paths", "--data-dir", str(server.data_dir))
    assert wrong.returncode == 2 and "start or end" in wrong.stderr
