"""The ``steps`` analysis (the dashboard's suggestions of where a path may start) on a
small hand-built log with known answers, through the registry as the API and
``polku analyze steps`` call it."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from polku.cli.main import app as cli
from polku.core.errors import InvalidInput
from polku.core.events import format_millis
from polku.engine import analytics_registry
from tests.analytics.helpers import DAY, MINUTE, Store
from tests.engine.helpers import T0, event

# ann: web:Home → app:Reset Failed → phone:Call Started → phone:Call Started
# bob: web:Home → app:Reset Failed (and an identify call: not a step)
# cid: web:Home, 10 days later
LOG = [
    ("ann", "Home", "web", 0),
    ("ann", "Reset Failed", "app", 5 * MINUTE),
    ("ann", "Call Started", "phone", 20 * MINUTE),
    ("ann", "Call Started", "phone", 40 * MINUTE),
    ("bob", "Home", "web", 0),
    ("bob", "Reset Failed", "app", 3 * MINUTE),
    ("cid", "Home", "web", 10 * DAY),
]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    found = Store(tmp_path_factory.mktemp("steps"))
    for user, name, channel, offset in LOG:
        found.track(user, name, channel, T0 + offset)
    found.add(event("identify", user_id="bob", traits={"name": "Bob"}, ts=T0 + MINUTE))
    return found.process()


def steps(store: Store, **parameters: str) -> dict[str, object]:
    analysis = analytics_registry.analysis_named("steps")
    scope, arguments = analytics_registry.parse(analysis, "default", parameters)
    return analytics_registry.run(analysis, store.directory, scope, arguments)


def rows(found: dict[str, object]) -> list[tuple[str, int, int]]:
    return [(row["step"], row["customers"], row["events"]) for row in found["steps"]]  # type: ignore[attr-defined, index]


def test_steps_count_customers_and_events_the_most_taken_first(store: Store) -> None:
    found = steps(store)
    assert found["analysis"] == "steps" and found["granularity"] == "channel:event"
    assert rows(found) == [
        ("web:Home", 3, 3),
        ("app:Reset Failed", 2, 2),
        ("phone:Call Started", 1, 2),  # ann called twice: one customer
    ]
    assert found["distinct_steps"] == 3


def test_steps_at_each_granularity_and_scope(store: Store) -> None:
    assert rows(steps(store, granularity="channel")) == [("web", 3, 3), ("app", 2, 2), ("phone", 1, 2)]
    assert rows(steps(store, granularity="event"))[0] == ("Home", 3, 3)
    # The scope: web only, before cid came.
    scoped = steps(store, channel="web", until=format_millis(T0 + DAY))
    assert rows(scoped) == [("web:Home", 2, 2)] and scoped["distinct_steps"] == 1
    assert scoped["scope"]["channel"] == "web"  # type: ignore[index]
    # `top` cuts the list, not the count of distinct steps.
    cut = steps(store, top="1")
    assert rows(cut) == [("web:Home", 3, 3)] and cut["distinct_steps"] == 3
    assert steps(store, customers="accounts")["steps"] == []


@pytest.mark.parametrize(
    ("parameters", "field"),
    [({"top": "0"}, "top"), ({"top": "1001"}, "top"), ({"granularity": "week"}, "granularity"), ({"top": "x"}, "top")],
)
def test_the_parameters_are_checked(store: Store, parameters: dict[str, str], field: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        steps(store, **parameters)
    assert raised.value.details["field"] == field


def test_polku_analyze_prints_steps_as_they_are_named(store: Store) -> None:
    runner = CliRunner(env={"COLUMNS": "200"})
    data_dir = ["--data-dir", str(store.directory)]
    found = runner.invoke(cli, ["analyze", "steps", *data_dir, "--format", "json"])
    assert found.exit_code == 0, found.output
    assert json.loads(found.stdout)["steps"] == steps(store)["steps"]
    table = runner.invoke(cli, ["analyze", "steps", *data_dir])
    assert table.exit_code == 0, table.output
    assert "│ phone:Call Started │ 1" in table.stdout
    # `1:phone:Call Started` holds `:phone:`, Rich's code for a telephone emoji: not here.
    paths = runner.invoke(cli, ["analyze", "paths", "--start", "app:Reset Failed", *data_dir])
    assert paths.exit_code == 0, paths.output
    assert "1:phone:Call Started" in paths.stdout and "☎" not in paths.stdout
