"""When each key was last used, through a real ``polku serve``: a write key that sent
events and the admin token that asked show the time of their use; a key never used
shows none."""

from __future__ import annotations

from tests.conftest import ServerProcess
from tests.journeys.test_journey_e2e import until


def test_keys_show_when_they_were_last_used(server: ServerProcess) -> None:
    with server.admin() as admin, server.writer() as writer:
        unused = admin.post("/v1/keys", json={"kind": "write", "source": "default", "label": "unused"}).json()
        assert writer.post("/v1/track", json={"userId": "u", "event": "E"}).status_code == 200

        def used() -> dict[str, str | None] | None:
            keys = {key["label"]: key["last_used_at"] for key in admin.get("/v1/keys").json()["keys"]}
            return keys if all(keys[label] for label in keys if label != "unused") else None

        found = until(used, what="the times of use")
    assert found["unused"] is None and unused["key_id"]
    assert all(at and at.endswith("Z") for label, at in found.items() if label != "unused")
