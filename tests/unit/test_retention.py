"""Retention rules (polku.core.retention): the first rule an event matches decides
its age limit, and the SQL conditions the stores delete by say exactly what
``keep_ms`` says — checked against SQLite and DuckDB for random events and rules."""

from __future__ import annotations

import sqlite3

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from polku.core.errors import ConfigError
from polku.core.retention import Retention, RetentionConfig, RetentionRule
from polku.core.workspace import parse_config

DAY = 86_400_000
NOW = 1_800_000_000_000
NAMES = st.sampled_from(["Page Viewed", "Order Completed", "Home", None])
CHANNELS = st.sampled_from(["web", "app", "email"])
TYPES = st.sampled_from(["track", "page", "identify"])
KEEPS = st.sampled_from(["1h", "2d", "30d", "90d"])


def test_the_first_matching_rule_decides_and_the_rest_get_the_default() -> None:
    config = parse_config(
        "retention: {events: 730d, quarantine: 30d, rules: [{event: Page Viewed, keep: 90d}, "
        "{channel: web, type: page, keep: 30d}]}"
    )
    retention = Retention.compile(config.retention)
    assert retention.keep_ms("page", "Page Viewed", "web") == 90 * DAY  # the first rule, not the second
    assert retention.keep_ms("page", "Home", "web") == 30 * DAY
    assert retention.keep_ms("track", "Order Completed", "app") == 730 * DAY
    assert retention.quarantine_ms == 30 * DAY
    assert Retention.compile(RetentionConfig()).keeps_everything


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("retention: {events: 10m}", "shorter than an hour"),
        ("retention: {rules: [{keep: 30d}]}", "name an event, a channel or a type"),
        ("retention: {rules: [{event: X, keep: soon}]}", "retention.rules[0].keep"),
        ("retention: {events: 30d, forever: true}", "forever"),
    ],
)
def test_bad_rules_are_refused_with_where(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_config(text)


rules = st.lists(
    st.builds(
        RetentionRule,
        keep=KEEPS,
        event=NAMES.filter(lambda name: name is not None) | st.none(),
        channel=CHANNELS | st.none(),
        type=TYPES | st.none(),
    ).filter(lambda rule: rule.event or rule.channel or rule.type),
    max_size=4,
)
events = st.lists(st.tuples(st.integers(0, 120 * DAY), TYPES, NAMES, CHANNELS), min_size=1, max_size=40)


@settings(max_examples=150, deadline=None)
@given(rules=rules, default=KEEPS | st.none(), events=events)
def test_the_sql_conditions_delete_exactly_what_keep_ms_expires(
    rules: list[RetentionRule], default: str | None, events: list[tuple[int, str, str | None, str]]
) -> None:
    retention = Retention.compile(RetentionConfig(events=default, rules=rules))
    rows = [(seq, NOW - age, kind, name, channel) for seq, (age, kind, name, channel) in enumerate(events)]
    expected = {
        seq
        for seq, ts, kind, name, channel in rows
        if (keep := retention.keep_ms(kind, name, channel)) is not None and ts < NOW - keep
    }
    where = retention.expired_where(NOW, lambda column: column)
    if where is None:
        assert not expected
        return
    condition, parameters = where
    sqlite = sqlite3.connect(":memory:")
    sqlite.execute("CREATE TABLE events (seq INTEGER, ts_ms INTEGER, type TEXT, name TEXT, channel TEXT)")
    sqlite.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?)", rows)
    found = {seq for (seq,) in sqlite.execute(f"SELECT seq FROM events WHERE {condition}", parameters)}
    assert found == expected
    duck = duckdb.connect()
    duck.execute("CREATE TABLE events (seq BIGINT, ts TIMESTAMP, type VARCHAR, name VARCHAR, channel VARCHAR)")
    duck.executemany("INSERT INTO events VALUES (?, make_timestamp(? * 1000), ?, ?, ?)", rows)
    duck_where = retention.expired_where(NOW, lambda column: "epoch_ms(ts)" if column == "ts_ms" else column)
    assert duck_where is not None
    found = {seq for (seq,) in duck.execute(f"SELECT seq FROM events WHERE {duck_where[0]}", duck_where[1]).fetchall()}
    assert found == expected
