"""The recently active customers and a customer's consent and contact policy, on a
real store built from hand-written events: the engine's reads, the same through
``GET /v1/profiles/recent`` and ``GET /v1/profiles/{id}/policy``, and through
``polku profiles recent`` and ``polku profiles policy``."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from polku.adapters.sqlite.log_reader import SqliteLogReader
from polku.adapters.sqlite.state_store import open_state_reader
from polku.cli.main import app as cli
from polku.config import Settings
from polku.core.errors import InvalidInput, NotFound
from polku.core.events import format_millis
from polku.core.workspace import parse_config
from polku.engine.profile_views import ProfileViews
from polku.engine.runtime import WorkspaceRuntime
from polku.web.app import create_app
from tests.analytics.helpers import DAY, HOUR, MINUTE, Store
from tests.conftest import ADMIN_TOKEN
from tests.engine.helpers import T0, event

CONFIG = """
channels:
  email: {type: smtp, sender: shop@example.com}
segments:
  named: {condition: "traits.name != null"}
policy:
  consent: {defaults: {surveys: true}}
  quiet_hours: {start: "21:00", end: "08:00", purposes: [surveys]}
  suppress:
    - {name: no-service-email, when: "traits.name == 'Ann'", channels: [email], purposes: [service]}
"""
NIGHT = T0 - T0 % DAY + 23 * HOUR
"""23:00 UTC: inside the quiet hours, which end at 08:00 the next morning."""


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    # ann, then bob (anonymous first, then identified: one customer), then cid;
    # `Segment Entered` events (channel system) end the log.
    found = Store(tmp_path_factory.mktemp("recent"), CONFIG)
    found.add(
        event("identify", user_id="ann", ts=T0,
              traits={"name": "Ann", "email": "ann@example.com", "consent": {"marketing": True, "surveys": False}}),
        event(user_id="ann", event="Home", channel="web", ts=T0 + MINUTE),
        event(anonymous_id="anon-b", event="Pricing", channel="web", ts=T0 + 2 * MINUTE),
        event("identify", user_id="bob", anonymous_id="anon-b", ts=T0 + 3 * MINUTE,
              traits={"first_name": "Bob", "last_name": "Berg", "phone": "+358401234567"}),
        event(user_id="cid", event="Help", channel="app", ts=T0 + 4 * MINUTE),
    )  # fmt: skip
    return found.process()


@pytest.fixture
def views(store: Store) -> Iterator[ProfileViews]:
    found = ProfileViews(open_state_reader(store.directory), SqliteLogReader(store.directory))
    yield found
    found.state.connection.close()
    found.log.close()


def live_id(views: ProfileViews, user_id: str) -> str:
    return views.find("default", WorkspaceRuntime.compile(parse_config(CONFIG)), "user_id", user_id)


def test_the_recent_customers_are_the_newest_events_customers_once_each(views: ProfileViews) -> None:
    found = views.recent("default", 20)
    assert [item["customer_id"] for item in found] == [live_id(views, name) for name in ("cid", "bob", "ann")]
    cid, bob, ann = found
    assert (cid["event"], cid["channel"], cid["at"], cid["name"], cid["contact"]) == (
        "Help", "app", format_millis(T0 + 4 * MINUTE), None, "cid",
    )  # fmt: skip
    # bob's anonymous page view and his identify call are one customer: listed once.
    assert (bob["event"], bob["name"], bob["contact"]) == ("identify", "Bob Berg", "+358401234567")
    assert (ann["event"], ann["name"], ann["contact"]) == ("Home", "Ann", "ann@example.com")
    assert [item["customer_id"] for item in views.recent("default", 2)] == [cid["customer_id"], bob["customer_id"]]
    assert views.recent("elsewhere", 20) == []


@pytest.mark.parametrize("limit", [0, 201])
def test_the_recent_customers_limit_is_checked(views: ProfileViews, limit: int) -> None:
    with pytest.raises(InvalidInput) as raised:
        views.recent("default", limit)
    assert raised.value.details["field"] == "limit"


def verdicts(policy: dict[str, Any]) -> dict[str, list[tuple[str, str | None, str | None, list[str]]]]:
    return {
        row["purpose"]: [(v["kind"], v["reason"], v["until"], v["channels"]) for v in row["verdicts"]]
        for row in policy["purposes"]
    }


def test_the_policy_gives_consent_and_each_channels_verdict_now(views: ProfileViews) -> None:
    runtime = WorkspaceRuntime.compile(parse_config(CONFIG))
    ann = views.policy("default", runtime, live_id(views, "ann"), NIGHT)
    assert (ann["trait"], ann["consent"], ann["channels"]) == (
        "consent", {"marketing": True, "surveys": False}, ["email", "in_app"],
    )  # fmt: skip
    rows = {row["purpose"]: row for row in ann["purposes"]}
    assert (rows["marketing"]["given"], rows["surveys"]["given"], rows["service"]["given"]) == (True, False, None)
    assert rows["service"]["default"] is True
    found = verdicts(ann)
    assert found["marketing"] == [("send", None, None, ["email", "in_app"])]
    assert found["surveys"] == [("skip", "consent:surveys", None, ["email", "in_app"])]
    assert [(kind, channels) for kind, _, _, channels in found["service"]] == [
        ("skip", ["email"]),
        ("send", ["in_app"]),
    ]
    assert "no-service-email" in str(found["service"][0][1])
    # `every`: one verdict for every channel.
    assert [v["every"] for v in rows["service"]["verdicts"]] == [False, False]
    assert [v["every"] for v in rows["marketing"]["verdicts"]] == [True]

    bob = verdicts(views.policy("default", runtime, live_id(views, "bob"), NIGHT))
    # No consent given: the defaults (marketing is opt-in); surveys wait for the morning.
    assert bob["marketing"] == [("skip", "consent:marketing", None, ["email", "in_app"])]
    assert bob["surveys"] == [("hold", "quiet_hours", format_millis(NIGHT + 9 * HOUR), ["email", "in_app"])]
    assert bob["service"] == [("send", None, None, ["email", "in_app"])]

    with pytest.raises(NotFound):
        views.policy("default", runtime, "c_nobody", NIGHT)


@pytest.fixture
async def client(store: Store) -> AsyncIterator[httpx.AsyncClient]:
    """The application in-process, its lifespan started (no processor: the store is built)."""
    application = create_app(
        Settings(data_dir=store.directory, admin_token=ADMIN_TOKEN, processor=False, dispatcher=False)
    )
    async with (
        application.router.lifespan_context(application),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=application),
            base_url="http://testserver",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        ) as found,
    ):
        yield found


@pytest.mark.anyio
async def test_the_same_through_the_api(client: httpx.AsyncClient, views: ProfileViews) -> None:
    recent = await client.get("/v1/profiles/recent", params={"limit": 2})
    assert recent.status_code == 200, recent.text
    assert recent.json() == {"customers": views.recent("default", 2)}
    assert (await client.get("/v1/profiles/recent")).json()["customers"] == views.recent("default", 20)
    refused = await client.get("/v1/profiles/recent", params={"limit": 500})
    assert refused.status_code == 400 and "limit" in refused.json()["message"]
    assert (await client.get("/v1/profiles/recent", headers={"Authorization": "Bearer nope"})).status_code == 401

    ann = live_id(views, "ann")
    policy = await client.get(f"/v1/profiles/{ann}/policy")
    assert policy.status_code == 200, policy.text
    assert policy.json()["customer_id"] == ann
    # Neither of these depends on the time of day.
    assert verdicts(policy.json())["marketing"] == [("send", None, None, ["email", "in_app"])]
    assert verdicts(policy.json())["surveys"] == [("skip", "consent:surveys", None, ["email", "in_app"])]
    assert (await client.get("/v1/profiles/c_nobody/policy")).status_code == 404


def test_the_same_through_the_cli(store: Store, views: ProfileViews) -> None:
    runner = CliRunner(env={"COLUMNS": "200"})  # the tables at full width
    recent = runner.invoke(
        cli, ["profiles", "recent", "--limit", "2", "--format", "json", "--data-dir", str(store.directory)]
    )
    assert recent.exit_code == 0, recent.output
    assert json.loads(recent.stdout) == {"customers": views.recent("default", 2)}
    table = runner.invoke(cli, ["profiles", "recent", "--data-dir", str(store.directory)])
    assert table.exit_code == 0 and "Bob Berg" in table.stdout and "ann@example.com" in table.stdout
    assert runner.invoke(cli, ["profiles", "recent", "--limit", "0", "--data-dir", str(store.directory)]).exit_code == 2

    policy = runner.invoke(
        cli, ["profiles", "policy", "ann@example.com", "--format", "json", "--data-dir", str(store.directory)]
    )
    assert policy.exit_code == 0, policy.output
    assert json.loads(policy.stdout)["customer_id"] == live_id(views, "ann")
    table = runner.invoke(cli, ["profiles", "policy", "user_id:bob", "--data-dir", str(store.directory)])
    assert table.exit_code == 0, table.output
    assert "skip (consent:marketing)" in table.stdout and "yes (default)" in table.stdout
