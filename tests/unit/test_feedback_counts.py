"""Answers per metric (what the dashboard's feedback page shows first) on a real
store built from hand-written feedback events: the engine's read, ``GET
/v1/feedback/counts`` and ``polku feedback counts``."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from typer.testing import CliRunner

from polku.adapters.sqlite.state_store import open_state_reader
from polku.cli.main import app as cli
from polku.config import Settings
from polku.core.errors import InvalidInput
from polku.core.events import format_millis
from polku.engine.feedback_reports import MAX_COUNT_DAYS, answer_counts, feedback_counts
from polku.web.app import create_app
from tests.analytics.helpers import DAY, HOUR, Store
from tests.conftest import ADMIN_TOKEN
from tests.engine.helpers import T0

NOW = T0 + 10 * DAY
ANSWERS = [
    ("ann", "csat", 5, T0 + 9 * DAY),
    ("bob", "csat", 2, T0 + 8 * DAY),
    ("cid", "nps", 9, T0 + 8 * DAY),
    ("dan", "ces", 3, T0 + 2 * DAY),
    ("eve", "csat", 4, T0 - 100 * DAY),  # before any period below but a long one
    ("fay", "nps", 11, T0 + 9 * DAY),  # off the NPS scale: not an answer
]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    found = Store(tmp_path_factory.mktemp("counts"))
    for user, metric, score, ts in ANSWERS:
        found.track(user, "Feedback Submitted", "email", ts, properties={"metric": metric, "score": score})
    return found.process()


@pytest.fixture
def state(store: Store) -> Iterator[sqlite3.Connection]:
    found = open_state_reader(store.directory)
    yield found.connection
    found.connection.close()


def test_answers_per_metric_in_the_period(state: sqlite3.Connection) -> None:
    found = feedback_counts(state, "default", 7, NOW)
    assert found == {
        "since": format_millis(NOW - 7 * DAY)[:19] + "Z",
        "until": format_millis(NOW)[:19] + "Z",
        "days": 7,
        "answers": {"nps": 1, "csat": 2, "ces": 0},
        "most_answered": "csat",
    }
    assert feedback_counts(state, "default", 30, NOW)["answers"] == {"nps": 1, "csat": 2, "ces": 1}
    assert feedback_counts(state, "default", 365, NOW)["answers"]["csat"] == 3
    # The dashboard's read: only the metrics answered.
    assert answer_counts(state, "default", NOW - 7 * DAY) == {"csat": 2, "nps": 1}
    assert answer_counts(state, "default", NOW - 7 * DAY, T0 + 8 * DAY + HOUR) == {"csat": 1, "nps": 1}


def test_a_tie_goes_to_nps_and_none_at_all_too(state: sqlite3.Connection) -> None:
    # The day before T0 + 8 days and an hour: bob's CSAT and cid's NPS (ann's answer is later).
    assert feedback_counts(state, "default", 1, T0 + 8 * DAY + HOUR)["most_answered"] == "nps"
    empty = feedback_counts(state, "elsewhere", 90, NOW)
    assert empty["answers"] == {"nps": 0, "csat": 0, "ces": 0} and empty["most_answered"] == "nps"


@pytest.mark.parametrize("days", [0, MAX_COUNT_DAYS + 1])
def test_the_period_is_checked(state: sqlite3.Connection, days: int) -> None:
    with pytest.raises(InvalidInput) as raised:
        feedback_counts(state, "default", days, NOW)
    assert raised.value.details["field"] == "days"


@pytest.fixture
async def client(store: Store) -> AsyncIterator[httpx.AsyncClient]:
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
async def test_the_same_through_the_api(client: httpx.AsyncClient) -> None:
    # The API counts up to the wall clock: a period of ten years holds every answer.
    found = await client.get("/v1/feedback/counts", params={"days": MAX_COUNT_DAYS})
    assert found.status_code == 200, found.text
    assert found.json()["answers"] == {"nps": 1, "csat": 3, "ces": 1}
    assert found.json()["most_answered"] == "csat" and found.json()["days"] == MAX_COUNT_DAYS
    assert (await client.get("/v1/feedback/counts")).json()["days"] == 90
    refused = await client.get("/v1/feedback/counts", params={"days": "a week"})
    assert refused.status_code == 400 and "days" in refused.json()["message"]


def test_the_same_through_the_cli(store: Store) -> None:
    runner = CliRunner(env={"COLUMNS": "200"})
    given = ["feedback", "counts", "--days", str(MAX_COUNT_DAYS), "--data-dir", str(store.directory)]
    found = runner.invoke(cli, [*given, "--format", "json"])
    assert found.exit_code == 0, found.output
    assert json.loads(found.stdout)["answers"] == {"nps": 1, "csat": 3, "ces": 1}
    table = runner.invoke(cli, given)
    assert table.exit_code == 0, table.output
    assert [line.split()[1:4:2] for line in table.stdout.splitlines() if "│ csat" in line] == [["csat", "3"]]
