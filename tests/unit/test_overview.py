"""The overview's reads on a real SQLite log: the binary search for the log's tail,
the event rate by channel and the people counts."""

from __future__ import annotations

import sqlite3

from hypothesis import given, settings
from hypothesis import strategies as st

from polku.engine.overview import SERIES_BUCKET_MS, event_rate, first_seq_since, people


def _log(rows: list[tuple[int, str, str, int]]) -> sqlite3.Connection:
    connection = sqlite3.connect(":memory:")
    connection.execute(
        "CREATE TABLE events (seq INTEGER PRIMARY KEY, workspace TEXT, channel TEXT, received_ms INTEGER)"
    )
    connection.executemany("INSERT INTO events VALUES (?, ?, ?, ?)", rows)
    return connection


@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(st.tuples(st.integers(1, 5), st.integers(0, 3000)), max_size=60),
    since=st.integers(-100, 100_000),
)
def test_the_tail_search_finds_the_first_event_received_since(steps: list[tuple[int, int]], since: int) -> None:
    """``seq`` with gaps (deleted rows), ``received_ms`` non-decreasing."""
    rows, seq, received = [], 0, 0
    for gap, wait in steps:
        seq += gap
        received += wait
        rows.append((seq, "default", "web", received))
    found = first_seq_since(_log(rows), since)
    expected = next((row[0] for row in rows if row[3] >= since), None)
    if expected is None:
        assert found is None
    else:
        assert found is not None
        # The same rows from `found` on: nothing received since is skipped, nothing older included.
        assert [row for row in rows if row[0] >= found] == [row for row in rows if row[0] >= expected]


def test_the_rate_counts_the_last_minute_by_channel_and_the_series_two_minutes() -> None:
    now = 1_000_000_000
    rows = [
        (1, "default", "web", now - 200_000),  # too old for both
        (2, "default", "web", now - 90_000),  # in the series, not in the rate
        (3, "default", "web", now - 30_000),
        (4, "default", "app", now - 10_000),
        (5, "default", "app", now - 1_000),
        (6, "other", "app", now - 1_000),  # another workspace
    ]
    rate = event_rate(_log(rows), "default", now)
    assert rate["by_channel"] == {"app": round(2 / 60, 2), "web": round(1 / 60, 2)}
    assert rate["events_per_s"] == round(3 / 60, 2)
    series = rate["series"]
    assert sum(series["y"]["web"]) == 2 and sum(series["y"]["app"]) == 2
    assert len(series["x"]) == len(series["y"]["web"]) == 120_000 // SERIES_BUCKET_MS + 1


def test_an_empty_log_has_no_rate() -> None:
    rate = event_rate(_log([]), "default", 10**12)
    assert rate["events_per_s"] == 0 and rate["by_channel"] == {} and rate["series"]["y"] == {}


def test_people_are_customers_accounts_and_the_consumers_in_no_account() -> None:
    state = sqlite3.connect(":memory:")
    state.executescript(
        """
        CREATE TABLE profiles (workspace TEXT, customer_id TEXT, body BLOB);
        CREATE TABLE accounts (workspace TEXT, account_id TEXT, body BLOB);
        CREATE TABLE account_members (workspace TEXT, account_id TEXT, customer_id TEXT);
        INSERT INTO profiles VALUES ('w', 'a', x''), ('w', 'b', x''), ('w', 'c', x''), ('v', 'd', x'');
        INSERT INTO accounts VALUES ('w', 'acme', x''), ('w', 'globex', x'');
        INSERT INTO account_members VALUES ('w', 'acme', 'a'), ('w', 'globex', 'a'), ('v', 'acme', 'd');
        """
    )
    assert people(state, "w") == {"customers": 3, "accounts": 2, "account_members": 1, "consumers": 2}
