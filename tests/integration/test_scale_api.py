"""``polku serve --store … --bus …``: the API role of the scale-out deployment, as
real processes against the real PostgreSQL and NATS. Two API processes share the
stream and the catalog; a worker applies what they take in; either API answers
the reads from PostgreSQL; what only the embedded deployment serves answers 501."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import ADMIN_TOKEN, WRITE_KEY, ServerProcess
from tests.contract.conftest import NATS_URL, fresh_database
from tests.integration.scale_processes import api_server, fresh_deployment, worker

from polku.engine.scale_worker import ScaleOut

pytestmark = pytest.mark.anyio
PARTITIONS = 4
CONFIG = "channels:\n  email: {type: smtp, port: 2525, sender: shop@example.com}\n"
JOURNEY = """
id: hello
entry: {event: Signed Up}
steps:
  - id: pause
    wait: 1h
  - id: tell
    action: {channel: email, subject: "Hello", body: "Hi"}
"""


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    with fresh_database() as url:
        yield url


@pytest.fixture
async def deployment(database: str) -> AsyncIterator[ScaleOut]:
    async with fresh_deployment(database, PARTITIONS) as found:
        yield found


def until(check: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s} s"
        time.sleep(0.1)


def profile_of(server: ServerProcess, user_id: str) -> dict[str, Any] | None:
    with server.admin() as admin:
        found = admin.get("/v1/profiles/lookup", params={"user_id": user_id})
        if found.status_code == 404:
            return None
        assert found.status_code == 200, found.text
        return dict(admin.get(f"/v1/profiles/{found.json()['customer_id']}").json())


async def test_two_api_processes_take_in_and_answer_from_the_shared_state(deployment: ScaleOut, tmp_path: Path) -> None:
    first = api_server(deployment, tmp_path / "api-1")
    second = api_server(deployment, tmp_path / "api-2")
    running = worker(deployment, tmp_path / "worker.log")
    try:
        first.start(timeout=60)
        second.start(timeout=60)  # the same default workspace and keys: created once
        # The catalog is shared: what is set through one is read through the other.
        with first.admin() as admin:
            assert admin.put("/v1/workspace/config", content=CONFIG).status_code == 200
            assert admin.put("/v1/journeys/hello", content=JOURNEY).status_code == 201
        with second.admin() as admin:
            assert admin.get("/v1/workspace/config").json()["config"]["channels"]["email"]["port"] == 2525
            assert admin.get("/v1/journeys/hello").json()["id"] == "hello"
        running.start()  # after the journey: it reads the catalog as it starts
        with first.writer() as one, second.writer() as two:
            identify = {"userId": "ann", "messageId": "m1", "traits": {"name": "Ann"}}
            assert one.post("/v1/identify", json=identify).status_code == 200
            batch = [
                {"type": "track", "userId": "ann", "event": "Viewed", "messageId": f"v{n}", "properties": {"n": n}}
                for n in range(5)
            ]
            batch.append({"type": "track", "userId": "ann", "event": "Signed Up", "messageId": "s1"})
            assert two.post("/v1/batch", json={"batch": batch}).status_code == 200
            # The same messages through the other process: the stream takes each once.
            again = one.post("/v1/batch", json={"batch": batch})
            assert again.status_code == 200 and again.json()["duplicates"] == 6, again.text
        for server in (first, second):
            profile = until(
                lambda s=server: (p := profile_of(s, "ann")) and p["events"] == 7 and p, 60, "the worker applied"
            )
            assert profile["traits"]["name"] == "Ann"
        with second.admin() as admin:
            customer = admin.get("/v1/profiles/lookup", params={"user_id": "ann"}).json()["customer_id"]
            timeline = admin.get(f"/v1/profiles/{customer}/timeline").json()
            named = [item for item in timeline["events"] if item.get("name") == "Viewed"]
            assert sorted(item["properties"]["n"] for item in named) == [0, 1, 2, 3, 4]  # bodies from the index
            assert admin.get(f"/v1/profiles/{customer}/policy").status_code == 200
            events = admin.get("/v1/events", params={"limit": 100}).json()["events"]
            assert len(events) == 7
            # The journey reports, from the workers' state.
            listed = admin.get("/v1/journeys").json()["journeys"]
            assert [(j["id"], j["entered"], j["active"]) for j in listed] == [("hello", 1, 1)]
            stats = admin.get("/v1/journeys/hello/stats").json()
            assert stats["total"]["entered"]["total"] == 1, stats
            mine = admin.get(f"/v1/profiles/{customer}/journeys").json()
            assert [(i["journey"], i["step"]) for i in mine["instances"]] == [("hello", "pause")], mine
            assert admin.get(f"/v1/profiles/{customer}/messages").json()["messages"] == []
            context = admin.get(f"/v1/profiles/{customer}/context").json()
            assert context["who"]["name"] == "Ann" and context["notes"] == []
            # Surveys, feedback and actions read the same way (none deployed: empty).
            assert admin.get("/v1/surveys").json() == {"surveys": []}
            assert admin.get(f"/v1/profiles/{customer}/surveys").status_code == 200
            assert admin.get("/v1/feedback/counts").status_code == 200
            assert admin.get("/v1/feedback/metrics", params={"metric": "nps"}).status_code == 200
            assert admin.get("/v1/actions/stats").status_code == 200
            assert admin.get("/v1/deliveries").json() == {"deliveries": []}  # no dispatcher here: none yet
            for path in ("/v1/analytics", "/v1/overview", "/v1/processor", "/ui"):
                answer = admin.get(path)
                assert answer.status_code == 501, (path, answer.text)
                assert answer.json()["code"] == "not_served_here", path
        with second.writer() as not_admin:  # the token is checked first, as everywhere
            assert not_admin.get("/v1/overview").status_code == 401
    finally:
        running.stop()
        first.stop()
        second.stop()
    assert "Traceback" not in first.log() + second.log(), first.log() + second.log()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--store", "postgresql://postgres@127.0.0.1/x"], "bus is missing"),
        (["--bus", NATS_URL], "store is missing"),
        (["--store", "mysql://x", "--bus", NATS_URL], "postgresql://"),
        (["--store", "postgresql://postgres@127.0.0.1/x", "--bus", NATS_URL, "--partitions", "0"], "partitions 0"),
        (["--store", "postgresql://postgres@127.0.0.1/x", "--bus", NATS_URL, "--schema", "Bad-Name"], "schema"),
        # Unreachable: the address named, its password not.
        (
            ["--store", "postgresql://u:s3cret@127.0.0.1:1/x", "--bus", NATS_URL],
            "cannot connect to postgresql://u:***@",
        ),
    ],
)
def test_serve_refuses_a_half_or_bad_scale_out_with_invalid_config(options: list[str], message: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "polku", "serve", "--write-key", WRITE_KEY, "--admin-token", ADMIN_TOKEN, *options],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    output = result.stdout + result.stderr
    assert "invalid_config" in output and message in output, output
    assert "s3cret" not in output and "Traceback" not in output


@pytest.mark.parametrize("variable", ["POLKU_SCHEMA", "POLKU_STORE_SCHEMA"])
@pytest.mark.parametrize("role", [["serve"], ["worker"], ["dispatch"], ["db", "status"]])
def test_every_role_reads_the_schema_from_the_same_environment(variable: str, role: list[str]) -> None:
    """One environment names one deployment: each role takes the schema from either
    variable (here a bad one, refused before anything connects)."""
    store, bus = "postgresql://postgres@127.0.0.1/x", NATS_URL
    options = ["--store", store] if role == ["db", "status"] else ["--store", store, "--bus", bus]
    result = subprocess.run(
        [sys.executable, "-m", "polku", *role, *options],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, variable: "Bad-Name"},
    )
    output = result.stdout + result.stderr
    assert result.returncode == 2 and "invalid_config" in output and "Bad-Name" in output, output


async def test_an_in_app_survey_is_listed_answered_and_counted_on_the_scale_out(
    deployment: ScaleOut, tmp_path: Path
) -> None:
    """Surveys on the scale-out: a worker decides the invitation, the API lists it
    from PostgreSQL, takes the answer (the catalog keeps it, the stream gets the
    feedback event) and, once the worker applied it, counts it."""
    from tests.surveys.test_survey_server import IN_APP

    api = api_server(deployment, tmp_path / "api")
    running = worker(deployment, tmp_path / "worker.log")
    try:
        api.start(timeout=60)
        with api.admin() as admin:
            deployed = admin.put(
                "/v1/surveys/checkout-ces", content=IN_APP, headers={"content-type": "application/yaml"}
            )
            assert deployed.status_code == 201, deployed.text
        running.start()  # after the survey: it reads the catalog as it starts
        with api.writer() as writer:
            batch = [
                {"type": "identify", "userId": "ann", "traits": {"locale": "fi"}},
                {"type": "track", "userId": "ann", "event": "Order Completed", "context": {"channel": "app"}},
            ]
            assert writer.post("/v1/batch", json={"batch": batch}).status_code == 200
        with api.admin() as admin:
            customer = until(lambda: (p := profile_of(api, "ann")) and p["customer_id"], 60, "the customer")
            pending = until(lambda: admin.get(f"/v1/profiles/{customer}/surveys").json()["surveys"], 60, "the survey")
            (item,) = pending
            assert item["survey"]["question"] == "Kuinka helppoa maksaminen oli?"
            answered = admin.post(f"/v1/invitations/{item['token']}/answer", json={"score": 6, "customer_id": customer})
            assert answered.status_code == 201, answered.text
            metrics = until(
                lambda: (
                    (m := admin.get("/v1/feedback/metrics", params={"metric": "ces"}).json())["groups"]
                    and m["groups"][0]["answers"] == 1
                    and m
                ),
                60,
                "the answer applied and counted",
            )
            assert metrics["groups"][0]["mean"] == 6
            listed = admin.get("/v1/surveys").json()["surveys"]
            assert listed[0]["id"] == "checkout-ces" and listed[0]["last_30_days"]["answered"] == 1
            # The right of access reads the same state.
            document = admin.get(f"/v1/profiles/{customer}/export").json()
            assert [answer["score"] for answer in document["survey_answers"]] == [6]
            assert [invitation["answered"] for invitation in document["survey_invitations"]] == [True]
            assert "Order Completed" in {event["name"] for event in document["events"]}
    finally:
        running.stop()
        api.stop()
    assert "Traceback" not in api.log() + running.log(), api.log() + running.log()


async def test_the_chatbot_decides_and_hands_over_on_the_scale_out(deployment: ScaleOut, tmp_path: Path) -> None:
    """Next-best-action on the scale-out: decisions read the workers' state (profile,
    attributes, learned statistics) and a hand-over note comes back through the
    stream into the agent view — the embedded test's story, on PostgreSQL and NATS."""
    from tests.decisions.test_decide_server import CATALOGUE, CONFIG, YAML, decide, failures

    api = api_server(deployment, tmp_path / "api")
    running = worker(deployment, tmp_path / "worker.log")
    try:
        api.start(timeout=60)
        with api.admin() as admin:
            assert admin.put("/v1/workspace/config", content=CONFIG).status_code == 200
            deployed = admin.put("/v1/actions", content=CATALOGUE, headers=YAML)
            assert deployed.status_code == 201, deployed.text
        running.start()
        failed = {"userId": "ann", "event": "Password Reset Failed", "context": {"channel": "app"}}
        identify = {"userId": "ann", "traits": {"first_name": "Ann", "email": "ann@example.com"}}
        with api.admin() as admin, api.writer() as writer:
            assert writer.post("/v1/identify", json=identify).status_code == 200
            assert writer.post("/v1/track", json=failed).status_code == 200
            until(lambda: failures(admin) == 1, 60, "the first failure in the profile")
            first = decide(admin, channel="chat", context={"intent": "login_problem"})
            assert first["actions"][0]["id"] == "reset-self-service"
            assert first["handover"]["required"] is False
            assert writer.post("/v1/track", json=failed).status_code == 200
            until(lambda: failures(admin) == 2, 60, "the second failure")
            second = decide(admin, channel="chat", context={"intent": "login_problem"})
            assert second["handover"]["required"] is True and second["handover"]["reasons"] == ["repeated_failure"]
            customer = second["customer_id"]

            def noted() -> list[dict[str, Any]]:
                notes = admin.get(f"/v1/profiles/{customer}/context").json()["notes"]
                return [note for note in notes if "Chat hand-over" in note["text"]]

            (note,) = until(noted, 60, "the hand-over note in the agent view")
            assert "repeated_failure" in note["text"]
            assert admin.get("/v1/actions/stats").status_code == 200
    finally:
        running.stop()
        api.stop()
